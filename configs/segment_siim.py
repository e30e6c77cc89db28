"""SIIM-ACR pneumothorax segmentation transfer, the paper's setting (reported Dice 0.586).

    python -m otcxr_jax.main --config configs/segment_siim.py --workdir workdirs/segment_siim \
        --config.probe.checkpoint_dir=<pretraining workdir>/checkpoints/pretrain

Needs `siim_acr_pneumothorax/224` built first (`mode='build_dataset'`, see DATASETS.md) and a
pretraining run whose `model.*`, `optim.*` fields are this config's (the base config's ResNet-50
defaults); `--config.probe.init=random` gives the random-init floor.

The paper says only that a U-Net style decoder is trained on SIIM-ACR and Dice reported. Our
choices, each a field of `config.segment`:

* encoder: ResNet-50 (ImageNet stem) at 224x224, the paper-scale pretraining encoder; decoder
  levels at strides 16, 8, 4, 2, 1 with segmentation_models_pytorch's U-Net widths
  (256, 128, 64, 32, 16);
* data: the builder's seeded patient-disjoint 70/15/15 split of the 12,047 stage-1 training
  images (about 22% with a mask); training on the whole training split (`segment.split`);
* loss BCE + soft Dice (weight 1), the Dice pooled over the batch (most masks are empty);
* AdamW, encoder 1e-4 and decoder 1e-3 peak learning rates, weight decay 1e-4, 500 warm-up steps
  then cosine decay, batch 16, 20,000 steps (about 38 epochs of ~8,400 images);
* augmentation: random-resized crop of 70-100% of the area, rotation up to 5 degrees, brightness
  and contrast jitter of 0.1; image and mask move together;
* selection: validation Dice over all images (the SIIM-ACR challenge's metric, an empty
  prediction of an empty mask scoring 1) every 1,000 steps, early stopping after 5 evaluations
  without improvement; test evaluated once with the selected state. Dice on all images and on
  the positive images are reported, the prediction thresholded at probability 0.5.
"""

from otcxr_jax import config_lib


def get_config():
  c = config_lib.base_config()
  c.mode = "segment"
  c.seed = 0

  c.data.name = "siim_acr_pneumothorax"
  c.data.config = "224"
  c.data.image_size = 224

  c.model.encoder = "resnet50"
  c.model.stem = "imagenet"

  c.probe.init = "pretrained"
  c.probe.checkpoint_dir = ""          # '' = <workdir>/checkpoints/pretrain

  s = c.segment
  s.split = "train"
  s.batch_size = 16
  s.num_steps = 20_000
  s.encoder_learning_rate = 1e-4
  s.decoder_learning_rate = 1e-3
  s.weight_decay = 1e-4
  s.warmup_steps = 500
  s.dice_weight = 1.0
  s.threshold = 0.5
  s.eval_every = 1000
  s.patience = 5
  s.selection_metric = "dice_all"
  s.decoder_channels = (256, 128, 64, 32, 16)
  s.crop_scale = (0.7, 1.0)
  s.rotation_deg = 5.0
  s.brightness = 0.1
  s.contrast = 0.1

  c.train.log_every = 100
  c.train.checkpoint_every = 1000
  return c
