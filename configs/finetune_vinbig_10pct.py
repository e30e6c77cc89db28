"""Fine-tuning on 10% of the VinBig-CXR training labels (paper: mean AUC 0.895).

    python -m otcxr_jax.main --config configs/finetune_vinbig_10pct.py \
        --workdir workdirs/finetune_vinbig_10pct \
        --config.finetune.checkpoint_dir=workdirs/pretrain_nih/checkpoints/pretrain

Transfer of the NIH-pretrained encoder (as configs/finetune_nih_10pct.py: ResNet-50, 224x224,
AdamW 1e-4 / 1e-3, batch 64, same augmentation) to VinBig-CXR's 14 findings, union-of-readers
labels. Needs `vinbig_cxr/224` built (configs/build_vinbig_cxr.py). `train_10pct` holds about
1,050 images (10% of the seeded 70% training split of 15,000): 3,000 steps (about 180 epochs),
150 warm-up steps, validation every 150 steps, early stopping after 5 evaluations without
improvement.
"""

from configs import finetune_nih_10pct


def get_config():
  c = finetune_nih_10pct.get_config()
  c.data.name = "vinbig_cxr"
  f = c.finetune
  f.num_steps = 3000
  f.warmup_steps = 150
  f.eval_every = 150
  return c
