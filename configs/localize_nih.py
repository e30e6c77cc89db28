"""Localisation on NIH ChestX-ray14's radiologist boxes (`BBox_List_2017.csv`: 984 boxes of 8
findings on 880 images); the paper shows heatmaps but reports no localisation number.

    python -m otcxr_jax.main --config configs/localize_nih.py --workdir workdirs/localize_nih
    # floors: --config.localize.classifier_workdir=<a finetune.init=random run> and
    #         --config.localize.init=random

Needs `nih_chest_xray14/224` built, the pretraining run of configs/pretrain_nih.py (whose fields
this config starts from) and the fine-tuning run of configs/finetune_nih_10pct.py. Scored on the
boxed images of the official test list (`data.test_split`):

* `cam`: class activation maps of the fine-tuned classifier (7x7 for ResNet-50 at 224x224), for
  the class of each box;
* `attention`: CV-SIM attention received, identity views; `transport`: each position's mean
  transport cost to 16 normal training images (no finding), with the pretraining objective's OT;
* maps upsampled bilinearly to 224x224; pointing game, and IoU of the region at half the min-max
  normalised map's range (`threshold_mode='fraction_of_max'`, `threshold=0.5`); `top_fraction`
  regions are the alternative.
"""

from configs import pretrain_nih


def get_config():
  c = pretrain_nih.get_config()
  c.mode = "localize"
  c.data.test_split = "test"
  l = c.localize
  l.methods = ("cam", "attention", "transport")
  l.classifier_workdir = "workdirs/finetune_nih_10pct"
  l.init = "pretrained"
  l.checkpoint_dir = "workdirs/pretrain_nih/checkpoints/pretrain"
  l.num_references = 16
  l.threshold_mode = "fraction_of_max"
  l.threshold = 0.5
  l.batch_size = 32
  l.num_examples = 8
  return c
