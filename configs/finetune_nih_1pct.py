"""Fine-tuning on 1% of the NIH ChestX-ray14 training labels (paper: mean AUC 0.688).

    python -m otcxr_jax.main --config configs/finetune_nih_1pct.py \
        --workdir workdirs/finetune_nih_1pct \
        --config.finetune.checkpoint_dir=workdirs/pretrain_nih/checkpoints/pretrain

As configs/finetune_nih_10pct.py (model, LP-FT protocol, learning rates, augmentation), on the
nested 1% of the training patients (`train_1pct`, about 750 images, 12 steps of 64 per epoch):
100 fine-tuning epochs, the validation split (far larger than the training images) scored every
5 epochs, early stopping after 4 evaluations (20 epochs) without improvement.
"""

from configs import finetune_nih_10pct


def get_config():
  c = finetune_nih_10pct.get_config()
  f = c.finetune
  f.split = "train_1pct"
  f.num_epochs = 100.0
  f.eval_every_epochs = 5.0
  f.patience = 4
  return c
