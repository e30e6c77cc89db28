"""grain input pipelines: random-access source -> shuffled, repeated, per-process batches.

Every process reads its own slice of each *global* batch, so the sequence of global batches depends
only on the seed and the global batch size, not on how many processes or devices share the work:
global example ``g = step * global_batch + process_index * local_batch + j``. Iterators are grain
``DatasetIterator`` s whose state (one integer) is checkpointed with the model, so a resumed run
sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Mapping, Sequence

import grain
import numpy as np

Transform = Callable[[Mapping[str, Any]], dict[str, np.ndarray]]


class _ProcessSlice(grain.MapDataset):
  """Element ``k`` of process ``p``'s stream: global element of the same batch slot."""

  def __init__(self, parent: grain.MapDataset, *, process_index: int, process_count: int,
               local_batch_size: int):
    super().__init__(parent)
    self._p, self._n, self._b = process_index, process_count, local_batch_size

  def __len__(self) -> int:
    return len(self._parent) // self._n

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    step, j = divmod(index, self._b)
    return self._parent[(step * self._n + self._p) * self._b + j]

  def __str__(self) -> str:
    return f"ProcessSlice(process={self._p}/{self._n}, local_batch={self._b})"


def select_keys(keys: Sequence[str]) -> Transform:
  """A transform that keeps ``keys`` of a record as numpy arrays (drops strings, ids, ...)."""
  keys = tuple(keys)

  def transform(record: Mapping[str, Any]) -> dict[str, np.ndarray]:
    missing = [k for k in keys if k not in record]
    if missing:
      raise KeyError(f"record has no field(s) {missing}; it has {sorted(record)}")
    return {k: np.asarray(record[k]) for k in keys}

  return transform


def train_iterator(source, *, global_batch_size: int, seed: int, transform: Transform,
                   process_index: int = 0, process_count: int = 1,
                   num_threads: int = 2, prefetch: int = 4) -> grain.DatasetIterator:
  """Infinite iterator of shuffled (reshuffled every epoch) per-process batches."""
  if len(source) < global_batch_size:
    raise ValueError(f"the training split has {len(source)} examples, fewer than one global "
                     f"batch ({global_batch_size}); lower config.train.batch_size.")
  local = global_batch_size // process_count
  ds = grain.MapDataset.source(source).shuffle(seed=seed).repeat()
  ds = _ProcessSlice(ds, process_index=process_index, process_count=process_count,
                     local_batch_size=local)
  ds = ds.map(transform).batch(local, drop_remainder=True)
  return iter(ds.to_iter_dataset(
      grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)))


class _ArrayBatches(grain.MapDataset):
  """Element ``s``: process ``p``'s slice of global batch ``s`` of in-memory arrays, the examples
  of each epoch in their own seeded random order (the remainder of an epoch is dropped)."""

  def __init__(self, arrays: Mapping[str, np.ndarray], *, global_batch_size: int, seed: int,
               process_index: int, process_count: int):
    super().__init__()
    self._arrays = {k: np.asarray(v) for k, v in arrays.items()}
    self._n = len(next(iter(self._arrays.values())))
    self._global, self._local = global_batch_size, global_batch_size // process_count
    self._offset = process_index * self._local
    self._seed, self._epoch, self._order = seed, None, None

  def __len__(self) -> int:
    return sys.maxsize  # endless: every step has a batch

  def __getitem__(self, step):
    if isinstance(step, slice):
      return self.slice(step)
    epoch, k = divmod(step, self._n // self._global)
    if epoch != self._epoch:
      self._order = np.random.default_rng((self._seed, epoch)).permutation(self._n)
      self._epoch = epoch
    start = k * self._global + self._offset
    index = self._order[start:start + self._local]
    return {key: value[index] for key, value in self._arrays.items()}

  def __str__(self) -> str:
    return f"ArrayBatches(examples={self._n}, local_batch={self._local})"


def array_batches(arrays: Mapping[str, np.ndarray], *, global_batch_size: int, seed: int,
                  process_index: int = 0, process_count: int = 1) -> grain.DatasetIterator:
  """``train_iterator`` for examples already in memory as equal-length arrays (e.g. frozen
  features): an endless, checkpointable iterator of per-process batches, reshuffled every epoch,
  that slices whole batches instead of stacking records (a linear probe's step is otherwise
  dominated by building its batches)."""
  lengths = {k: len(v) for k, v in arrays.items()}
  if not lengths or len(set(lengths.values())) != 1:
    raise ValueError(f"array_batches needs arrays of one length, got lengths {lengths}")
  n = next(iter(lengths.values()))
  if n < global_batch_size:
    raise ValueError(f"the training split has {n} examples, fewer than one global batch "
                     f"({global_batch_size}); lower the batch size.")
  ds = _ArrayBatches(arrays, global_batch_size=global_batch_size, seed=seed,
                     process_index=process_index, process_count=process_count)
  return iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)))


def eval_batches(source, *, batch_size: int, transform: Transform, process_index: int = 0,
                 process_count: int = 1, num_threads: int = 2):
  """One ordered pass over a split in batches; the last batch is padded and masked.

  Yields ``(batch, mask)`` with ``mask[i]`` False for padding, so every example counts once.
  Process ``p`` reads examples ``p, p + n, ...`` (in order) of ``n`` processes.
  """
  ds = grain.MapDataset.source(source)[process_index::process_count].map(transform)
  it = iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=8)))
  buffer = []
  for record in it:
    buffer.append(record)
    if len(buffer) == batch_size:
      yield _stack(buffer), np.ones(batch_size, bool)
      buffer = []
  if buffer:
    n = len(buffer)
    buffer += [buffer[-1]] * (batch_size - n)
    mask = np.zeros(batch_size, bool)
    mask[:n] = True
    yield _stack(buffer), mask


def _stack(records: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  return {k: np.stack([r[k] for r in records]) for k in records[0]}


