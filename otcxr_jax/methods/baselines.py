"""Loss and target schedule of the baseline pretraining methods (``config.method``).

``methods/otcxr.py`` holds OTCXR's; the networks are built by ``models/factory.py``. All methods
share the encoder (built first from the same ``rngs`` so that every method starts from the same
encoder weights), the on-device two-view augmentation
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
(``methods/views.view_positions``).
"""

from __future__ import annotations

import dataclasses
import functools

import jax.numpy as jnp
import ml_collections

from otcxr_jax import config_lib
from otcxr_jax.data import augment
from otcxr_jax.methods import views as views_lib
from otcxr_jax.models.siamese import SiameseModel
from otcxr_jax.objectives import baselines, byol
from otcxr_jax.training import state as state_lib

BASELINE_METHODS = tuple(baselines.BASELINES)


def _check_method(config: ml_collections.ConfigDict) -> str:
  if config.method not in BASELINE_METHODS:
    raise ValueError(f"config.method={config.method!r}: expected one of {BASELINE_METHODS} "
                     f"(OTCXR's is in methods/otcxr.py).")
  return config.method


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
                            *views_lib.view_positions(views, out.grid), **kwargs)
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

