"""Fine-tuning on the synthetic dataset with the demo's encoder (quarter-width ResNet-18, 64x64).

    python -m otcxr_jax.main --config configs/finetune_synthetic.py \
        --workdir workdirs/finetune_synthetic_10pct
    # label fraction: --config.finetune.split=train_1pct (77 images) | train_10pct (800) | train
    # random-init floor: --config.finetune.init=random

Starts from the latest checkpoint of workdirs/demo/checkpoints/pretrain (run configs/demo.py
first; `model.*` are the demo's, so change them together with `finetune.checkpoint_dir` to start
from another run). AdamW with peak learning rates 5e-4 (encoder) and 5e-3 (head), 20 warm-up
steps then cosine decay over 400 steps of batch 64; validation mean AUC every 50 steps, stopping
after 4 evaluations without improvement.
"""

from configs import demo


def get_config():
  c = demo.get_config()
  c.mode = "finetune"
  f = c.finetune
  f.split = "train_10pct"
  f.init = "pretrained"
  f.checkpoint_dir = "workdirs/demo/checkpoints/pretrain"
  f.batch_size = 64
  f.num_steps = 400
  f.optimizer = "adamw"
  f.encoder_learning_rate = 5e-4
  f.head_learning_rate = 5e-3
  f.weight_decay = 0.05
  f.warmup_steps = 20
  f.eval_every = 50
  f.patience = 4
  c.train.log_every = 25
  c.train.checkpoint_every = 100
  return c
