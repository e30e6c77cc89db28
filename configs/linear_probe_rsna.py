"""Linear probe of the NIH-pretrained encoder on RSNA Pneumonia (paper: AUC 0.814).

    python -m otcxr_jax.main --config configs/linear_probe_rsna.py \
        --workdir workdirs/linear_probe_rsna

As configs/linear_probe_nih.py (frozen encoder of configs/pretrain_nih.py, pooled features, linear
heads over a weight-decay grid chosen on validation), on `rsna_pneumonia/224` (build it with
configs/build_rsna_pneumonia.py): one label (lung opacity), the seeded patient-level 70/15/15
split of the 26,684 training images (about 18,700 for training); 2,000 steps of batch 256 (about
27 epochs).
"""

from configs import linear_probe_nih


def get_config():
  c = linear_probe_nih.get_config()
  c.data.name = "rsna_pneumonia"
  c.probe.num_steps = 2000
  return c
