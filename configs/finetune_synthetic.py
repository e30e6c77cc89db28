"""Fine-tuning on the synthetic dataset with the demo's encoder (quarter-width ResNet-18, 64x64).

    python -m otcxr_jax.main --config configs/finetune_synthetic.py \
        --workdir workdirs/finetune_synthetic_10pct
    # label fraction: --config.finetune.split=train_1pct (77 images) | train_10pct (800) | train
    # random-init floor: --config.finetune.init=random

Starts from the latest checkpoint of workdirs/demo/checkpoints/pretrain (run configs/demo.py
first; `model.*` are the demo's, so change them together with `finetune.checkpoint_dir` to start
from another run). The LP-FT protocol of modes/finetune.py with config_lib's defaults: the head on
the frozen standardised features for 100 epochs (the demo's linear-probe learning rate 3e-3,
batch 256, weight decay chosen on validation), then the whole network for 50 epochs of batch 64
(13 steps per epoch at 10%), AdamW at 1e-5 (encoder) and 1e-4 (head), validation mean AUC every
epoch, early stopping after 10 evaluations without improvement. Supervised training from scratch
on every label: configs/finetune_synthetic_supervised.py.
"""

from configs import demo


def get_config():
  c = demo.get_config()
  c.mode = "finetune"
  c.finetune.checkpoint_dir = "workdirs/demo/checkpoints/pretrain"
  c.train.log_every = 25
  c.train.checkpoint_every = 100
  return c
