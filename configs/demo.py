"""The synthetic demo: OTCXR on 64x64 synthetic chest X-rays, in minutes on a laptop CPU.

    python -m otcxr_jax.main --config configs/demo.py --workdir workdirs/demo

Builds `synthetic_cxr/64` if absent, pretrains a half-width ResNet-18 (small stem), linear-probes
it against the same encoder at random init and raw pixels, and writes workdirs/demo/report.md.
"""

from otcxr_jax import config_lib


def get_config():
  c = config_lib.base_config()
  c.mode = "demo"
  c.seed = 0

  c.data.name = "synthetic_cxr"
  c.data.config = "64"
  c.data.image_size = 64

  c.augment.crop_scale = (0.35, 1.0)

  c.model.encoder = "resnet18"
  c.model.width = 0.5
  c.model.stem = "small"
  c.model.stem_stride = 2
  c.model.dense_stage = "stage3"       # 8x8 map at 64x64 (stride 8)
  c.model.projector_hidden = 512
  c.model.projector_dim = 128
  c.model.cvsim_heads = 4

  c.objective.num_iters = 30

  c.optim.name = "lars"
  c.optim.base_learning_rate = 0.3
  c.optim.weight_decay = 1e-6
  c.optim.warmup_steps = 100

  c.train.batch_size = 128
  c.train.num_steps = 1000
  c.train.log_every = 25
  c.train.checkpoint_every = 250

  c.probe.batch_size = 256
  c.probe.num_steps = 600
  c.probe.learning_rate = 3e-3
  return c
