"""Data-parallel sharding over a one-axis ``('data',)`` mesh of every device.

Parameters and optimiser state are replicated; batches are split along their leading axis. Under
``jax.jit`` with these shardings, reductions over the batch (BatchNorm statistics, the
variance/covariance terms, loss means) are global-batch reductions: the result does not depend on
the number of devices. Each process feeds its own slice of the global batch
(``jax.make_array_from_process_local_data``), so the same code runs on one CPU, one GPU, or a
multi-host TPU slice. :func:`to_host` reads results back, whole, on every process.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh named ``('data',)`` over ``devices`` (default: all devices of all processes).

  Devices are ordered by process, then id, so process ``p``'s devices hold the contiguous rows
  ``[p * local_batch, (p + 1) * local_batch)`` of every global batch: the slice
  ``pipeline.train_iterator`` gives process ``p``.
  """
  devices = jax.devices() if devices is None else list(devices)
  devices = sorted(devices, key=lambda d: (d.process_index, d.id))
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(global_batch_size: int, mesh: Mesh, field: str = "train.batch_size") -> None:
  """Refuses a global batch that does not split evenly over devices and processes."""
  n = mesh.devices.size
  if global_batch_size % n:
    raise ValueError(
        f"config.{field}={global_batch_size} must be divisible by the number of devices ({n}).")
  if global_batch_size % jax.process_count():
    raise ValueError(f"config.{field}={global_batch_size} must be divisible by the number of "
                     f"processes ({jax.process_count()}).")


def host_local_batch_size(global_batch_size: int) -> int:
  """Examples each process loads per step."""
  return global_batch_size // jax.process_count()


def to_global(batch: Any, mesh: Mesh) -> Any:
  """Turns a per-process numpy batch (pytree) into globally sharded ``jax.Array`` s.

  Each of the ``n`` processes passes its own ``(local_batch, ...)`` slice; the global arrays are
  ``(n * local_batch, ...)`` with process ``p``'s rows at ``[p * local_batch, (p + 1) *
  local_batch)`` (for a mesh from :func:`make_mesh`). Every process must call this with the same
  tree structure and shapes.
  """
  sharding = batch_sharded(mesh)
  processes = len({d.process_index for d in mesh.devices.flat})

  def to_array(x):
    x = np.asarray(x)
    if x.ndim == 0 or x.shape[0] % mesh.local_mesh.devices.size:
      raise ValueError(f"a per-process batch of shape {x.shape} does not split over the "
                       f"{mesh.local_mesh.devices.size} local devices of the mesh")
    return jax.make_array_from_process_local_data(sharding, x,
                                                  (x.shape[0] * processes, *x.shape[1:]))

  return jax.tree.map(to_array, batch)


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places a pytree of arrays replicated on every device of ``mesh``."""
  return jax.device_put(tree, replicated(mesh))


def to_host(tree: Any) -> Any:
  """Numpy copies of a pytree of arrays, whole and identical on every process.

  With one process this is ``jax.device_get``. With several, ``jax.device_get`` refuses a global
  array whose shards other processes hold (a batch-sharded output, say), so every leaf is
  all-gathered (``multihost_utils.process_allgather(..., tiled=True)``):

  * a global ``jax.Array`` (e.g. from :func:`to_global` or a sharded ``jax.jit``) comes back as
    the whole global array;
  * a process-local array (numpy, or a ``jax.Array`` on this process's devices only) comes back
    as every process's copy concatenated along axis 0 in process order, which for per-process
    batch slices is the layout of the global batch :func:`to_global` makes of them.

  With several processes this is a collective: every process must call it with the same tree
  structure, shapes and dtypes; process-local leaves need at least one axis.
  """
  if jax.process_count() == 1:
    return jax.device_get(tree)
  return multihost_utils.process_allgather(tree, tiled=True)
