"""Fine-tuning on 10% of the RSNA Pneumonia training labels (paper: AUC 0.823).

    python -m otcxr_jax.main --config configs/finetune_rsna_10pct.py \
        --workdir workdirs/finetune_rsna_10pct \
        --config.finetune.checkpoint_dir=workdirs/pretrain_nih/checkpoints/pretrain

Transfer of the NIH-pretrained encoder to RSNA Pneumonia with configs/finetune_nih_10pct.py's
protocol (ResNet-50, 224x224, LP-FT: 100 linear-probe epochs, then 50 fine-tuning epochs at
1e-5 / 1e-4, validation every epoch, early stopping after 10 evaluations without improvement).
Needs `rsna_pneumonia/224` built (configs/build_rsna_pneumonia.py). `train_10pct` holds about
1,900 images (10% of the seeded 70% training split of 26,684), 30 steps of 64 per epoch.
"""

from configs import finetune_nih_10pct


def get_config():
  c = finetune_nih_10pct.get_config()
  c.data.name = "rsna_pneumonia"
  return c
