"""Linear probe of the NIH-pretrained encoder on VinBig-CXR (paper: mean AUC 0.739).

    python -m otcxr_jax.main --config configs/linear_probe_vinbig.py \
        --workdir workdirs/linear_probe_vinbig

As configs/linear_probe_nih.py (frozen encoder of configs/pretrain_nih.py, pooled features, linear
heads over a weight-decay grid chosen on validation), on `vinbig_cxr/224` (build it with
configs/build_vinbig_cxr.py): 14 findings, union-of-readers labels, the seeded 70/15/15 split of
the 15,000 labelled images (about 10,500 for training); 2,000 steps of batch 256 (about 50
epochs).
"""

from configs import linear_probe_nih


def get_config():
  c = linear_probe_nih.get_config()
  c.data.name = "vinbig_cxr"
  c.probe.num_steps = 2000
  return c
