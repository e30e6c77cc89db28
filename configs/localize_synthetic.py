"""Localisation on the synthetic dataset's boxes (focal findings), test split.

    python -m otcxr_jax.main --config configs/localize_synthetic.py \
        --workdir workdirs/localize_synthetic \
        --config.localize.classifier_workdir=workdirs/finetune_synthetic

Class activation maps of a fine-tuning run's classifier (configs/finetune_synthetic.py), and the
CV-SIM attention and transport-cost maps of the demo's pretraining network (the latest checkpoint
of workdirs/demo/checkpoints/pretrain; `model.*` and `objective.*` are the demo's, so change them
together with `localize.checkpoint_dir` to read another run).
The floors: a classifier fine-tuned from random init (`--config.localize.classifier_workdir=` a
`finetune.init=random` run) and the pretraining network at its initialisation
(`--config.localize.init=random`). Heatmaps (4x4 at 64x64) are upsampled to 64x64; IoU uses the
region at half the min-max normalised map's range.
"""

from configs import demo


def get_config():
  c = demo.get_config()
  c.mode = "localize"
  l = c.localize
  l.methods = ("cam", "attention", "transport")
  l.classifier_workdir = "workdirs/finetune_synthetic"
  l.init = "pretrained"
  l.checkpoint_dir = "workdirs/demo/checkpoints/pretrain"
  l.threshold_mode = "fraction_of_max"
  l.threshold = 0.5
  l.batch_size = 64
  l.num_examples = 8
  return c
