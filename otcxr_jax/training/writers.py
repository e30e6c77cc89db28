"""Metric logging: a JSON-lines history (read by reports) and TensorBoard scalars via clu.

``clu.metric_writers`` imports TensorFlow for its summary writer, so it is imported lazily here
and only by the process that writes; the data path and the train step never import TensorFlow.
"""

from __future__ import annotations

import json
from typing import Mapping

import jax
from etils import epath


class MetricLog:
  """Writes ``{"step": s, **scalars}`` records to ``<workdir>/metrics/<name>.jsonl``, one a line.

  Object stores (``gs://`` and the like, through ``etils.epath``) cannot append to a file, so each
  :meth:`write` rewrites the whole file: the lines it held when the log was opened (a resumed
  run's earlier records), then this run's. The text goes to a temporary file renamed over the log,
  so a reader never sees it half-written. Each write costs the size of the file (a few hundred
  bytes a record). Only process 0 writes.

  ``resumed_from``: the step the run restored (0 for a run from the start). Earlier records of
  later steps were logged after the last checkpoint of an interrupted run; the run logs those
  steps again, so they are dropped (from the file at the first :meth:`write`), and the log holds
  each step once after any number of resumptions. ``None`` keeps every earlier record.
  """

  def __init__(self, workdir: str | epath.PathLike, name: str, *, tensorboard: bool = True,
               resumed_from: int | None = None):
    self._active = jax.process_index() == 0
    self.path = epath.Path(workdir) / "metrics" / f"{name}.jsonl"
    self._tmp = self.path.with_name(f"{self.path.name}.tmp")
    self._lines: list[str] = []
    self._tb = None
    if self._active:
      self.path.parent.mkdir(parents=True, exist_ok=True)
      if self.path.exists():
        self._lines = [line for line in self.path.read_text().splitlines() if line.strip()]
        if resumed_from is not None:
          self._lines = [line for line in self._lines if _step(line) <= resumed_from]
      if tensorboard:
        from clu import metric_writers  # imports TensorFlow: writer process only
        self._tb = metric_writers.SummaryWriter(str(epath.Path(workdir) / "tensorboard" / name))

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self._active:
      return
    record = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
    self._lines.append(json.dumps(record))
    self._tmp.write_text("".join(f"{line}\n" for line in self._lines))
    self._tmp.replace(self.path)
    if self._tb is not None:
      self._tb.write_scalars(int(step), {k: v for k, v in record.items() if k != "step"})

  def close(self) -> None:
    if self._tb is not None:
      self._tb.flush()
      self._tb.close()


def _step(line: str) -> float:
  """The step of a record line; a line that is no record (cut short by a crash) sorts last."""
  try:
    return int(json.loads(line)["step"])
  except (ValueError, KeyError, TypeError):
    return float("inf")


def read_history(path: str | epath.PathLike) -> list[dict[str, float]]:
  """Reads a history, keeping the last record of each step (a resumed run rewrites steps)."""
  path = epath.Path(path)
  if not path.exists():
    return []
  by_step: dict[int, dict] = {}
  for line in path.read_text().splitlines():
    if line.strip():
      record = json.loads(line)
      by_step[record["step"]] = record
  return [by_step[s] for s in sorted(by_step)]
