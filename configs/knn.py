r"""Weighted kNN evaluation of a pretrained encoder's frozen features.

    python -m otcxr_jax.main --config configs/knn.py:dataset=synthetic   # run configs/demo.py first
    # also dataset=nih | vinbig | rsna (configs/linear_probe.py's datasets and encoder)
    # random-init floor (the same network at its initialisation): --config.probe.init=random

The encoder of the pretraining run ``probe.checkpoint_dir`` names (``workdirs/demo`` for the
synthetic dataset, ``workdirs/pretrain_nih`` for the real ones), rebuilt from its ``config.json``.
The training split is the neighbour bank, similarity the cosine of pooled features whitened with the
bank's statistics (``knn.whiten``; ``False``: centred on the bank's mean only), DINO's weighted vote
(``knn.k`` = 20, ``knn.temperature`` = 0.07); see ``otcxr_jax/evaluation/knn.py``.
"""

from configs import common

VARIANTS = ("dataset=synthetic", "dataset=nih", "dataset=vinbig", "dataset=rsna")


def get_config(arg=None):
  arg = common.parse_arg(arg, "configs/knn.py", dataset=("synthetic", "nih", "vinbig", "rsna"))
  c = common.evaluation_config("knn", arg.dataset)
  c.probe.checkpoint_dir = common.PRETRAINING[arg.dataset]
  return c
