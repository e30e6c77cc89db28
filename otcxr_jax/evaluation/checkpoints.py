"""Encoders and models restored from the shared loop's checkpoints, or at random init.

A checkpoint holds the whole train state (model, optimiser, step, PRNG key; see
``training/checkpoint.py``): the trained parameters under ``params/``, the rest of the model
(BatchNorm running statistics) under ``model_state/``. Two ways to read it:

* :func:`load_pretrained_encoder` (linear probe, kNN) rebuilds a *pretraining* run's whole state
  skeleton exactly as pretraining does (``factory.build_model``, ``optim.pretraining_optimizer``,
  ``state.create_train_state``), restores the latest step into it and keeps the encoder: the
  config must describe that pretraining run in full;
* :func:`restore_module` reads only one module's variables (orbax partial restore) from a run of
  any mode, whatever its other modules and optimiser; :func:`load_encoder` uses it to start
  fine-tuning from a pretraining or a fine-tuning run.

Before anything is read, the checkpoint's stored tree metadata is compared with the skeleton, so a
checkpoint of another architecture (width, depth, projector size, optimiser) fails with the first
differing parameter instead of deep in orbax (``checkpoint.CheckpointMismatchError``, a
ValueError), and a step that cannot be read with ``checkpoint.DamagedCheckpointError`` naming the
step, the file and why. An evaluation reads the latest step and never falls back to an older one
(its results would describe another state than the run's last): rerun the run that wrote it,
which resumes from its newest intact step and writes that step again.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

from otcxr_jax import config_lib
from otcxr_jax.models import factory
from otcxr_jax.training import checkpoint as ckpt_lib
from otcxr_jax.training import optim
from otcxr_jax.training import state as state_lib

PRETRAIN_RUN_NAME = "pretrain"  # the loop's run name in mode pretrain: checkpoints/pretrain

_PRETRAIN_HINT = ("Set config.model (and config.optim) to the pretraining run's values (see its "
                  "config.json).")


def default_checkpoint_dir(workdir: str | epath.PathLike) -> epath.Path:
  """``<workdir>/checkpoints/pretrain``: where ``pretrain.run`` saves its checkpoints."""
  return epath.Path(workdir) / "checkpoints" / PRETRAIN_RUN_NAME


def latest_checkpoint(checkpoint_dir: str | epath.PathLike, *, source: str
                      ) -> tuple[epath.Path, int]:
  """``(absolute directory, latest step)`` of a checkpoint directory of the shared loop.

  Args:
    checkpoint_dir: the directory (``<workdir>/checkpoints/<run name>``).
    source: where the directory was named (e.g. ``'config finetune.checkpoint_dir'``), quoted in
      the error when it does not exist.

  Raises:
    FileNotFoundError: the directory does not exist or holds no checkpoint.
  """
  directory = ckpt_lib.absolute(checkpoint_dir)
  if not directory.is_dir():
    raise FileNotFoundError(f"Checkpoint directory {directory} does not exist ({source}).")
  checkpointer = ckpt_lib.Checkpointer(directory, save_every=0)
  try:
    step = checkpointer.latest_step
  finally:
    checkpointer.close()
  if step is None:
    raise FileNotFoundError(f"Checkpoint directory {directory} holds no checkpoint.")
  return directory, step


def load_pretrained_encoder(config: ml_collections.ConfigDict,
                            checkpoint_dir: str | epath.PathLike) -> nnx.Module:
  """The encoder of the latest checkpoint in ``checkpoint_dir``, in eval mode.

  Args:
    config: the run config; ``config.model``, ``config.optim`` and ``config.train`` must describe
      the pretraining run that wrote the checkpoint.
    checkpoint_dir: a pretraining run's checkpoint directory (``<workdir>/checkpoints/pretrain``).

  Raises:
    FileNotFoundError: ``checkpoint_dir`` does not exist or holds no checkpoint.
    ValueError: the checkpoint's tree differs from the config's train state (a parameter is
      missing, extra or of another shape); the message names the first such parameter.
    checkpoint.DamagedCheckpointError: the latest step cannot be read.
  """
  directory, step = latest_checkpoint(
      checkpoint_dir, source="config probe.checkpoint_dir; run pretraining first")
  checkpointer = ckpt_lib.Checkpointer(directory, save_every=0)
  try:
    model = factory.build_model(config, nnx.Rngs(config.seed))
    tx, _ = optim.pretraining_optimizer(config)
    rng = jax.random.key_data(jax.random.key(config.seed + 1))
    graphdef, state = state_lib.create_train_state(model, tx, rng)
    restored = checkpointer.restore(ckpt_lib.abstract_like(state), step=step,
                                    hint=_PRETRAIN_HINT)
  finally:
    checkpointer.close()
  return state_lib.eval_model(graphdef, restored).encoder


def probe_encoder(config: ml_collections.ConfigDict,
                  workdir: str | epath.PathLike) -> tuple[nnx.Module, dict[str, str]]:
  """The encoder ``config.probe.init`` selects, and a description of where it comes from.

  ``'pretrained'``: :func:`load_pretrained_encoder` of ``config.probe.checkpoint_dir`` (empty:
  ``<workdir>/checkpoints/pretrain``). ``'random'``: the encoder pretraining starts from (same
  seed), BatchNorm statistics as initialised.
  """
  init = config.probe.init
  if init == "random":
    return factory.build_model(config, nnx.Rngs(config.seed)).encoder, {"init": init}
  if init != "pretrained":
    raise ValueError(f"config.probe.init={init!r}: expected one of {config_lib.PROBE_INITS}.")
  directory = config.probe.checkpoint_dir or default_checkpoint_dir(workdir)
  encoder = load_pretrained_encoder(config, directory)
  return encoder, {"init": init, "checkpoint_dir": str(ckpt_lib.absolute(directory))}


def _flat_variables(state: nnx.State, prefix: str) -> dict[str, nnx.Variable]:
  """``{'<prefix>stage1/0/conv1/kernel': Variable}`` of a module state."""
  return {prefix + "/".join(map(str, path)): var for path, var in nnx.to_flat_state(state)}


def _nested(flat: dict[str, object]) -> dict:
  """``{'a/b/c': x}`` -> ``{'a': {'b': {'c': x}}}``."""
  out: dict = {}
  for path, leaf in flat.items():
    *parents, last = path.split("/")
    node = out
    for key in parents:
      node = node.setdefault(key, {})
    node[last] = leaf
  return out


def restore_module(module: nnx.Module, checkpoint_dir: str | epath.PathLike, *,
                   under: str | None = None, step: int | None = None,
                   source: str = "checkpoint_dir",
                   hint: str = "Set config.model to the values of the run that wrote it (see its "
                               "config.json).") -> tuple[nnx.Module, int]:
  """Fills ``module`` with its variables from a checkpoint of the shared train loop.

  The module's ``nnx.Param`` s are read from ``params/<under>/...`` and its other variables
  (BatchNorm statistics) from ``model_state/<under>/...``, where ``under`` is the module's
  attribute name in the run's model (``'encoder'`` for the OTCXR and the fine-tuning models;
  ``None`` when the module *is* the run's model). Only these arrays are read (orbax partial
  restore): the run's other modules and its optimiser state may be anything.

  Args:
    module: the module to fill, concrete or abstract (``nnx.eval_shape``); it gives the expected
      tree and shapes.
    checkpoint_dir: a run's checkpoint directory (``<workdir>/checkpoints/<run name>``).
    under: the module's attribute name in the run's model, or None for the whole model.
    step: the step to read; None for the latest.
    source: where ``checkpoint_dir`` was named, quoted when it does not exist.
    hint: appended to the mismatch error (how to fix the config).

  Returns:
    ``(module, step)``: a new module holding the stored values, in evaluation mode.

  Raises:
    FileNotFoundError: ``checkpoint_dir`` does not exist or holds no checkpoint.
    ValueError: the checkpoint holds no ``under`` module, or one of its variables is missing,
      extra or of another shape; the message names the first such parameter path.
    checkpoint.DamagedCheckpointError: the step cannot be read.
  """
  if step is None:
    directory, step = latest_checkpoint(checkpoint_dir, source=source)
  else:
    directory = ckpt_lib.absolute(checkpoint_dir)
  step_dir = directory / str(step)
  graphdef, params, rest = nnx.split(module, nnx.Param, ...)
  inner = f"{under}/" if under else ""
  variables = {**_flat_variables(params, f"params/{inner}"),
               **_flat_variables(rest, f"model_state/{inner}")}
  stored = ckpt_lib.stored_shapes(step_dir, step)
  prefixes = (f"params/{inner}", f"model_state/{inner}")
  stored = {k: v for k, v in stored.items() if k.startswith(prefixes)}
  if under and not stored:
    raise ckpt_lib.CheckpointMismatchError(
        f"Checkpoint {step_dir} holds no '{under}' module (no 'params/{under}/...' or "
        f"'model_state/{under}/...' arrays).")
  expected = {k: tuple(v.get_value().shape) for k, v in variables.items()}
  ckpt_lib.check_matches(stored, expected, step_dir, hint)
  item = _nested({f"{k}/value": jax.ShapeDtypeStruct(v.get_value().shape, v.get_value().dtype)
                  for k, v in variables.items()})
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
  checkpointer = ocp.PyTreeCheckpointer()
  try:
    restored = checkpointer.restore(step_dir / ckpt_lib.STATE_ITEM, args=ocp.args.PyTreeRestore(
        item=item, restore_args=restore_args, partial_restore=True))
  except Exception as e:  # pylint: disable=broad-except
    raise ckpt_lib.DamagedCheckpointError(step, step_dir,
                                          ckpt_lib.failure_reason(e, step_dir)) from e
  finally:
    checkpointer.close()
  for path, var in variables.items():
    node = restored
    for key in path.split("/"):
      node = node[key]
    var.set_value(jnp.asarray(node["value"], var.get_value().dtype))
  module = nnx.merge(graphdef, params, rest)
  module.eval()
  return module, step


def load_encoder(config: ml_collections.ConfigDict, checkpoint_dir: str | epath.PathLike, *,
                 source: str = "checkpoint_dir") -> tuple[nnx.Module, int]:
  """The encoder ``config.model`` describes, read from any run whose model has an ``encoder``.

  A pretraining run (``<workdir>/checkpoints/pretrain``) or a fine-tuning run
  (``<workdir>/checkpoints/finetune_best`` for its selected state); only the encoder's variables
  are read, so the runs' heads and optimisers do not matter. Returns ``(encoder, step)``, the
  encoder in evaluation mode; raises as :func:`restore_module`.
  """
  encoder = nnx.eval_shape(lambda: factory.build_encoder(config, nnx.Rngs(config.seed)))
  return restore_module(encoder, checkpoint_dir, under="encoder", source=source)
