"""Fine-tuning on 10% of the VinBig-CXR training labels (paper: mean AUC 0.895).

    python -m otcxr_jax.main --config configs/finetune_vinbig_10pct.py \
        --workdir workdirs/finetune_vinbig_10pct \
        --config.finetune.checkpoint_dir=workdirs/pretrain_nih/checkpoints/pretrain

Transfer of the NIH-pretrained encoder to VinBig-CXR's 14 findings, union-of-readers labels, with
configs/finetune_nih_10pct.py's protocol (ResNet-50, 224x224, LP-FT: 100 linear-probe epochs,
then 50 fine-tuning epochs at 1e-5 / 1e-4, validation every epoch, early stopping after 10
evaluations without improvement). Needs `vinbig_cxr/224` built (configs/build_vinbig_cxr.py).
`train_10pct` holds about 1,050 images (10% of the seeded 70% training split of 15,000), 16 steps
of 64 per epoch.
"""

from configs import finetune_nih_10pct


def get_config():
  c = finetune_nih_10pct.get_config()
  c.data.name = "vinbig_cxr"
  return c
