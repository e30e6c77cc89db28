"""VICRegL (Bardes et al., NeurIPS 2022, arXiv 2210.01571): VICReg on the pooled features'
projections and on a position-wise projection of the dense map, whose cells are matched by their
positions in the source image (from the views' crop boxes, ``methods/views.view_positions``) and by their
features (``objectives/vicregl.vicregl_loss``, hyperparameters in ``config.vicregl``)."""

from __future__ import annotations

import dataclasses
import functools

import ml_collections

from otcxr_jax import config_lib
from otcxr_jax.methods import common
from otcxr_jax.methods import views as views_lib
from otcxr_jax.models import factory
from otcxr_jax.objectives import vicregl
from otcxr_jax.training import state as state_lib


def make_loss_fn(config: ml_collections.ConfigDict) -> state_lib.LossFn:
  """``loss_fn(model, batch, rng)``: VICRegL's global and local terms of the two views."""
  kwargs = dataclasses.asdict(config_lib.method_config(config, "vicregl"))

  def loss(out, views):
    return vicregl.vicregl_loss(out.z_s, out.z_t, out.maps_s, out.maps_t,
                                *views_lib.view_positions(views, out.grid), **kwargs)

  return common.two_view_loss_fn(config, loss)


METHOD = common.Method(
    "vicregl", build_model=functools.partial(factory.siamese_model, local_projector=True),
    make_loss_fn=make_loss_fn)
