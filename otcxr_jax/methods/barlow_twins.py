"""Barlow Twins (Zbontar et al., ICML 2021, arXiv 2103.03230): pooled features -> projector; the
two views' cross-correlation matrix pulled towards the identity
(``objectives/barlow_twins.barlow_twins_loss``, hyperparameters in ``config.barlow_twins``)."""

from __future__ import annotations

import dataclasses

import ml_collections

from otcxr_jax import config_lib
from otcxr_jax.methods import common
from otcxr_jax.models import factory
from otcxr_jax.objectives import barlow_twins
from otcxr_jax.training import state as state_lib


def make_loss_fn(config: ml_collections.ConfigDict) -> state_lib.LossFn:
  """``loss_fn(model, batch, rng)``: Barlow Twins' loss of the two views' projections."""
  kwargs = dataclasses.asdict(config_lib.method_config(config, "barlow_twins"))
  return common.two_view_loss_fn(
      config, lambda out, views: barlow_twins.barlow_twins_loss(out.z_s, out.z_t, **kwargs))


METHOD = common.Method("barlow_twins", build_model=factory.siamese_model,
                       make_loss_fn=make_loss_fn)
