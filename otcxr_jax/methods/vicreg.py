"""VICReg (Bardes et al., ICLR 2022, arXiv 2105.04906): pooled features -> projector; invariance,
variance and covariance terms of the two views' projections (``objectives/vicreg.vicreg_loss``,
hyperparameters in ``config.vicreg``)."""

from __future__ import annotations

import dataclasses

import ml_collections

from otcxr_jax import config_lib
from otcxr_jax.methods import common
from otcxr_jax.models import factory
from otcxr_jax.objectives import vicreg
from otcxr_jax.training import state as state_lib


def make_loss_fn(config: ml_collections.ConfigDict) -> state_lib.LossFn:
  """``loss_fn(model, batch, rng)``: VICReg's loss of the two views' projections."""
  kwargs = dataclasses.asdict(config_lib.method_config(config, "vicreg"))
  return common.two_view_loss_fn(
      config, lambda out, views: vicreg.vicreg_loss(out.z_s, out.z_t, **kwargs))


METHOD = common.Method("vicreg", build_model=factory.siamese_model, make_loss_fn=make_loss_fn)
