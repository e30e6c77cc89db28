"""Segmentation transfer on the synthetic chest X-rays' pneumothorax masks (run configs/demo.py
first for the pretrained encoder).

    python -m otcxr_jax.main --config configs/segment_synthetic.py \
        --workdir workdirs/segment_synthetic

The demo's encoder (quarter-width ResNet-18, ImageNet stem and three stages: maps at strides 2,
4, 8, 16 of the 64x64 image) from the latest checkpoint of workdirs/demo/checkpoints/pretrain, a
U-Net decoder with levels at strides 8, 4, 2 and 1, trained on the demo's data (about 5% of its
images show a pneumothorax, a thin crescent of about 4% of the image). The random-init floor:
`--config.probe.init=random` (use another workdir).

400 steps of batch 32 (1.6 epochs) take a few minutes on a laptop CPU. The learning rates are
high for fine-tuning (encoder 1e-3, decoder 5e-3) because the run is short: with 3e-4 / 2e-3 the
model still predicted no lesion at all after 200 steps.

Model selection is on the validation Dice of the positive images: with 95% empty masks, the Dice
over all images rewards predicting nothing (an empty prediction scores 1 on an empty mask) and
barely moves while the model learns to find the rare lesions. Both Dice values are reported.
"""

from configs import demo


def get_config():
  c = demo.get_config()
  c.mode = "segment"
  c.probe.init = "pretrained"
  c.probe.checkpoint_dir = "workdirs/demo/checkpoints/pretrain"

  s = c.segment
  s.split = "train"
  s.batch_size = 32
  s.num_steps = 400
  s.encoder_learning_rate = 1e-3
  s.decoder_learning_rate = 5e-3
  s.weight_decay = 1e-4
  s.warmup_steps = 30
  s.dice_weight = 1.0
  s.threshold = 0.5
  s.eval_every = 100
  s.patience = 3
  s.selection_metric = "dice_positive"
  s.decoder_channels = (64, 32, 16, 16)   # strides 8, 4, 2, 1
  s.crop_scale = (0.7, 1.0)
  s.rotation_deg = 5.0
  s.brightness = 0.05
  s.contrast = 0.05

  c.train.log_every = 50
  c.train.checkpoint_every = 200
  return c
