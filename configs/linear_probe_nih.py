"""Linear probe of the NIH-pretrained encoder on NIH ChestX-ray14 (paper: mean AUC 0.638).

    python -m otcxr_jax.main --config configs/linear_probe_nih.py \
        --workdir workdirs/linear_probe_nih
    # random-init floor: --config.probe.init=random

Needs `nih_chest_xray14/224` built and the pretraining run of configs/pretrain_nih.py (whose
fields this config starts from, so the checkpoint's model and optimiser match). Frozen encoder,
global-average-pooled features (2048) of the whole 224x224 image, standardised with the training
split's statistics; a linear head per weight decay in {1e-5, 1e-4, 1e-3, 1e-2} trained with
AdamW (peak 1e-2, 5% warm-up, cosine) and binary cross-entropy on all training labels (`train`,
about 77,900 images) for 5,000 steps of batch 256 (about 16 epochs); the weight decay of best
validation mean AUC is kept and the official test list scored once (mean over the 14 findings).
"""

from configs import pretrain_nih


def get_config():
  c = pretrain_nih.get_config()
  c.mode = "linear_probe"
  p = c.probe
  p.init = "pretrained"
  p.checkpoint_dir = "workdirs/pretrain_nih/checkpoints/pretrain"
  p.batch_size = 256
  p.num_steps = 5000
  p.learning_rate = 1e-2
  p.weight_decays = (1e-5, 1e-4, 1e-3, 1e-2)
  return c
