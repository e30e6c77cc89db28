"""Pretraining: OTCXR (two augmented views -> shared encoder -> projector -> CV-SIM -> OT loss), or
one of the baselines ``config.method`` names (assembled in ``modes/pretrain_methods.py``).

:func:`build_model` is the one place a pretraining network is built from a config: the train loop
and every evaluation that restores a pretraining checkpoint (``evaluation/checkpoints.py``) call
it, so a checkpoint of any method is read back into the same structure.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
from etils import epath
from flax import nnx

from otcxr_jax import config_lib
from otcxr_jax import models
from otcxr_jax.data import augment, datasets
from otcxr_jax.data import pipeline
from otcxr_jax.modes import pretrain_methods
from otcxr_jax.objectives import otcxr as otcxr_objective
from otcxr_jax.training import loop, optim
from otcxr_jax.training import workdir as workdir_lib
from otcxr_jax.training.distributed import print0

RUN_NAME = "pretrain"


def compute_dtype(config: ml_collections.ConfigDict):
  return jnp.bfloat16 if config.train.compute_dtype == "bfloat16" else jnp.float32


def build_encoder(config: ml_collections.ConfigDict, rngs: nnx.Rngs):
  """The encoder the config describes (shared by pretraining and every evaluation)."""
  m = config.model
  kwargs = dict(in_channels=m.in_channels, dtype=compute_dtype(config), rngs=rngs)
  if m.encoder.startswith("resnet"):
    kwargs.update(width=m.width, stem=m.stem, stem_stride=config_lib.stem_stride(m),
                  num_stages=m.num_stages, norm=m.norm, norm_groups=m.norm_groups)
  else:
    kwargs.update(image_size=config.data.image_size)
  return models.build_encoder(m.encoder, **kwargs)


def build_model(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> nnx.Module:
  """The pretraining network of ``config.method`` (an ``OTCXRModel`` for OTCXR); its encoder is
  the same for every method (built first, from the same ``rngs``)."""
  m = config.model
  encoder = build_encoder(config, rngs)
  if config.method != "otcxr":
    return pretrain_methods.build_model(config, encoder, compute_dtype(config), rngs)
  channels = (encoder.num_features if m.dense_stage == "dense"
              else encoder.stage_channels[m.dense_stage])
  dtype = compute_dtype(config)
  projector = models.DenseProjector(channels, m.projector_hidden, m.projector_dim,
                                    num_layers=m.projector_layers, dtype=dtype, rngs=rngs)
  cvsim = (models.CVSIM(m.projector_dim, num_heads=m.cvsim_heads, mlp_ratio=m.cvsim_mlp_ratio,
                        dtype=dtype, rngs=rngs) if m.cvsim else None)
  return models.OTCXRModel(encoder, projector, cvsim, dense_stage=m.dense_stage)


def view_location_cost(views: augment.Views, grid: tuple[int, int]) -> jax.Array:
  """(B, N, N) squared source-image distances between the two views' cells (in cell sizes)."""
  side = lambda box: jnp.sqrt((box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1]))
  cell = 0.5 * (side(views.box_s) + side(views.box_t)) / max(grid)
  return otcxr_objective.location_cost(*pretrain_methods.view_positions(views, grid), cell)


def pretraining_loss(model: models.OTCXRModel, images: jax.Array, rng: jax.Array,
                     aug: augment.AugmentConfig, objective: dict, *,
                     return_attention: bool = False):
  """Augments ``images`` (float in [0, 1]) into two views and returns ``(loss, aux, views, out)``."""
  views = augment.two_views(rng, images, aug)
  out = model(views.view_s, views.view_t, return_attention=return_attention)
  location_mse = objective["alignment"] == "location_mse"
  location = (view_location_cost(views, out.grid)
              if objective["location_weight"] and not location_mse else None)
  positions = pretrain_methods.view_positions(views, out.grid) if location_mse else None
  loss, aux = otcxr_objective.otcxr_loss(out.q_s, out.q_t, location=location,
                                         positions=positions, **objective)
  return loss, aux, views, out


def make_loss_fn(config: ml_collections.ConfigDict):
  """``loss_fn(model, batch, rng)``: augment on device, encode both views, the method's loss."""
  if config.method != "otcxr":
    return pretrain_methods.make_loss_fn(config)
  aug = config_lib.augment_config(config)
  objective = dataclasses.asdict(config_lib.objective_config(config))

  def loss_fn(model: models.OTCXRModel, batch, rng):
    images = batch["image"].astype(jnp.float32) / 255.0
    loss, aux, _, _ = pretraining_loss(model, images, rng, aug, objective)
    return loss, {k: v for k, v in aux.items() if k != otcxr_objective.PLAN_KEY}

  return loss_fn


def make_optimizer(config: ml_collections.ConfigDict):
  o = config.optim
  schedule = optim.make_schedule(
      peak=optim.peak_learning_rate(o.base_learning_rate, config.train.batch_size),
      total_steps=config.train.num_steps, warmup_steps=o.warmup_steps)
  tx = optim.make_optimizer(o.name, schedule=schedule, weight_decay=o.weight_decay,
                            momentum=o.momentum, b1=o.b1, b2=o.b2,
                            grad_clip_norm=o.grad_clip_norm)
  return tx, schedule


def loop_config(config: ml_collections.ConfigDict) -> loop.LoopConfig:
  t = config.train
  return loop.LoopConfig(num_steps=t.num_steps, log_every=t.log_every,
                         checkpoint_every=t.checkpoint_every, max_to_keep=t.keep_checkpoints,
                         tensorboard=t.tensorboard, on_nonfinite=t.on_nonfinite)


def save_config(config: ml_collections.ConfigDict, workdir) -> epath.Path:
  """Records the run's config next to its checkpoints (evaluations rebuild the model from it); a
  rerun is compared with it first (``training/workdir.py``). Returns the record's path."""
  return workdir_lib.save_config(config, workdir)


@workdir_lib.guarded
def run(config: ml_collections.ConfigDict, workdir: str) -> loop.LoopResult:
  save_config(config, workdir)
  source = datasets.split_source(config, config.data.train_split)
  batches = pipeline.train_iterator(
      source, global_batch_size=config.train.batch_size, seed=config.seed,
      transform=pipeline.select_keys(["image"]), process_index=jax.process_index(),
      process_count=jax.process_count(), num_threads=config.data.num_threads)
  tx, schedule = make_optimizer(config)
  model = build_model(config, nnx.Rngs(config.seed))
  print0(f"[{RUN_NAME}] {config.method}, {config.model.encoder} "
         f"({models.count_params(model.encoder):,} encoder parameters), {len(source):,} training "
         f"images, batch {config.train.batch_size}, {config.train.num_steps} steps on "
         f"{jax.device_count()} device(s)")
  rng = jax.random.key_data(jax.random.key(config.seed + 1))
  return loop.run(name=RUN_NAME, workdir=workdir, model=model, loss_fn=make_loss_fn(config),
                  tx=tx, batches=batches, global_batch_size=config.train.batch_size,
                  config=loop_config(config), rng=rng, schedule=schedule,
                  target_decay=pretrain_methods.target_decay(config))
