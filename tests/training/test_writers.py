"""The JSON-lines metric log: records in order across resumed runs, no append (object stores have
none), only process 0 writes, and ``read_history`` keeps the last record of each step."""

import io
import json

import jax
import pytest
from etils import epath

from otcxr_jax.training import writers


def _lines(path: epath.Path) -> list[dict]:
  return [json.loads(line) for line in path.read_text().splitlines()]


def test_resumed_log_keeps_earlier_records_and_history_keeps_last_of_each_step(tmp_path):
  first = writers.MetricLog(tmp_path, "run", tensorboard=False)
  first.write(1, {"loss": 3.0})
  first.write(2, {"loss": 2.5, "lr": 0.1})
  first.close()
  resumed = writers.MetricLog(tmp_path, "run", tensorboard=False)  # resumed from step 1
  resumed.write(2, {"loss": 2.0})
  resumed.write(3, {"loss": 1.0})
  path = epath.Path(tmp_path) / "metrics" / "run.jsonl"
  assert resumed.path == path
  assert _lines(path) == [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.5, "lr": 0.1},
                          {"step": 2, "loss": 2.0}, {"step": 3, "loss": 1.0}]
  assert writers.read_history(path) == [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.0},
                                        {"step": 3, "loss": 1.0}]
  assert sorted(p.name for p in path.parent.iterdir()) == ["run.jsonl"]  # no temporary left


def test_log_writes_without_appending(tmp_path):
  """An ``epath`` backend that refuses append mode, as object stores (``gs://``) do."""
  modes = []

  def no_append(open_fn, path, mode):
    modes.append(mode)
    if "a" in mode or "+" in mode:
      raise io.UnsupportedOperation(f"{path}: mode {mode!r} is not supported")
    return open_fn(path, mode)

  with epath.testing.mock_epath(open=no_append):
    for start in (1, 3):  # a run and its resumption
      log = writers.MetricLog(tmp_path, "remote", tensorboard=False)
      log.write(start, {"loss": float(start)})
      log.write(start + 1, {"loss": float(start + 1)})
      log.close()
    history = writers.read_history(log.path)
  assert any("w" in m for m in modes)  # the log was written through the mocked backend
  assert history == [{"step": s, "loss": float(s)} for s in (1, 2, 3, 4)]


def test_only_process_zero_writes(tmp_path, monkeypatch):
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  log = writers.MetricLog(tmp_path, "run", tensorboard=False)
  log.write(1, {"loss": 1.0})
  assert not log.path.exists() and writers.read_history(log.path) == []


@pytest.mark.parametrize("text", ["", "\n\n"])
def test_history_of_an_empty_log_is_empty(tmp_path, text):
  path = epath.Path(tmp_path) / "empty.jsonl"
  path.write_text(text)
  assert writers.read_history(path) == []
