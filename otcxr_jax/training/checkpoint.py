"""orbax checkpoints of the train state and the data iterator, resumed from the workdir.

A checkpoint holds the whole :class:`~otcxr_jax.training.state.TrainState` (model, optimiser,
step, PRNG key) and the grain iterator position, so a resumed run continues exactly: the same next
batch and the same parameters as an uninterrupted one.
"""

from __future__ import annotations

import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from etils import epath


class Checkpointer:
  """Saves every ``save_every`` steps (and on demand), keeps the newest ``max_to_keep``."""

  def __init__(self, directory: str | epath.PathLike, *, save_every: int, max_to_keep: int = 3):
    self.directory = absolute(directory)
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                             enable_async_checkpointing=False))
    self._save_every = save_every

  @property
  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def restore(self, abstract_state: Any, data_iterator: Any | None = None,
              step: int | None = None):
    """Restores ``step`` (default: latest) into the structure/shardings of ``abstract_state``.

    Returns the restored state, or ``None`` when the directory holds no checkpoint. The data
    iterator, when given, is moved to its saved position in place.
    """
    step = self.latest_step if step is None else step
    if step is None:
      return None
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    return restored["state"]

  def maybe_save(self, step: int, state: Any, data_iterator: Any | None = None,
                 force: bool = False) -> bool:
    if not force and (self._save_every <= 0 or step % self._save_every):
      return False
    if self._manager.latest_step() == step:
      return False
    items = {"state": ocp.args.StandardSave(state)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    self._manager.save(step, args=ocp.args.Composite(**items), force=True)
    return True

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


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
