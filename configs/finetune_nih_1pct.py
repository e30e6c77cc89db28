"""Fine-tuning on 1% of the NIH ChestX-ray14 training labels (paper: mean AUC 0.688).

    python -m otcxr_jax.main --config configs/finetune_nih_1pct.py \
        --workdir workdirs/finetune_nih_1pct \
        --config.finetune.checkpoint_dir=workdirs/pretrain_nih/checkpoints/pretrain

As configs/finetune_nih_10pct.py (model, optimiser, learning rates, augmentation), on the nested
1% of the training patients (`train_1pct`, about 750 images, 12 steps per epoch): 2,000 steps
(about 170 epochs), 100 warm-up steps, validation every 100 steps, early stopping after 5
evaluations without improvement.
"""

from configs import finetune_nih_10pct


def get_config():
  c = finetune_nih_10pct.get_config()
  f = c.finetune
  f.split = "train_1pct"
  f.num_steps = 2000
  f.warmup_steps = 100
  f.eval_every = 100
  return c
