"""orbax checkpoints of the train state and the data iterator, resumed from the workdir.

A checkpoint holds the whole :class:`~otcxr_jax.training.state.TrainState` (model, optimiser,
step, PRNG key) and the grain iterator position, so a resumed run continues exactly: the same next
batch and the same parameters as an uninterrupted one.

Before a step is read, its stored tree (orbax metadata) is compared with the expected one, so a
checkpoint of another architecture fails with :class:`CheckpointMismatchError` naming the first
differing parameter. A step that cannot be read (a truncated or emptied file) fails with
:class:`DamagedCheckpointError` naming the step, the file where known and the reason; resuming
(:meth:`Checkpointer.restore_newest_intact`) then falls back to the newest intact step.
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from otcxr_jax import errors

STATE_ITEM = "state"  # the Composite item name the train state is saved under
DATA_ITEM = "data"    # ... and the data iterator's
DAMAGED_SUFFIX = ".damaged"  # a damaged step set aside: '<step>.damaged[N]' (no step for orbax)
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
  _quiet_closed_event_loops()
  try:
    return tree_shapes(ocp.StandardCheckpointHandler().metadata(step_dir / STATE_ITEM))
  except Exception as e:  # pylint: disable=broad-except
    raise DamagedCheckpointError(step, step_dir, failure_reason(e, step_dir)) from e


def _quiet_closed_event_loops() -> None:
  """Installed before a step is read. After a failed read, tensorstore completes the reads still
  in flight on orbax's closed event loop, and each completion prints an unraisable
  ``RuntimeError('Event loop is closed')`` traceback (dozens of lines, any time later). Those,
  and only those, are dropped."""
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
