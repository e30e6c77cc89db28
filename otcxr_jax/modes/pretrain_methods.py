"""Model, loss and target schedule of the baseline pretraining methods (``config.method``).

``pretrain.py`` keeps OTCXR's own path and dispatches every other method here. All methods share
the encoder (``pretrain.build_encoder``, built first from the same ``rngs`` so that every method
starts from the same encoder weights), the on-device two-view augmentation
(``config.augment``), the optimiser, the train loop and the projector sizes (``config.model``).
The network (:class:`~otcxr_jax.models.siamese.SiameseModel`) and the loss of each method:

* ``simclr``: pooled features -> projector; ``simclr.nt_xent_loss``;
* ``byol``: + predictor, EMA target encoder and projector; ``byol.byol_loss``, the target moved by
  :func:`target_decay` after every step;
* ``barlow_twins``: pooled features -> projector; ``barlow_twins.barlow_twins_loss``;
* ``vicreg``: pooled features -> projector; ``vicreg.vicreg_loss``;
* ``vicregl``: + position-wise projector of the dense map; ``vicregl.vicregl_loss``.

Hyperparameters come from ``config.<method>`` (``config_lib.method_config``). VICRegL matches
cells by their positions in the source image, computed from the views' crop boxes
(:func:`view_positions`).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from otcxr_jax import config_lib
from otcxr_jax.data import augment
from otcxr_jax.models.common import Encoder
from otcxr_jax.models.heads import DenseProjector
from otcxr_jax.models.siamese import SiameseModel
from otcxr_jax.objectives import baselines, byol
from otcxr_jax.training import state as state_lib

BASELINE_METHODS = tuple(baselines.BASELINES)


def _check_method(config: ml_collections.ConfigDict) -> str:
  if config.method not in BASELINE_METHODS:
    raise ValueError(f"config.method={config.method!r}: expected one of {BASELINE_METHODS} "
                     f"(OTCXR is built by modes/pretrain.py).")
  return config.method


def dense_grid(config: ml_collections.ConfigDict) -> tuple[int, int]:
  """``(h, w)`` of the dense map ``model.dense_stage`` at ``data.image_size`` (no allocation)."""
  from otcxr_jax.modes import pretrain  # pretrain imports this module
  encoder = nnx.eval_shape(lambda: pretrain.build_encoder(config, nnx.Rngs(0)))
  stage = config.model.dense_stage
  stride = (max(encoder.stage_strides.values()) if stage == "dense"
            else encoder.stage_strides[stage])
  side = math.ceil(config.data.image_size / stride)
  return side, side


def build_model(config: ml_collections.ConfigDict, encoder: Encoder, dtype,
                rngs: nnx.Rngs) -> SiameseModel:
  """The two-view network of ``config.method`` around ``encoder``."""
  method = _check_method(config)
  m = config.model
  mlp = functools.partial(DenseProjector, hidden_dim=m.projector_hidden,
                          out_dim=m.projector_dim, num_layers=m.projector_layers, dtype=dtype,
                          rngs=rngs)
  projector = mlp(encoder.num_features)
  predictor = mlp(m.projector_dim) if method == "byol" else None
  local = None
  if method == "vicregl":
    channels = (encoder.num_features if m.dense_stage == "dense"
                else encoder.stage_channels[m.dense_stage])
    local = mlp(channels)
  return SiameseModel(encoder, projector, predictor=predictor, ema_target=method == "byol",
                      local_projector=local, dense_stage=m.dense_stage)


def view_positions(views: augment.Views, grid: tuple[int, int]) -> tuple[jax.Array, jax.Array]:
  """``(pos_s, pos_t)``: ``(B, h*w, 2)`` source-image positions of both views' grid cells."""
  batch = views.box_s.shape[0]
  pos_s = augment.positions_in_source(views.box_s, views.angle_s, grid, flip=views.flip_s)
  pos_t = augment.positions_in_source(views.box_t, views.angle_t, grid, flip=views.flip_t)
  return pos_s.reshape(batch, -1, 2), pos_t.reshape(batch, -1, 2)


def make_loss_fn(config: ml_collections.ConfigDict) -> state_lib.LossFn:
  """``loss_fn(model, batch, rng)``: augment on device, both views through the network, loss."""
  method = _check_method(config)
  aug = config_lib.augment_config(config)
  hparams = config_lib.method_config(config)
  # The config's fields are the loss's keyword arguments, except BYOL's (its target schedule's).
  kwargs = {} if method == "byol" else dataclasses.asdict(hparams)
  loss = baselines.BASELINES[method].loss

  def loss_fn(model: SiameseModel, batch, rng):
    images = batch["image"].astype(jnp.float32) / 255.0
    views = augment.two_views(rng, images, aug)
    out = model(views.view_s, views.view_t)
    if method == "byol":
      value, metrics = loss(out.p_s, out.p_t, out.z_s_target, out.z_t_target)
    elif method == "vicregl":
      value, metrics = loss(out.z_s, out.z_t, out.maps_s, out.maps_t,
                            *view_positions(views, out.grid), **kwargs)
    else:
      value, metrics = loss(out.z_s, out.z_t, **kwargs)
    return value, metrics

  return loss_fn


def target_decay(config: ml_collections.ConfigDict) -> state_lib.TargetDecay | None:
  """BYOL's ``τ(k) = byol.byol_tau(k, train.num_steps, byol.base_tau)``; None for the others."""
  if config.method != "byol":
    return None
  return functools.partial(byol.byol_tau, total_steps=config.train.num_steps,
                           base_tau=config.byol.base_tau)

