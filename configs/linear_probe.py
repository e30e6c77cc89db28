r"""Linear probe of a pretrained encoder: frozen features, a linear head, per-class AUC.

    python -m otcxr_jax.main --config configs/linear_probe.py:dataset=synthetic  # after the demo
    python -m otcxr_jax.main --config configs/linear_probe.py:dataset=nih
    # the paper's mean AUC: nih 0.638, vinbig 0.739, rsna 0.814 (AUC)
    # random-init floor (the same network at its initialisation): --config.probe.init=random
    # raw-pixel floor (images downsampled to probe.pixel_floor_size, 16): --config.probe.init=pixels

The encoder is the pretraining run's (``probe.checkpoint_dir``: ``workdirs/demo`` for the synthetic
dataset, ``workdirs/pretrain_nih``, configs/pretrain_nih.py, for the real ones), rebuilt from its
``config.json``. Frozen encoder, global-average-pooled features of the whole image, whitened
with the training split's statistics; a linear head per L2 strength ("weight decay") of
``probe.weight_decays`` (1e-5 ... 1e-2) trained with Adam (5% warm-up, cosine) on binary
cross-entropy plus that L2 penalty (scikit-learn's logistic regression with C = 1/(strength * N))
on all training labels; the strength of best validation mean AUC is kept and the test split
scored once.

* ``synthetic``: the demo's dataset and probe (600 steps of batch 256, peak 3e-2).
* ``nih``: `nih_chest_xray14/224` (configs/build.py:dataset=nih), 14 findings, about 77,900
  training images: 5,000 steps of batch 256 (about 16 epochs), peak 1e-2; the official test list.
* ``vinbig``: `vinbig_cxr/224`, 14 findings, union-of-readers labels, the seeded 70/15/15 split of
  the 15,000 labelled images (about 10,500 for training); 2,000 steps (about 50 epochs).
* ``rsna``: `rsna_pneumonia/224`, one label (lung opacity), the seeded patient-level 70/15/15
  split of 26,684 images (about 18,700 for training); 2,000 steps (about 27 epochs).
"""

from configs import common

VARIANTS = ("dataset=synthetic", "dataset=nih", "dataset=vinbig", "dataset=rsna")
NUM_STEPS = {"nih": 5000, "vinbig": 2000, "rsna": 2000}  # synthetic: the demo's


def get_config(arg=None):
  arg = common.parse_arg(arg, "configs/linear_probe.py",
                         dataset=("synthetic", "nih", "vinbig", "rsna"))
  c = common.evaluation_config("linear_probe", arg.dataset)
  c.probe.checkpoint_dir = common.PRETRAINING[arg.dataset]
  if arg.dataset in NUM_STEPS:
    c.probe.num_steps = NUM_STEPS[arg.dataset]
  return c
