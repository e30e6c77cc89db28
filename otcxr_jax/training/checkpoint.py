"""orbax checkpoints of the train state and the data iterator, resumed from the workdir; and the
one way a run's network is restored for evaluation.

A checkpoint holds the whole :class:`~otcxr_jax.training.state.TrainState` (model, optimiser,
step, PRNG key) and the grain iterator position, so a resumed run continues exactly: the same next
batch and the same parameters as an uninterrupted one.

Before a step is read, its stored tree (orbax metadata) is compared with the expected one, so a
checkpoint of another architecture fails with :class:`CheckpointMismatchError` naming the first
differing parameter. A step that cannot be read (a truncated or emptied file) fails with
:class:`DamagedCheckpointError` naming the step, the file where known and the reason; resuming
(:meth:`Checkpointer.restore_newest_intact`) then falls back to the newest intact step.

Evaluations read a run's network through :func:`restore_network`: given the run's workdir (or a
checkpoint directory inside it) it reads the workdir's ``config.json`` (:func:`find_run`), rebuilds
the encoder through ``models/factory.py`` (or the whole pretraining network through the builder
it is given, ``methods.build_model``) and fills it from the latest checkpoint with
:func:`restore_module`, which reads only that module's arrays (orbax
partial restore), whatever the run's other modules and optimiser. A config given with it must
describe the same network (:func:`check_network`): a field that differs is refused, naming both
values. An evaluation reads the latest step and never falls back to an older one (its results
would describe another state than the run's last): rerun the run that wrote it, which resumes
from its newest intact step and writes that step again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import sys
from typing import Any, Callable, Mapping

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

from otcxr_jax import errors
from otcxr_jax.models import factory

STATE_ITEM = "state"  # the Composite item name the train state is saved under
DATA_ITEM = "data"    # ... and the data iterator's
DAMAGED_SUFFIX = ".damaged"  # a damaged step set aside: '<step>.damaged[N]' (no step for orbax)
CONFIG_FILE = "config.json"  # a run's config, written into its workdir (training/workdir.py)
PRETRAIN_RUN_NAME = "pretrain"  # the loop's run name in modes pretrain and demo
# Where a run of each mode keeps the network it trained: '<workdir>/checkpoints/<name>'.
MODEL_CHECKPOINTS = {"pretrain": PRETRAIN_RUN_NAME, "demo": PRETRAIN_RUN_NAME,
                     "finetune": "finetune_best"}
PRETRAINING_MODES = ("pretrain", "demo")
# Order in which a mismatch is looked for: the encoder, the other modules, the optimiser and rest.
_MISMATCH_ORDER = ("params/encoder/", "model_state/encoder/", "params/", "model_state/")


class CheckpointError(errors.UserError):
  """A checkpoint cannot be used: damaged, missing or of another model."""


class DamagedCheckpointError(CheckpointError):
  """A step cannot be read (a truncated, emptied or missing file)."""

  def __init__(self, step: int, step_dir: epath.Path, reason: str):
    super().__init__(f"checkpoint step {step} ({step_dir}) cannot be read: {reason}")
    self.step, self.step_dir, self.reason = step, step_dir, reason


class NoIntactCheckpointError(CheckpointError):
  """No step of a checkpoint directory can be read."""


class CheckpointMismatchError(CheckpointError, ValueError):
  """The stored tree differs from the expected one (another architecture or optimiser)."""


class MissingCheckpointError(CheckpointError, FileNotFoundError):
  """A named run or checkpoint directory is not there, or holds no checkpoint."""


class NetworkConflictError(CheckpointError, ValueError):
  """A config field describes another network than the run whose checkpoint is read."""


def _key_name(key) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def tree_shapes(tree) -> dict[str, tuple[int, ...]]:
  """``{'params/encoder/stem/conv/kernel': shape, ...}`` of a state tree or its orbax metadata."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    names = [_key_name(k) for k in path]
    if names[-1] == "value":  # nnx.Variable's array field
      names = names[:-1]
    out["/".join(names)] = tuple(leaf.shape)
  return out


