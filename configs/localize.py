r"""Localisation: do the heatmaps point at the findings the dataset's boxes mark?

    python -m otcxr_jax.main --config configs/localize.py:dataset=synthetic
    python -m otcxr_jax.main --config configs/localize.py:dataset=nih
    # after the fine-tuning runs configs/finetune.py:dataset=synthetic (or
    # dataset=nih,fraction=10pct) whose classifiers CAM explains
    # floors: --config.localize.classifier_workdir=<a finetune.init=random run> and
    #         --config.localize.init=random (the pretraining network at its initialisation)

Scored on the boxed images of the test split (``data.test_split``): the synthetic dataset's focal
findings, or NIH ChestX-ray14's radiologist boxes (``BBox_List_2017.csv``: 984 boxes of 8
findings on 880 images; the paper shows heatmaps but reports no localisation number).

* ``cam``: class activation maps of the fine-tuning run ``localize.classifier_workdir``
  (``workdirs/finetune_synthetic``, ``workdirs/finetune_nih_10pct``), for the class of each box
  (4x4 at 64x64 for the demo's encoder, 7x7 for ResNet-50 at 224x224);
* ``attention``: CV-SIM attention received, identity views; ``transport``: each position's mean
  transport cost to ``localize.num_references`` normal training images (no finding; 16 on NIH),
  with the pretraining objective's OT; both maps of the pretraining run ``localize.checkpoint_dir``
  names (``workdirs/demo``, ``workdirs/pretrain_nih``), whose ``config.json`` gives the network and
  the objective;
* maps upsampled bilinearly to the image size; pointing game, and IoU of the region at half the
  min-max normalised map's range (``threshold_mode='fraction_of_max'``, ``threshold=0.5``);
  ``top_fraction`` regions are the alternative.
"""

from configs import common

VARIANTS = ("dataset=synthetic", "dataset=nih")
CLASSIFIERS = {"synthetic": "workdirs/finetune_synthetic", "nih": "workdirs/finetune_nih_10pct"}


def get_config(arg=None):
  arg = common.parse_arg(arg, "configs/localize.py", dataset=tuple(CLASSIFIERS))
  c = common.evaluation_config("localize", arg.dataset)
  l = c.localize
  l.classifier_workdir = CLASSIFIERS[arg.dataset]
  l.checkpoint_dir = common.PRETRAINING[arg.dataset]
  if arg.dataset == "synthetic":
    l.batch_size = 64
  else:
    l.num_references = 16
  return c
