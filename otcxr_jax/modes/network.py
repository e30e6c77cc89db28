"""The network an evaluation mode reads, and where it comes from.

An evaluation names the run it evaluates, not its architecture: ``probe.checkpoint_dir``
(``linear_probe``, ``knn``, ``segment``), ``finetune.checkpoint_dir`` (``finetune``) or
``localize.checkpoint_dir`` (``localize``'s attention and transport maps) is a run's workdir, or a
checkpoint directory inside it. That run's ``config.json`` describes the network: :func:`resolve`
copies its network fields (``method``, ``model``, the method's hyperparameter section,
``ckpt_lib.network_fields``) into the evaluation's config before it is validated and recorded, so
an evaluation config states only what it evaluates (data, its own section) and its recorded
``config.json`` describes the network it read. A field the evaluation's config sets to something
other than its default and other than the run's value is refused
(``ckpt_lib.NetworkConflictError``, naming both values).

``init='pretrained'`` reads the run's weights (``ckpt_lib.restore_network``); ``init='random'`` is
the same network at its initialisation (the floor of that architecture); mode ``linear_probe``'s
``probe.init='pixels'`` reads no network (the raw-pixel floor). Only when no run is named
does the config's own ``model`` (and ``method``) describe the network: an empty ``checkpoint_dir``
with random initialisation (supervised training from scratch, the synthetic benchmark's
random-init reference). An empty ``probe.checkpoint_dir`` or ``localize.checkpoint_dir`` names the
pretraining run in the evaluation's own workdir when there is one (``<workdir>/config.json`` of a
``pretrain`` or ``demo`` run, the evaluation keeping its own config in ``config_<mode>.json``);
with ``init='pretrained'`` it must be there.
"""

from __future__ import annotations

import copy
from typing import Any

import ml_collections
from etils import epath
from flax import nnx

from otcxr_jax import config_lib, methods
from otcxr_jax.models import factory
from otcxr_jax.training import checkpoint as ckpt_lib

# mode -> the config section whose ``init`` and ``checkpoint_dir`` name the network it reads
SECTIONS = {"linear_probe": "probe", "knn": "probe", "segment": "probe", "finetune": "finetune",
            "localize": "localize"}
# localize reads a pretraining network only for these methods (its CAM reads a classifier run)
LOCALIZE_PRETRAINING_METHODS = ("attention", "transport")


def _section(config: ml_collections.ConfigDict) -> str | None:
  """The config section naming the network the mode reads, or None when it reads none."""
  section = SECTIONS.get(config.mode)
  if section == "probe" and config.probe.init == config_lib.PIXEL_FLOOR:
    return None  # the raw-pixel floor (mode linear_probe): images, no network
  if section == "localize" and not set(config.localize.methods) & set(
      LOCALIZE_PRETRAINING_METHODS):
    return None
  return section


def _source(config: ml_collections.ConfigDict, section: str) -> str:
  """Where the run was named, for error messages."""
  if config[section].checkpoint_dir:
    return f"config {section}.checkpoint_dir"
  return f"config {section}.checkpoint_dir='': the pretraining run of the evaluation's workdir"


def named_run(config: ml_collections.ConfigDict, workdir: str | epath.PathLike) -> str | None:
  """The path of the run whose network the evaluation reads, or None when the config's own
  ``model`` describes it (module docstring)."""
  section = _section(config)
  if section is None:
    return None
  s = config[section]
  if s.checkpoint_dir:
    return s.checkpoint_dir
  if section == "finetune":
    return None
  own = epath.Path(workdir)
  if (own / ckpt_lib.CONFIG_FILE).exists():
    try:
      if ckpt_lib.find_run(own, source="").mode in ckpt_lib.PRETRAINING_MODES:
        return str(own)
    except ckpt_lib.CheckpointError:
      pass  # the evaluation's own config.json: no pretraining run here
  if s.init == "random":
    return None
  return str(own / "checkpoints" / ckpt_lib.PRETRAIN_RUN_NAME)  # must exist: find_run says so


