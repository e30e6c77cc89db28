"""Pretraining methods (``config.method``): each one's loss on two augmented views and, for BYOL,
its target network's schedule. ``otcxr.py`` is the paper's method, ``baselines.py`` the SimCLR,
BYOL, Barlow Twins, VICReg and VICRegL baselines; their networks come from ``models/factory.py``.
"""

from __future__ import annotations

import ml_collections

from otcxr_jax.methods import baselines, otcxr
from otcxr_jax.training import state as state_lib


def make_loss_fn(config: ml_collections.ConfigDict) -> state_lib.LossFn:
  """``loss_fn(model, batch, rng)`` of ``config.method``: augment on device, encode both views,
  the method's loss."""
  if config.method == "otcxr":
    return otcxr.make_loss_fn(config)
  return baselines.make_loss_fn(config)


def target_decay(config: ml_collections.ConfigDict) -> state_lib.TargetDecay | None:
  """The EMA decay schedule of the method's target network (BYOL); None for the others."""
  return baselines.target_decay(config)
