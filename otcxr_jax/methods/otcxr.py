"""OTCXR, the paper's method: two augmented views of each image through the network
(``models.OTCXRModel``: encoder -> dense projector -> CV-SIM, ``factory.otcxr_model``), then
``objectives/otcxr.otcxr_loss`` on the two views' dense tokens, with the crop geometry's location
prior or location-matched MSE where ``config.objective`` asks for them. No EMA target, unless
``objective.teacher_tau > 0`` asks for a teacher (not in the paper; ``objectives/otcxr.py``).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import ml_collections

from otcxr_jax import config_lib
from otcxr_jax import models
from otcxr_jax.data import augment
from otcxr_jax.methods import common
from otcxr_jax.methods import views as views_lib
from otcxr_jax.models import factory
from otcxr_jax.objectives import byol
from otcxr_jax.objectives import otcxr as otcxr_objective


def view_location_cost(views: augment.Views, grid: tuple[int, int]) -> jax.Array:
  """(B, N, N) squared source-image distances between the two views' cells (in cell sizes)."""
  side = lambda box: jnp.sqrt((box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1]))
  cell = 0.5 * (side(views.box_s) + side(views.box_t)) / max(grid)
  return otcxr_objective.location_cost(*views_lib.view_positions(views, grid), cell)


def pretraining_loss(model: models.OTCXRModel, images: jax.Array, rng: jax.Array,
                     aug: augment.AugmentConfig, objective: dict, *,
                     return_attention: bool = False):
  """Augments ``images`` (float in [0, 1]) into two views and returns ``(loss, aux, views, out)``."""
  views = augment.two_views(rng, images, aug)
  out = model(views.view_s, views.view_t, return_attention=return_attention)
  location_mse = objective["alignment"] == "location_mse"
  location = (view_location_cost(views, out.grid)
              if objective["location_weight"] and not location_mse else None)
  positions = views_lib.view_positions(views, out.grid) if location_mse else None
  teacher = {}
  if out.p_s is not None:
    teacher = dict(predictions=(out.p_s, out.p_t), targets=(out.z_s_target, out.z_t_target))
  loss, aux = otcxr_objective.otcxr_loss(out.q_s, out.q_t, location=location,
                                         positions=positions, **teacher, **objective)
  return loss, aux, views, out


def make_loss_fn(config: ml_collections.ConfigDict):
  """``loss_fn(model, batch, rng)``: augment on device, encode both views, OTCXR's loss."""
  aug = config_lib.augment_config(config)
  objective = dataclasses.asdict(config_lib.objective_config(config))

  def loss_fn(model: models.OTCXRModel, batch, rng):
    images = batch["image"].astype(jnp.float32) / 255.0
    loss, aux, _, _ = pretraining_loss(model, images, rng, aug, objective)
    return loss, {k: v for k, v in aux.items() if k != otcxr_objective.PLAN_KEY}

  return loss_fn


def target_decay(config: ml_collections.ConfigDict):
  """The teacher's ``τ(k) = byol.byol_tau(k, train.num_steps, objective.teacher_tau)``, or None
  without a teacher."""
  tau = config.objective.teacher_tau
  if not tau:
    return None
  return functools.partial(byol.byol_tau, total_steps=config.train.num_steps, base_tau=tau)


METHOD = common.Method("otcxr", build_model=factory.otcxr_model, make_loss_fn=make_loss_fn,
                       target_decay=target_decay)