def resolve(config: ml_collections.ConfigDict, workdir: str | epath.PathLike
            ) -> ml_collections.ConfigDict:
  """``config`` with the network fields of the run it reads (a copy; ``config`` itself when it
  reads none).

  Each network field of the run's ``config.json`` replaces the config's value where that is the
  default; any other value must be the run's.

  Raises:
    FileNotFoundError: the named run (or, with ``init='pretrained'`` and an empty
      ``checkpoint_dir``, ``<workdir>/checkpoints/pretrain``) is not there.
    ckpt_lib.NetworkConflictError: a field the config sets differs from the run's.
    ckpt_lib.CheckpointError: the named workdir holds a run without a network to read.
  """
  path = named_run(config, workdir)
  if path is None:
    return config
  source = _source(config, _section(config))
  run = ckpt_lib.find_run(path, source=source)
  defaults = config_lib.base_config()
  resolved = copy.deepcopy(config)
  for field, stored in ckpt_lib.network_fields(run.config).items():
    missing = object()
    current = ckpt_lib.config_value(config, field, default=missing)
    if current is missing:
      continue  # a field this code no longer has: nothing to build it into
    if _same(current, ckpt_lib.config_value(defaults, field, default=missing)):
      _set(resolved, field, stored)
  ckpt_lib.check_network(resolved, run, source=source)
  return resolved


def _same(a: Any, b: Any) -> bool:
  norm = lambda v: list(v) if isinstance(v, tuple) else v
  return norm(a) == norm(b)


def _set(config: ml_collections.ConfigDict, dotted: str, value: Any) -> None:
  *parents, name = dotted.split(".")
  node = config
  for part in parents:
    node = node[part]
  with config.ignore_type():  # the run's value, of the field's type where the schema has one
    node[name] = tuple(value) if isinstance(value, list) else value


def _origin(restored: ckpt_lib.Restored) -> dict[str, Any]:
  return {"init": "pretrained", "checkpoint_dir": str(restored.directory),
          "checkpoint_step": restored.step}


def encoder(config: ml_collections.ConfigDict, workdir: str | epath.PathLike, *,
            with_step: bool = False) -> tuple[nnx.Module, dict[str, Any]]:
  """The encoder the evaluation reads (its section's ``init``), in evaluation mode, and where it
  comes from: ``{'init': 'random'}`` or ``{'init': 'pretrained', 'checkpoint_dir': ...}`` (and
  ``'checkpoint_step'`` with ``with_step``).

  ``config`` is the resolved config (:func:`resolve`). Random initialisation is the encoder
  pretraining starts from (seed ``config.seed``).
  """
  section = SECTIONS[config.mode]
  if config[section].init == "random":
    if section == "finetune":
      return factory.build_encoder(config, nnx.Rngs(config.seed)), {"init": "random"}
    return methods.build_model(config, nnx.Rngs(config.seed)).encoder, {"init": "random"}
  restored = ckpt_lib.restore_network(named_run(config, workdir), config,
                                      source=_source(config, section))
  origin = _origin(restored)
  if not with_step:
    del origin["checkpoint_step"]
  return restored.module, origin


def pretraining_model(config: ml_collections.ConfigDict, workdir: str | epath.PathLike
                      ) -> tuple[nnx.Module, dict[str, Any]]:
  """The pretraining network ``localize.init`` selects, in evaluation mode, and where it comes
  from (as :func:`encoder`, with the checkpoint step)."""
  if config.localize.init == "random":
    model = methods.build_model(config, nnx.Rngs(config.seed))
    model.eval()
    return model, {"init": "random"}
  restored = ckpt_lib.restore_network(named_run(config, workdir), config,
                                      build_model=methods.build_model,
                                      source=_source(config, "localize"))
  return restored.module, _origin(restored)
