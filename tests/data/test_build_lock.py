"""One build of a dataset at a time: the lock waits for its holder, and two processes asked to
prepare the same synthetic dataset at once both end with it prepared, built once."""

import os
import pathlib
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from otcxr_jax.data import build_lock

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_a_second_holder_waits_for_the_first_and_is_told_whom(tmp_path):
  said, acquired = [], threading.Event()

  def second():
    with build_lock.build_lock(tmp_path / "cfg", label="ds/cfg", say=said.append):
      acquired.set()

  with build_lock.build_lock(tmp_path / "cfg", label="ds/cfg", say=said.append):
    assert f"pid {os.getpid()}" in (tmp_path / "cfg" / build_lock.LOCK_FILE).read_text()
    thread = threading.Thread(target=second)
    thread.start()
    deadline = time.monotonic() + 30
    while not said and time.monotonic() < deadline:  # the second is told, then waits
      time.sleep(0.01)
    assert not acquired.wait(0.3)  # held: the second waits
    assert len(said) == 1 and said[0].startswith(f"ds/cfg: host ")
    assert f"pid {os.getpid()}" in said[0] and "waiting" in said[0]
  assert acquired.wait(10)
  thread.join(10)
  assert "ended after" in said[1]


def test_the_lock_of_a_remote_directory_is_not_taken(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # a remote path taken for a local one would be made here ('gs:/')
  with build_lock.build_lock("gs://bucket/tfds/ds/cfg", label="ds/cfg", say=pytest.fail):
    pass
  assert not any(tmp_path.iterdir())


_BUILD = """
    import sys
    from otcxr_jax.data import tfds_source
    from tfds_builders.synthetic_cxr import SyntheticCxrConfig
    config = SyntheticCxrConfig(name="lock", resolution=32, num_patients=12, seed=1)
    tfds_source.ensure_built("synthetic_cxr", data_dir=sys.argv[1], config=config)
    print("read", len(tfds_source.data_source("synthetic_cxr", "train", data_dir=sys.argv[1],
                                               config=config)))
"""


def test_two_processes_preparing_one_dataset_at_once_both_read_it(tmp_path):
  data_dir = tmp_path / "tfds"
  logs = [tmp_path / f"process_{i}.log" for i in range(2)]
  # Held here until both processes wait on it, so their builds certainly overlap.
  with build_lock.build_lock(data_dir / "synthetic_cxr" / "lock", label="test"):
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(_BUILD), str(data_dir)],
                              cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT)
             for log in logs]
    deadline = time.monotonic() + 120
    while not all("waiting" in log.read_text() for log in logs):
      assert time.monotonic() < deadline, [log.read_text()[-2000:] for log in logs]
      assert all(p.poll() is None for p in procs), [log.read_text()[-2000:] for log in logs]
      time.sleep(0.2)
  for p in procs:
    p.wait(120)
  outputs = [log.read_text() for log in logs]
  assert [p.returncode for p in procs] == [0, 0], [o[-3000:] for o in outputs]
  # One built it, the other found it afterwards; both read the same training split.
  assert sorted("synthetic_cxr/lock: preparing in" in o for o in outputs) == [False, True]
  assert sum("prepared meanwhile by another process" in o for o in outputs) == 1
  counts = {line for o in outputs for line in o.splitlines() if line.startswith("read ")}
  assert len(counts) == 1 and int(counts.pop().split()[1]) > 0
  assert not list((data_dir / "synthetic_cxr" / "lock").glob("incomplete*"))
