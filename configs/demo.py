"""The synthetic demo: OTCXR on 64x64 synthetic chest X-rays, in minutes on a laptop CPU.

    python -m otcxr_jax.main --config configs/demo.py --workdir workdirs/demo

Builds `synthetic_cxr/64` if absent, pretrains a quarter-width ResNet-18 (small stem, 4x4 dense
map), linear-probes it against the same encoder at random init and raw pixels, and writes
workdirs/demo/report.md.
"""

from otcxr_jax import config_lib


def get_config():
  c = config_lib.base_config()
  c.mode = "demo"
  c.seed = 0

  c.data.name = "synthetic_cxr"
  c.data.config = "64"
  c.data.image_size = 64

  # Findings in chest X-rays are intensity patterns: mild photometric jitter, no blur.
  c.augment.crop_scale = (0.5, 1.0)
  c.augment.brightness = 0.05
  c.augment.contrast = 0.05
  c.augment.gamma = (0.95, 1.05)
  c.augment.blur_prob = 0.0
  c.augment.noise_std = (0.0, 0.01)

  c.model.encoder = "resnet18"
  c.model.width = 0.25
  c.model.stem = "small"
  c.model.stem_stride = 2
  # GroupNorm: no batch statistics, so the random-init baseline is the same function in training
  # and evaluation (with BatchNorm, eval at init skips normalisation altogether; docs/results.md).
  c.model.norm = "group"
  c.model.norm_groups = 8
  c.model.dense_stage = "dense"        # 4x4 map at 64x64 (stride 16)
  c.model.projector_hidden = 512
  c.model.projector_dim = 128
  c.model.cvsim_heads = 4

  c.objective.num_iters = 30
  c.objective.location_weight = 0.2

  c.optim.name = "adamw"
  c.optim.base_learning_rate = 2e-3    # peak 1e-3 at batch 128
  c.optim.weight_decay = 0.05
  c.optim.warmup_steps = 30

  c.train.batch_size = 128
  c.train.num_steps = 300
  c.train.log_every = 25
  c.train.checkpoint_every = 100

  c.probe.batch_size = 256
  c.probe.num_steps = 600
  c.probe.learning_rate = 3e-3
  return c
