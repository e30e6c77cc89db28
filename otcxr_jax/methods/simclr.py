"""SimCLR (Chen et al., ICML 2020, arXiv 2002.05709): pooled features -> projector; NT-Xent between
the two views' projections (``objectives/simclr.nt_xent_loss``, hyperparameters in
``config.simclr``)."""

from __future__ import annotations

import dataclasses

import ml_collections

from otcxr_jax import config_lib
from otcxr_jax.methods import common
from otcxr_jax.models import factory
from otcxr_jax.objectives import simclr
from otcxr_jax.training import state as state_lib


def make_loss_fn(config: ml_collections.ConfigDict) -> state_lib.LossFn:
  """``loss_fn(model, batch, rng)``: NT-Xent of the two views' projections."""
  kwargs = dataclasses.asdict(config_lib.method_config(config, "simclr"))
  return common.two_view_loss_fn(
      config, lambda out, views: simclr.nt_xent_loss(out.z_s, out.z_t, **kwargs))


METHOD = common.Method("simclr", build_model=factory.siamese_model, make_loss_fn=make_loss_fn)
