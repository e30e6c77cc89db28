"""Making a build's examples in worker processes, in order: decoding or rendering is its cost.

Each example is a function of its own record alone (a file to decode and resize, a phantom's row
of parameters), and writing one takes a small fraction of making it. ``ExamplePool.map`` makes
them in spawned worker processes, a chunk at a time, and yields them in input order, so the files
a build writes are the same bytes as a one-process build's. At most ``2 * processes`` chunks are in
flight, so memory stays bounded however far the workers run ahead of the writer.

Example::

  with ExamplePool(make_state, (arg,)) as pool:      # make_state(arg) runs once per process
    for result in pool.map(make_example, records):  # make_example(state, record), in order
      ...

``make_state`` and ``make_example`` must be module-level functions and the records picklable:
workers are spawned, not forked (the parent may hold threads: JAX's, the input pipeline's).
"""

from __future__ import annotations

import collections
import concurrent.futures
import multiprocessing
import os
from typing import Any, Callable, Iterator, Sequence

#: Fewer records than this are made in this process: starting a worker (a fresh interpreter
#: importing the builder, about 0.7 s) costs more than it saves.
MIN_RECORDS = 1000
#: Records per task sent to a worker.
CHUNK_SIZE = 32
#: At most this many worker processes by default.
MAX_PROCESSES = 16

_state: Any = None  # a worker's make_state(*args)


def available_cores() -> int:
  """The CPU cores this process may run on."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not Linux
    return os.cpu_count() or 1


def _initialise(make_state: Callable[..., Any], args: tuple[Any, ...]) -> None:
  global _state
  _state = make_state(*args)


def _run_chunk(make_example: Callable[[Any, Any], Any], chunk: Sequence[Any]) -> list[Any]:
  return [make_example(_state, record) for record in chunk]


class ExamplePool:
  """Worker processes that make examples; a context manager (it stops them on exit).

  Args:
    make_state: called once in each process that makes examples (and in this one when it makes
      them itself) with ``args``; what it returns is ``make_example``'s first argument.
    args: picklable arguments of ``make_state``.
    processes: worker processes; ``None``: every available core (at most ``MAX_PROCESSES``).
      With 1, or for a ``map`` of fewer than ``min_records`` records, this process makes them.
    min_records: the smallest ``map`` sent to workers (None: ``MIN_RECORDS``).
  """

  def __init__(self, make_state: Callable[..., Any], args: tuple[Any, ...] = (), *,
               processes: int | None = None, min_records: int | None = None):
    if processes is not None and (isinstance(processes, bool) or not isinstance(processes, int)
                                  or processes < 1):
      raise ValueError(f"processes must be a positive int or None, got {processes!r}")
    self._make_state, self._args = make_state, args
    self.processes = processes or min(available_cores(), MAX_PROCESSES)
    self._min_records = MIN_RECORDS if min_records is None else min_records
    self._executor: concurrent.futures.ProcessPoolExecutor | None = None
    self._local: list[Any] = []  # [state] once this process has made it

  def __enter__(self) -> "ExamplePool":
    return self

  def __exit__(self, *exc_info: Any) -> None:
    self.close()

  def close(self) -> None:
    """Stops the workers (pending chunks are cancelled)."""
    if self._executor is not None:
      self._executor.shutdown(wait=True, cancel_futures=True)
      self._executor = None

  def map(self, make_example: Callable[[Any, Any], Any], records: Sequence[Any]
          ) -> Iterator[Any]:
    """``make_example(state, record)`` of every record, in order."""
    if self.processes == 1 or len(records) < self._min_records:
      if not self._local:
        self._local.append(self._make_state(*self._args))
      state = self._local[0]
      return (make_example(state, record) for record in records)
    return self._parallel(make_example, records)

  def _parallel(self, make_example: Callable[[Any, Any], Any], records: Sequence[Any]
                ) -> Iterator[Any]:
    if self._executor is None:
      self._executor = concurrent.futures.ProcessPoolExecutor(
          self.processes, mp_context=multiprocessing.get_context("spawn"),
          initializer=_initialise, initargs=(self._make_state, self._args))
    chunks = (records[i:i + CHUNK_SIZE] for i in range(0, len(records), CHUNK_SIZE))
    pending: collections.deque[concurrent.futures.Future] = collections.deque()
    for chunk in chunks:
      pending.append(self._executor.submit(_run_chunk, make_example, chunk))
      if len(pending) >= 2 * self.processes:
        yield from _result(pending.popleft())
    while pending:
      yield from _result(pending.popleft())


def _result(future: concurrent.futures.Future) -> list[Any]:
  try:
    return future.result()
  except concurrent.futures.process.BrokenProcessPool as e:
    raise WorkerError(
        "a worker process making the dataset's examples stopped abruptly: killed (out of "
        "memory?) or unable to start. Workers are spawned and import the main module: a script "
        "that builds a dataset must do it under `if __name__ == '__main__':`. The builder's "
        "`processes=1` builds in this process.") from e


class WorkerError(RuntimeError):
  """A worker process died; the message says what to check."""
