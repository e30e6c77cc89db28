"""BYOL (Grill et al., NeurIPS 2020, arXiv 2006.07733): pooled features -> projector -> predictor,
regressed onto an EMA target encoder and projector's projection of the other view
(``objectives/byol.byol_loss``); the target moves after every step by :func:`target_decay`
(``config.byol``)."""

from __future__ import annotations

import functools

import ml_collections

from otcxr_jax.methods import common
from otcxr_jax.models import factory
from otcxr_jax.objectives import byol
from otcxr_jax.training import state as state_lib


def make_loss_fn(config: ml_collections.ConfigDict) -> state_lib.LossFn:
  """``loss_fn(model, batch, rng)``: each view's prediction against the target's projection of
  the other view (BYOL's loss has no hyperparameter)."""
  return common.two_view_loss_fn(
      config, lambda out, views: byol.byol_loss(out.p_s, out.p_t, out.z_s_target, out.z_t_target))


def target_decay(config: ml_collections.ConfigDict) -> state_lib.TargetDecay:
  """``τ(k) = byol.byol_tau(k, train.num_steps, byol.base_tau)``."""
  return functools.partial(byol.byol_tau, total_steps=config.train.num_steps,
                           base_tau=config.byol.base_tau)


METHOD = common.Method(
    "byol", build_model=functools.partial(factory.siamese_model, predictor=True, ema_target=True),
    make_loss_fn=make_loss_fn, target_decay=target_decay)