def check_matches(stored: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]],
                  where: epath.Path, hint: str) -> None:
  """Raises :class:`CheckpointMismatchError` at the first path whose presence or shape differs.

  Paths are visited in the groups of ``_MISMATCH_ORDER`` (each in sorted order), so the message
  names a model parameter rather than the optimiser state that mirrors it.
  """
  group = lambda p: next((i for i, g in enumerate(_MISMATCH_ORDER) if p.startswith(g)),
                         len(_MISMATCH_ORDER))
  paths = sorted(expected.keys() | stored.keys(), key=lambda p: (group(p), p))
  for path in paths:
    if stored.get(path) != expected.get(path):
      describe = lambda s: "absent" if s is None else f"shape {s}"
      raise CheckpointMismatchError(
          f"Checkpoint {where} does not match the model of the config: parameter '{path}' is "
          f"{describe(stored.get(path))} in the checkpoint but {describe(expected.get(path))} in "
          f"the config's model. {hint}")


def failure_reason(error: BaseException, step_dir: epath.Path) -> str:
  """One line saying which file of ``step_dir`` could not be read and why.

  tensorstore's messages name the file deep inside a long chain (and append the whole spec);
  a JSON error names no file, so the step's JSON files are parsed to find the damaged one.
  """
  text = str(error).split(" [tensorstore_spec", 1)[0]
  named = list(re.finditer(r'file "([^"]+)": ', text))
  if named:
    last = named[-1]
    return f"{last.group(1)}: {text[last.end():].strip()}"
  if isinstance(error, ValueError) and type(error).__name__ == "JSONDecodeError":
    for path in _json_files(step_dir):
      try:
        json.loads(path.read_text())
      except (ValueError, UnicodeDecodeError) as e:
        what = "empty" if not path.read_bytes().strip() else f"not valid JSON ({e})"
        return f"{path}: {what}"
  first = text.strip().splitlines()[0] if text.strip() else ""
  return f"{type(error).__name__}: {first}" if first else type(error).__name__


def _json_files(step_dir: epath.Path) -> list[epath.Path]:
  """The JSON files orbax writes in a step: its metadata, the state's, the data iterator's."""
  files = [step_dir / "_CHECKPOINT_METADATA", step_dir / STATE_ITEM / "_METADATA",
           step_dir / STATE_ITEM / "_sharding"]
  for sub in (step_dir / STATE_ITEM / "array_metadatas", step_dir / DATA_ITEM):
    if sub.is_dir():
      files.extend(sorted(p for p in sub.iterdir() if p.name != "commit_success.txt"))
  return [p for p in files if p.exists()]


def stored_shapes(step_dir: epath.Path, step: int) -> dict[str, tuple[int, ...]]:
  """The shapes of the train state stored in ``step_dir`` (its metadata only).

  Raises:
    DamagedCheckpointError: the metadata cannot be read.
  """
  _quiet_abandoned_reads(step_dir)
  try:
    return tree_shapes(ocp.StandardCheckpointHandler().metadata(step_dir / STATE_ITEM))
  except Exception as e:  # pylint: disable=broad-except
    raise DamagedCheckpointError(step, step_dir, failure_reason(e, step_dir)) from e


_READ_DIRS: set[str] = set()  # step folders read so far (see _quiet_abandoned_reads)
_ABANDONED = ("Task exception was never retrieved", "Future exception was never retrieved")


class _AbandonedReadFilter(logging.Filter):
  """Drops asyncio's "exception was never retrieved" report of a read of a step folder."""

  def filter(self, record: logging.LogRecord) -> bool:
    error = record.exc_info[1] if record.exc_info else None
    if error is None or not str(record.msg).startswith(_ABANDONED):
      return True
    text = str(error)
    return not any(directory in text for directory in _READ_DIRS)


def _quiet_abandoned_reads(step_dir: epath.Path) -> None:
  """Called before ``step_dir`` is read. After a failed read, tensorstore completes the reads
  still in flight on orbax's closed event loop, and they end, any time later, in tracebacks of
  dozens of lines each: an unraisable ``RuntimeError('Event loop is closed')``, or asyncio's
  "Task exception was never retrieved" with the read's error when the task is collected. The
  failure itself is reported once, as a :class:`DamagedCheckpointError`; those echoes, and only
  those (an error naming a folder read here), are dropped."""
  _READ_DIRS.add(str(step_dir))
  asyncio_logger = logging.getLogger("asyncio")
  if not any(isinstance(f, _AbandonedReadFilter) for f in asyncio_logger.filters):
    asyncio_logger.addFilter(_AbandonedReadFilter())
  previous = sys.unraisablehook
  if getattr(previous, "_drops_closed_loops", False):
    return

  def hook(unraisable):
    if (isinstance(unraisable.exc_value, RuntimeError)
        and str(unraisable.exc_value) == "Event loop is closed"):
      return
    previous(unraisable)

  hook._drops_closed_loops = True  # pylint: disable=protected-access
  sys.unraisablehook = hook


