"""What ``otcxr_jax.main`` runs for each ``config.mode``: the module ``otcxr_jax/modes/<mode>.py``,
with ``run(config, workdir)`` and, where the mode has a config section of its own to check,
``validate(config)``.

:data:`MODES` is the one list of mode names; :func:`resolve` gives an evaluation's config the
network of the run it reads (``modes/network.py``); :func:`validate` checks a run's config: the
mode, the sections every mode shares (``config_lib.validate``), then the mode's own.
"""

from __future__ import annotations

import importlib
import types

import ml_collections

from otcxr_jax import config_lib

MODES = ("demo", "pretrain", "linear_probe", "knn", "finetune", "segment", "localize", "report",
         "build_dataset")


def module(mode: str) -> types.ModuleType:
  """The module of ``mode`` (imported on first use: a run loads only its own mode's code)."""
  if mode not in MODES:
    raise config_lib.ConfigError(f"config.mode={mode!r}: expected one of {MODES}.")
  return importlib.import_module(f"{__name__}.{mode}")


def resolve(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
  """The config a run of ``config.mode`` in ``workdir`` runs with: an evaluation's with the network
  fields of the run it reads (``network.resolve``), any other unchanged."""
  from otcxr_jax.modes import network
  return network.resolve(config, workdir)


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ``config_lib.ConfigError`` naming the first invalid field of a run's config."""
  config_lib.require(config.mode in MODES, "mode", config.mode, f"one of {MODES}")
  config_lib.validate(config)
  own = getattr(module(config.mode), "validate", None)
  if own is not None:
    own(config)
