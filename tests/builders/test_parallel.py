"""cxr_base.parallel.ExamplePool: worker processes give what this process gives, in order."""

import os

import pytest

from tfds_builders.cxr_base import parallel


def _offset_state(offset):
  return {"offset": offset, "pid": os.getpid()}


def _add(state, record):
  return record + state["offset"], state["pid"]


def _die(state, record):
  del state
  if record == 5:
    os._exit(3)  # a worker killed mid-chunk
  return record


@pytest.mark.parametrize("processes", [1, 2])
def test_results_are_in_input_order(processes):
  records = list(range(3 * parallel.CHUNK_SIZE + 7))  # a partial last chunk
  with parallel.ExamplePool(_offset_state, (1000,), processes=processes, min_records=0) as pool:
    out = list(pool.map(_add, records))
  assert [value for value, _ in out] == [r + 1000 for r in records]
  pids = {pid for _, pid in out}
  if processes == 1:
    assert pids == {os.getpid()}
  else:
    assert os.getpid() not in pids and 1 <= len(pids) <= 2


def test_a_small_map_runs_in_this_process_and_makes_the_state_once():
  with parallel.ExamplePool(_offset_state, (5,), processes=2, min_records=10) as pool:
    first = list(pool.map(_add, [1, 2, 3]))
    second = list(pool.map(_add, [4]))
  assert [v for v, _ in first + second] == [6, 7, 8, 9]
  assert {pid for _, pid in first + second} == {os.getpid()}
  assert pool._executor is None  # no worker was started


def test_a_dead_worker_is_an_error_that_says_what_to_check():
  with parallel.ExamplePool(_offset_state, (0,), processes=2, min_records=0) as pool:
    with pytest.raises(parallel.WorkerError, match="if __name__ == '__main__'"):
      list(pool.map(_die, list(range(10))))


@pytest.mark.parametrize("processes", [0, -1, 1.5, True])
def test_processes_must_be_a_positive_int(processes):
  with pytest.raises(ValueError, match="processes must be a positive int"):
    parallel.ExamplePool(_offset_state, (0,), processes=processes)
