"""What a pretraining method is (:class:`Method`, one per module of ``methods/``, registered in
``methods.METHODS``) and the two-view loss function the Siamese methods share."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import ml_collections
from flax import nnx

from otcxr_jax import config_lib
from otcxr_jax.data import augment
from otcxr_jax.models.common import Encoder
from otcxr_jax.training import state as state_lib


def no_target(config: ml_collections.ConfigDict) -> None:
  """The target schedule of a method whose network holds no EMA target: None."""
  del config


@dataclasses.dataclass(frozen=True)
class Method:
  """One pretraining method, chosen by ``config.method``.

  Attributes:
    name: its ``config.method``, a key of ``objectives/registry.OBJECTIVES`` (which gives
      ``config_lib`` its config section and the class that checks it).
    build_model: ``(config, encoder, rngs) -> network``: the method's pretraining network around
      the shared encoder (``methods.build_model`` builds the encoder first), with the builders
      of ``models/factory.py``.
    make_loss_fn: ``config -> loss_fn(model, batch, rng)``: the batch's images augmented on
      device into two views, both through the network, the method's loss (``(loss, metrics)``).
    target_decay: ``config -> τ(step)`` of the network's EMA target (``models/target.py``,
      ``training/state.make_train_step``), or None where the network has none.
  """

  name: str
  build_model: Callable[[ml_collections.ConfigDict, Encoder, nnx.Rngs], nnx.Module]
  make_loss_fn: Callable[[ml_collections.ConfigDict], state_lib.LossFn]
  target_decay: Callable[[ml_collections.ConfigDict], state_lib.TargetDecay | None] = no_target

  def __post_init__(self):
    if self.name not in config_lib.METHODS:
      raise ValueError(f"method {self.name!r} has no objective in objectives/registry.py; "
                       f"expected one of {config_lib.METHODS}")

  @property
  def section(self) -> str:
    """The config section of its hyperparameters (``config_lib.METHOD_SECTIONS``)."""
    return config_lib.METHOD_SECTIONS[self.name]


def two_view_loss_fn(config: ml_collections.ConfigDict,
                     loss: Callable[[Any, augment.Views], tuple]) -> state_lib.LossFn:
  """``loss_fn(model, batch, rng)``: the batch's images scaled to [0, 1], augmented on device into
  two views (``config.augment``), both through the network, then ``loss(outputs, views)``."""
  aug = config_lib.augment_config(config)

  def loss_fn(model: nnx.Module, batch, rng):
    images = batch["image"].astype(jnp.float32) / 255.0
    views = augment.two_views(rng, images, aug)
    return loss(model(views.view_s, views.view_t), views)

  return loss_fn
