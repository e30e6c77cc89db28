"""A tiny version of the demo config for end-to-end tests (seconds, not minutes)."""

from configs import demo


def tiny_config(data_dir, *, mode: str = "pretrain"):
  c = demo.get_config()
  c.mode = mode
  c.data.data_dir = str(data_dir)
  c.data.config = "32"
  c.data.image_size = 32
  c.data.synthetic_patients = 16
  c.model.width = 0.125
  # The small stem of stride 2 and three stages: a 4x4 map at 32x32 for the tiny tests, whatever
  # network the demo uses, and a segmentation decoder of three levels.
  c.model.stem = "small"
  c.model.stem_stride = 2
  c.model.num_stages = 3
  c.model.projector_hidden = 32
  c.model.projector_dim = 16
  c.model.cvsim_heads = 2
  c.objective.num_iters = 5
  c.train.batch_size = 8
  c.train.num_steps = 2
  c.train.log_every = 1
  c.train.checkpoint_every = 1
  c.train.tensorboard = False
  c.optim.warmup_steps = 1
  c.probe.batch_size = 8
  c.probe.num_steps = 4
  c.probe.weight_decays = (1e-3,)
  c.probe.train_examples = 0  # every training image of the tiny cohort
  c.probe.pixel_floor_size = 4
  c.finetune.linear_probe_epochs = 5.0
  c.report.num_correspondences = 3
  return c
