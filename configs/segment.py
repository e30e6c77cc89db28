r"""Segmentation transfer: the pretrained encoder and a U-Net decoder, Dice on all images and on the
positive images.

    python -m otcxr_jax.main --config configs/segment.py:dataset=synthetic  # after configs/demo.py
    python -m otcxr_jax.main --config configs/segment.py:dataset=siim       # paper: Dice 0.586
    # random-init floor (the same network at its initialisation): --config.probe.init=random

The encoder of the pretraining run ``probe.checkpoint_dir`` names (``workdirs/demo`` for the
synthetic dataset, ``workdirs/pretrain_nih``, configs/pretrain_nih.py, for SIIM-ACR), rebuilt from
its ``config.json``. The paper says only that a U-Net style decoder is trained on SIIM-ACR and Dice
reported; our choices, each a field of ``config.segment``:

* ``siim``: `siim_acr_pneumothorax/224` (configs/build.py:dataset=siim), the builder's seeded
  patient-disjoint 70/15/15 split of the 12,047 stage-1 training images (about 22% with a mask),
  training on the whole training split (``segment.split``). Decoder levels at strides 16, 8, 4,
  2, 1 of ResNet-50 with segmentation_models_pytorch's U-Net widths (256, 128, 64, 32, 16); loss
  BCE + soft Dice (weight 1), the Dice pooled over the batch (most masks are empty); AdamW,
  encoder 1e-4 and decoder 1e-3 peak learning rates, weight decay 1e-4, 500 warm-up steps then
  cosine decay, batch 16, 20,000 steps (about 38 epochs of ~8,400 images); random-resized crop of
  70-100% of the area, rotation up to 5 degrees, brightness and contrast jitter of 0.1 (image and
  mask move together); selection on validation Dice over all images (the SIIM-ACR challenge's
  metric, an empty prediction of an empty mask scoring 1) every 1,000 steps, early stopping after
  5 evaluations without improvement.
* ``synthetic``: the demo's encoder (quarter-width ResNet-18, ImageNet stem and three stages:
  maps at strides 2, 4, 8, 16 of the 64x64 image), decoder levels at strides 8, 4, 2 and 1, on the
  demo's data (about 5% of its images show a pneumothorax, a thin crescent of about 4% of the
  image). 400 steps of batch 32 (1.6 epochs) take a few minutes on a laptop CPU; the learning
  rates are high for fine-tuning (encoder 1e-3, decoder 5e-3) because the run is short: with
  3e-4 / 2e-3 the model still predicted no lesion at all after 200 steps. Selection on the
  validation Dice of the positive images: with 95% empty masks, the Dice over all images rewards
  predicting nothing and barely moves while the model learns to find the rare lesions.

The test split is evaluated once with the selected state; both Dice values are reported, the
prediction thresholded at probability 0.5.
"""

from configs import common

VARIANTS = ("dataset=synthetic", "dataset=siim")


def get_config(arg=None):
  arg = common.parse_arg(arg, "configs/segment.py", dataset=("synthetic", "siim"))
  c = common.evaluation_config("segment", arg.dataset)
  c.probe.checkpoint_dir = common.PRETRAINING[arg.dataset]
  s = c.segment
  if arg.dataset == "siim":
    s.num_steps = 20_000
    s.eval_every = 1000
    c.train.log_every = 100
  else:
    s.batch_size = 32
    s.num_steps = 400
    s.encoder_learning_rate = 1e-3
    s.decoder_learning_rate = 5e-3
    s.warmup_steps = 30
    s.eval_every = 100
    s.patience = 3
    s.selection_metric = "dice_positive"
    s.decoder_channels = (64, 32, 16, 16)  # strides 8, 4, 2, 1
    s.brightness = 0.05
    s.contrast = 0.05
    c.train.checkpoint_every = 200
  return c
