"""Pretraining methods (``config.method``): one registry entry per method, :data:`METHODS`.

Each entry is a :class:`~otcxr_jax.methods.common.Method`, defined in the method's own module:
``otcxr.py`` (the paper's method), ``simclr.py``, ``byol.py``, ``barlow_twins.py``, ``vicreg.py``
and ``vicregl.py`` (the baselines). It names its config section, builds its network around the
shared encoder, makes its loss function and, for a network with an EMA target (BYOL), the
target's decay schedule. Everything else reaches a method through the functions here, by
``config.method``.

Adding a method: its loss and hyperparameter class in ``objectives/<name>.py`` with a line in
``objectives/registry.py`` (which gives ``config_lib`` the name, the config section and its
checks) and the section's defaults in ``config_lib``; then ``methods/<name>.py`` defining its
``METHOD``, with a line here.
"""

from __future__ import annotations

import ml_collections
from flax import nnx

from otcxr_jax import config_lib
from otcxr_jax.methods import barlow_twins, byol, otcxr, simclr, vicreg, vicregl
from otcxr_jax.methods.common import Method
from otcxr_jax.models import factory
from otcxr_jax.training import state as state_lib

METHODS: dict[str, Method] = {method.name: method for method in (
    otcxr.METHOD,
    simclr.METHOD,
    byol.METHOD,
    barlow_twins.METHOD,
    vicreg.METHOD,
    vicregl.METHOD,
)}


def get(config: ml_collections.ConfigDict) -> Method:
  """The method ``config.method`` names (``config_lib.ConfigError`` for an unknown one)."""
  config_lib.require(config.method in METHODS, "method", config.method, f"one of {tuple(METHODS)}")
  return METHODS[config.method]


def build_model(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> nnx.Module:
  """The pretraining network of ``config.method``: the encoder the config describes, built first
  from ``rngs`` whatever the method (so every method starts from the same encoder weights), then
  the method's network around it. Pretraining and every evaluation that restores a pretraining
  checkpoint build it here, so a checkpoint is read back into the structure that wrote it."""
  encoder = factory.build_encoder(config, rngs)
  return get(config).build_model(config, encoder, rngs)


def make_loss_fn(config: ml_collections.ConfigDict) -> state_lib.LossFn:
  """``loss_fn(model, batch, rng)`` of ``config.method``: augment on device, encode both views,
  the method's loss."""
  return get(config).make_loss_fn(config)


def target_decay(config: ml_collections.ConfigDict) -> state_lib.TargetDecay | None:
  """The EMA decay schedule of the method's target network (BYOL's); None for the others."""
  return get(config).target_decay(config)


__all__ = ["METHODS", "Method", "build_model", "get", "make_loss_fn", "target_decay"]