_DEFAULT_HINT = "The workdir's config.json holds the config the checkpoints were written with."


class Checkpointer:
  """Saves every ``save_every`` steps (and on demand), keeps the newest ``max_to_keep``.

  ``cleanup_tmp=True`` deletes the temporary folders of saves that never finished (a crash while
  saving) when it opens the directory: only for the run that writes it (under the workdir lock),
  never for a reader of another run's checkpoints, which could be saving at that moment.
  """

  def __init__(self, directory: str | epath.PathLike, *, save_every: int, max_to_keep: int = 3,
               cleanup_tmp: bool = False):
    self.directory = absolute(directory)
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                             enable_async_checkpointing=False,
                                             cleanup_tmp_directories=cleanup_tmp))
    self._save_every = save_every

  @property
  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def restore(self, abstract_state: Any, data_iterator: Any | None = None,
              step: int | None = None, *, hint: str = _DEFAULT_HINT):
    """Restores ``step`` (default: latest) into the structure/shardings of ``abstract_state``.

    Returns the restored state, or ``None`` when the directory holds no checkpoint. The data
    iterator, when given, is moved to its saved position in place.

    Raises:
      CheckpointMismatchError: the stored tree differs from ``abstract_state`` (``hint`` is
        appended to the message).
      DamagedCheckpointError: the step cannot be read.
    """
    step = self.latest_step if step is None else step
    if step is None:
      return None
    step_dir = self.directory / str(step)
    check_matches(stored_shapes(step_dir, step), tree_shapes(abstract_state), step_dir, hint)
    items = {STATE_ITEM: ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None:
      items[DATA_ITEM] = grain.checkpoint.CheckpointRestore(data_iterator)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # pylint: disable=broad-except
      raise DamagedCheckpointError(step, step_dir, failure_reason(e, step_dir)) from e
    return restored[STATE_ITEM]

  def restore_newest_intact(self, abstract_state: Any, data_iterator: Any | None = None, *,
                            name: str, hint: str = _DEFAULT_HINT):
    """Restores the newest step that can be read; ``(state, step)``, or ``(None, None)`` when
    the directory holds no checkpoint.

    A newer step that cannot be read is reported in one line (step, file, reason), and once an
    older step has been read it is set aside as ``<step>.damaged`` (``.damaged2``, ... when that
    exists) beside the others, so that the run saves that step again.

    Raises:
      NoIntactCheckpointError: no step can be read (nothing is moved).
      CheckpointMismatchError: a step's tree differs from ``abstract_state``: the config
        describes another model, which no older step would fix.
    """
    damaged: list[DamagedCheckpointError] = []
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        state = self.restore(abstract_state, data_iterator, step, hint=hint)
        failure = None
      except DamagedCheckpointError as e:
        state, failure = None, e
      if not _everywhere(failure is None):  # a step damaged for any process is damaged
        damaged.append(failure or DamagedCheckpointError(
            step, self.directory / str(step), "another process could not read it"))
        continue
      self._set_aside(damaged, name, step)
      return state, step
    if damaged:
      raise NoIntactCheckpointError(
          f"[{name}] no checkpoint in {self.directory} can be read: "
          + "; ".join(f"step {e.step}: {e.reason}" for e in damaged)
          + ". Restore the directory from a copy, or move it away to train from the start.")
    return None, None

  def _set_aside(self, damaged: list[DamagedCheckpointError], name: str, intact: int) -> None:
    for e in damaged:
      if jax.process_index() == 0:
        target = e.step_dir.with_name(f"{e.step_dir.name}{DAMAGED_SUFFIX}")
        copies = 1
        while target.exists():  # the same step damaged before: both kept
          copies += 1
          target = e.step_dir.with_name(f"{e.step_dir.name}{DAMAGED_SUFFIX}{copies}")
        print(f"Warning: [{name}] checkpoint step {e.step} ({e.step_dir}) cannot be read: "
              f"{e.reason}; resuming from step {intact}, the damaged step moved to {target}",
              file=sys.stderr, flush=True)
        e.step_dir.rename(target)
    if damaged:
      _everywhere(True)  # every process waits for the move before listing the steps again
      self._manager.reload()

  def maybe_save(self, step: int, state: Any, data_iterator: Any | None = None,
                 force: bool = False) -> bool:
    if not force and (self._save_every <= 0 or step % self._save_every):
      return False
    if self._manager.latest_step() == step:
      return False
    items = {STATE_ITEM: ocp.args.StandardSave(state)}
    if data_iterator is not None:
      items[DATA_ITEM] = grain.checkpoint.CheckpointSave(data_iterator)
    self._manager.save(step, args=ocp.args.Composite(**items), force=True)
    return True

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def _everywhere(ok: bool) -> bool:
  """Whether ``ok`` holds on every process (an all-gather when several processes run)."""
  if jax.process_count() == 1:
    return ok
  from jax.experimental import multihost_utils
  return bool(np.all(multihost_utils.process_allgather(np.int32(ok))))


def is_remote(path: str | epath.PathLike) -> bool:
  """Whether ``path`` names a remote location (``gs://``, ``s3://``, any ``scheme://``)."""
  return "://" in os.fspath(path)


def absolute(directory: str | epath.PathLike) -> epath.Path:
  """The absolute form of a checkpoint directory (orbax refuses relative ones).

  A local path is made absolute (``~`` expanded, symlinks kept); a remote one (``gs://...``) is
  returned unchanged.
  """
  if is_remote(directory):
    return epath.Path(directory)
  return epath.Path(os.path.abspath(os.path.expanduser(os.fspath(directory))))


def abstract_like(state: Any) -> Any:
  """Shape/dtype/sharding skeleton of ``state`` for :meth:`Checkpointer.restore`."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, state)


# --- a run's network, restored for evaluation ----------------------------------------------------

def latest_checkpoint(checkpoint_dir: str | epath.PathLike, *, source: str
                      ) -> tuple[epath.Path, int]:
  """``(absolute directory, latest step)`` of a checkpoint directory of the shared loop.

  Args:
    checkpoint_dir: the directory (``<workdir>/checkpoints/<run name>``).
    source: where the directory was named (e.g. ``'config finetune.checkpoint_dir'``), quoted in
      the error when it does not exist.

  Raises:
    MissingCheckpointError: (a FileNotFoundError) the directory does not exist or holds no
      checkpoint.
  """
  directory = absolute(checkpoint_dir)
  if not directory.is_dir():
    raise MissingCheckpointError(f"Checkpoint directory {directory} does not exist ({source}).")
  checkpointer = Checkpointer(directory, save_every=0)
  try:
    step = checkpointer.latest_step
  finally:
    checkpointer.close()
  if step is None:
    raise MissingCheckpointError(f"Checkpoint directory {directory} holds no checkpoint.")
  return directory, step


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
                   source: str = "checkpoint_dir", hint: str = _DEFAULT_HINT
                   ) -> tuple[nnx.Module, int]:
  """Fills ``module`` with its variables from a checkpoint of the shared train loop.

  The module's ``nnx.Param`` s are read from ``params/<under>/...`` and its other variables
  (BatchNorm statistics, a classifier head's feature statistics) from
  ``model_state/<under>/...``, where ``under`` is the module's attribute name in the run's model
  (``'encoder'`` for the pretraining and the fine-tuning models; ``None`` when the module *is*
  the run's model). Only these arrays are read (orbax partial restore): the run's other modules
  and its optimiser state may be anything.

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
    CheckpointMismatchError: the checkpoint holds no ``under`` module, or one of its variables
      is missing, extra or of another shape; the message names the first such parameter path.
    DamagedCheckpointError: the step cannot be read.
  """
  if step is None:
    directory, step = latest_checkpoint(checkpoint_dir, source=source)
  else:
    directory = absolute(checkpoint_dir)
  step_dir = directory / str(step)
  graphdef, params, rest = nnx.split(module, nnx.Param, ...)
  inner = f"{under}/" if under else ""
  variables = {**_flat_variables(params, f"params/{inner}"),
               **_flat_variables(rest, f"model_state/{inner}")}
  stored = stored_shapes(step_dir, step)
  prefixes = (f"params/{inner}", f"model_state/{inner}")
  stored = {k: v for k, v in stored.items() if k.startswith(prefixes)}
  if under and not stored:
    raise CheckpointMismatchError(
        f"Checkpoint {step_dir} holds no '{under}' module (no 'params/{under}/...' or "
        f"'model_state/{under}/...' arrays).")
  expected = {k: tuple(v.get_value().shape) for k, v in variables.items()}
  check_matches(stored, expected, step_dir, hint)
  item = _nested({f"{k}/value": jax.ShapeDtypeStruct(v.get_value().shape, v.get_value().dtype)
                  for k, v in variables.items()})
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
  checkpointer = ocp.PyTreeCheckpointer()
  try:
    restored = checkpointer.restore(step_dir / STATE_ITEM, args=ocp.args.PyTreeRestore(
        item=item, restore_args=restore_args, partial_restore=True))
  except Exception as e:  # pylint: disable=broad-except
    raise DamagedCheckpointError(step, step_dir, failure_reason(e, step_dir)) from e
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


@dataclasses.dataclass(frozen=True)
class RunCheckpoints:
  """A run whose network an evaluation reads.

  Attributes:
    workdir: the run's workdir (absolute), which holds its ``config.json``.
    directory: its checkpoint directory holding the network (absolute): the one named, or the
      mode's own (:data:`MODEL_CHECKPOINTS`) when the workdir was named.
    config: the run's ``config.json``, as stored (JSON values: lists for tuples).
  """
  workdir: epath.Path
  directory: epath.Path
  config: Mapping[str, Any]

  @property
  def mode(self) -> str:
    return self.config.get("mode", "")


def _read_run_config(workdir: epath.Path) -> dict[str, Any]:
  path = workdir / CONFIG_FILE
  try:
    stored = json.loads(path.read_text())
  except (ValueError, UnicodeDecodeError) as e:
    raise CheckpointError(f"{path} cannot be read: {type(e).__name__}: {e}.") from None
  if not isinstance(stored, dict):
    raise CheckpointError(f"{path} does not hold a run's config.")
  return stored


def find_run(path: str | epath.PathLike, *, source: str) -> RunCheckpoints:
  """The run ``path`` names: its workdir, or a checkpoint directory inside it
  (``<workdir>/checkpoints/<name>``); either way the workdir's ``config.json`` describes it.

  Args:
    path: a workdir of a pretraining (``pretrain``, ``demo``) or fine-tuning run, or one of its
      checkpoint directories.
    source: where ``path`` was named (``'config probe.checkpoint_dir'``), quoted in errors.

  Raises:
    MissingCheckpointError: (a FileNotFoundError) neither ``path`` nor the workdir above a
      checkpoint directory holds a ``config.json``.
    CheckpointError: the workdir is another mode's (it has no network to read), or its
      ``config.json`` cannot be read.
  """
  named = absolute(path)
  if (named / CONFIG_FILE).exists():
    workdir, directory = named, None
  elif named.parent.name == "checkpoints" and (named.parent.parent / CONFIG_FILE).exists():
    workdir, directory = named.parent.parent, named
  else:
    where = (f"{named / CONFIG_FILE} or {named.parent.parent / CONFIG_FILE}"
             if named.parent.name == "checkpoints" else str(named / CONFIG_FILE))
    raise MissingCheckpointError(
        f"{named} ({source}) is not the workdir of a run, nor a checkpoint directory inside one: "
        f"no {where}. Name a pretraining (or fine-tuning) run's workdir; run it first.")
  stored = _read_run_config(workdir)
  mode = stored.get("mode")
  if mode not in MODEL_CHECKPOINTS:
    raise CheckpointError(
        f"{workdir / CONFIG_FILE} is a {mode!r} run's config ({source}); the network is read from "
        f"a run of mode {' or '.join(repr(m) for m in MODEL_CHECKPOINTS)}.")
  if directory is None:
    directory = workdir / "checkpoints" / MODEL_CHECKPOINTS[mode]
  return RunCheckpoints(workdir, directory, stored)


def method_section(method: str) -> str:
  """The config section of a pretraining method's hyperparameters (OTCXR's is ``objective``;
  ``config_lib.METHOD_SECTIONS``, which this layer cannot import: config_lib's checks import the
  train loop, which imports this module)."""
  return "objective" if method == "otcxr" else method


def network_fields(stored: Mapping[str, Any]) -> dict[str, Any]:
  """``{'method': ..., 'model.encoder': ..., 'objective.epsilon': ...}``: the fields of a stored
  config that describe its network (the pretraining method, ``model``, and that method's
  hyperparameters, which the pretraining network's maps are computed with), JSON values."""
  out = {}
  if "method" in stored:
    out["method"] = stored["method"]
  for section in ("model", method_section(stored.get("method", "otcxr"))):
    for key, value in (stored.get(section) or {}).items():
      out[f"{section}.{key}"] = value
  return out


def _json(value: Any) -> Any:
  """A config value as ``config.json`` stores it (tuples as lists)."""
  return json.loads(json.dumps(value, default=list))


def config_value(config: ml_collections.ConfigDict, dotted: str, default: Any = None) -> Any:
  """The value of a dotted field of ``config``, or ``default`` where it has no such field."""
  node = config
  for part in dotted.split("."):
    if not hasattr(node, "keys") or part not in node:
      return default
    node = node[part]
  return node


def check_network(config: ml_collections.ConfigDict, run: RunCheckpoints, *,
                  source: str) -> None:
  """Raises :class:`NetworkConflictError` at the first network field (:func:`network_fields`)
  of ``run``'s config that ``config`` sets to another value; the message names both."""
  for field, stored in network_fields(run.config).items():
    value = config_value(config, field, default=stored)
    if _json(value) != stored:
      raise NetworkConflictError(
          f"config {field}={_show(value)} conflicts with the network of the run it reads "
          f"({source}): {field}={_show(stored)} in {run.workdir / CONFIG_FILE}. The network is "
          f"that run's: drop the field (or give the run's value).")


def _show(value: Any) -> str:
  return repr(tuple(value) if isinstance(value, list) else value)


@dataclasses.dataclass(frozen=True)
class Restored:
  """A network read from a run: the module (evaluation mode), the step read and the run."""
  module: nnx.Module
  step: int
  run: RunCheckpoints

  @property
  def directory(self) -> epath.Path:
    return self.run.directory


def restore_network(path: str | epath.PathLike, config: ml_collections.ConfigDict | None = None,
                    *, build_model: Callable[[ml_collections.ConfigDict, nnx.Rngs], nnx.Module]
                    | None = None, source: str = "checkpoint") -> Restored:
  """The encoder (or, with ``build_model``, the whole pretraining network) of the run ``path``
  names, filled from its latest checkpoint, in evaluation mode.

  The network is rebuilt from the run's ``config.json`` (:func:`find_run`): the encoder through
  ``models/factory.build_encoder``, the pretraining network through ``build_model(config, rngs)``
  (``methods.build_model``, which this layer does not import). ``config``, when given, is the evaluation's: its network fields must be the
  run's (:func:`check_network`), and its other fields (``train.compute_dtype``,
  ``data.image_size``) are the ones the network is built with; without it the run's stored config
  is used as it is (a ``config.json`` written by this code holds every field the factory reads).

  Args:
    path: the run's workdir, or a checkpoint directory inside it.
    config: the evaluation's config, or None.
    build_model: None for the encoder (of any pretraining or fine-tuning run), or the builder of
      the whole pretraining network of a ``pretrain`` or ``demo`` run (encoder, projector,
      CV-SIM, ...).
    source: where ``path`` was named, quoted in errors.

  Raises:
    FileNotFoundError: no such run, or its checkpoint directory holds no checkpoint.
    NetworkConflictError: ``config`` describes another network than the run's.
    CheckpointMismatchError: the checkpoint does not hold the network its ``config.json``
      describes (the message names the first differing parameter).
    DamagedCheckpointError: the latest step cannot be read.
  """
  run = find_run(path, source=source)
  if config is None:
    config = ml_collections.ConfigDict(dict(run.config))
  else:
    check_network(config, run, source=source)
  if build_model is not None and run.mode not in PRETRAINING_MODES:
    raise CheckpointError(
        f"{run.workdir} holds a {run.mode!r} run ({source}); the pretraining network is read "
        f"from a run of mode {' or '.join(repr(m) for m in PRETRAINING_MODES)}.")
  build = factory.build_encoder if build_model is None else build_model
  abstract = nnx.eval_shape(lambda: build(config, nnx.Rngs(config.seed)))
  module, step = restore_module(
      abstract, run.directory, under="encoder" if build_model is None else None,
      source=f"{source}: the checkpoints of {run.workdir}",
      hint=f"The network is built from {run.workdir / CONFIG_FILE}; was the checkpoint written "
           f"by another run?")
  return Restored(module, step, run)
