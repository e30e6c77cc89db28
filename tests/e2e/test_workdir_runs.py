"""Run integrity of a workdir, as a user sees it: a rerun with another config is refused before
anything is written (exit 2, the fields with old and new values), more steps continue, the
override records the change; one run at a time (a lock naming its holder, stale locks taken
over); a damaged latest checkpoint falls back to the newest intact step in one line; the metric
log holds each step once after resumptions; a finished evaluation is not scored again with
another config.

End to end: the runs (the unit tests are in tests/training/test_workdir_integrity.py)."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from otcxr_jax.modes import finetune, knn, pretrain
from otcxr_jax.training import checkpoint as ckpt_lib
from otcxr_jax.training import workdir as workdir_lib
from tests.e2e.shared_runs import TINY_GROUP
from tests.tiny import tiny_config
from tests.training.test_workdir_integrity import _REPO, _files

pytestmark = pytest.mark.xdist_group(TINY_GROUP)


@pytest.fixture(scope="module")
def root(tiny_pretraining):
  """The folder of the finished 2-step tiny pretraining run (tests/e2e/shared_runs.py): its data
  set, built once, in ``tfds``, and the workdir ``pretrain`` (checkpoints at steps 1 and 2)."""
  return tiny_pretraining[1]


@pytest.fixture
def run_dir(root, tmp_path):
  """A copy of the finished pretraining workdir, for one test to change."""
  workdir = tmp_path / "run"
  shutil.copytree(root / "pretrain", workdir)
  return workdir


def _config(root, **train):
  c = tiny_config(root / "tfds")
  for name, value in train.items():
    c.train[name] = value
  return c


def _main(root, workdir, *flags, **popen):
  """``python -m otcxr_jax.main`` on the tiny config; a Popen when ``popen`` is given, else the
  finished process."""
  config_file = root / "tiny_config_file.py"
  if not config_file.exists():
    config_file.write_text(textwrap.dedent(f"""
        from tests.tiny import tiny_config

        def get_config():
          return tiny_config({str(root / 'tfds')!r})
        """))
  command = [sys.executable, "-m", "otcxr_jax.main", f"--config={config_file}",
             f"--workdir={workdir}", *flags]
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  if popen:
    return subprocess.Popen(command, cwd=_REPO, env=env, text=True, **popen)
  return subprocess.run(command, cwd=_REPO, env=env, text=True, capture_output=True, timeout=300)


def _history(workdir) -> list[dict]:
  path = workdir / workdir_lib.HISTORY_FILE
  return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_rerun_with_another_batch_size_exits_2_and_changes_nothing(root, run_dir):
  before = _files(run_dir)
  done = _main(root, run_dir, "--config.train.batch_size=16")
  assert done.returncode == 2, done.stderr
  assert "Traceback" not in done.stderr
  assert "train.batch_size 8 -> 16" in done.stderr
  assert str(run_dir / "config.json") in done.stderr
  assert _files(run_dir) == before  # config.json byte-identical, no lock or history left

  # The same through the Python API, several fields at once, each named with both values.
  config = _config(root)
  config.optim.base_learning_rate = 0.5
  config.data.image_size = 64
  with pytest.raises(workdir_lib.ConfigChangeError) as error:
    pretrain.run(config, str(run_dir))
  message = str(error.value)
  assert "data.image_size 32 -> 64" in message
  assert f"optim.base_learning_rate {tiny_config(root / 'tfds').optim.base_learning_rate!r} -> 0.5" \
      in message
  assert _files(run_dir) == before


def test_rerun_with_more_steps_continues_from_the_checkpoint(root, run_dir, capsys):
  result = pretrain.run(_config(root, num_steps=3), str(run_dir))
  assert result.resumed_from == 2
  assert [h["step"] for h in result.history] == [3]
  out = capsys.readouterr().out
  assert "config changed (train.num_steps 2 -> 3)" in out
  assert "[pretrain] resumed from step 2" in out
  assert json.loads((run_dir / "config.json").read_text())["train"]["num_steps"] == 3
  [record] = _history(run_dir)
  assert record["changes"] == {"train.num_steps": {"old": 2, "new": 3, "allowed_by": "resumable"}}
  assert record["host"] == socket.gethostname() and record["mode"] == "pretrain"


def test_override_accepts_a_change_and_records_it(root, run_dir, capsys):
  config = _config(root, num_steps=3, on_nonfinite="skip")
  with pytest.raises(workdir_lib.ConfigChangeError, match=r"train.on_nonfinite 'stop' -> 'skip'"):
    pretrain.run(config, str(run_dir))
  config.allow_config_change = True
  result = pretrain.run(config, str(run_dir))
  assert result.resumed_from == 2 and int(result.state.step) == 3
  assert "accepted by allow_config_change: train.on_nonfinite" in capsys.readouterr().out
  stored = json.loads((run_dir / "config.json").read_text())
  assert stored["train"]["on_nonfinite"] == "skip" and stored["train"]["num_steps"] == 3
  assert stored["allow_config_change"] is False
  [record] = _history(run_dir)
  assert record["changes"] == {
      "train.num_steps": {"old": 2, "new": 3, "allowed_by": "resumable"},
      "train.on_nonfinite": {"old": "stop", "new": "skip", "allowed_by": "allow_config_change"}}
  assert "time" in record

  # The workdir now holds the new values: the same config without the flag is no change.
  config.allow_config_change = False
  pretrain.run(config, str(run_dir))
  assert len(_history(run_dir)) == 1


def test_a_finished_finetune_is_not_scored_again_with_another_image_size(root):
  config = tiny_config(root / "tfds", mode="finetune")
  f = config.finetune
  f.init, f.split, f.batch_size, f.num_steps, f.eval_every, f.warmup_steps = (
      "random", "train", 4, 2, 2, 1)
  config.train.checkpoint_every = 100
  workdir = root / "finetune"
  finetune.run(config, str(workdir))
  before = _files(workdir)

  config.data.image_size = 64
  with pytest.raises(workdir_lib.ConfigChangeError) as error:
    finetune.run(config, str(workdir))
  assert "holds a finished finetune run" in str(error.value)
  assert "data.image_size 32 -> 64" in str(error.value)
  config.data.image_size = 32
  config.finetune.num_steps = 4  # more steps would continue an unfinished run; not a finished one
  with pytest.raises(workdir_lib.ConfigChangeError, match=r"finetune.num_steps 2 -> 4"):
    finetune.run(config, str(workdir))
  assert _files(workdir) == before  # metrics.json and config.json untouched


def test_an_evaluation_beside_the_pretraining_run_keeps_its_own_config(root, run_dir):
  before = (run_dir / "config.json").read_bytes()
  config = tiny_config(root / "tfds", mode="knn")
  config.knn.k = 5
  knn.run(config, str(run_dir))  # probe.checkpoint_dir='': this workdir's pretraining run
  assert (run_dir / "config.json").read_bytes() == before
  assert json.loads((run_dir / "config_knn.json").read_text())["knn"]["k"] == 5
  config.knn.k = 3
  with pytest.raises(workdir_lib.ConfigChangeError, match=r"finished knn run.*knn.k 5 -> 3"):
    knn.run(config, str(run_dir))


def test_a_second_concurrent_run_exits_at_once_naming_the_holder(root, run_dir):
  first = _main(root, run_dir, "--config.train.num_steps=100000", stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT)
  try:
    for line in first.stdout:  # training started: the lock is held
      if line.startswith("[pretrain] step "):
        break
    holder = json.loads((run_dir / workdir_lib.LOCK_FILE).read_text())
    assert holder["pid"] == first.pid and holder["host"] == socket.gethostname()
    first.send_signal(signal.SIGSTOP)  # still holding the lock, without training meanwhile
    start = time.time()
    second = _main(root, run_dir, "--config.train.num_steps=100000")
    assert time.time() - start < 60  # no data read, nothing compiled
    first.send_signal(signal.SIGCONT)
    assert second.returncode == 2, second.stderr
    assert "Traceback" not in second.stderr
    assert (f"is in use by another run: host {socket.gethostname()}, pid {first.pid}, started "
            f"{holder['started']}") in second.stderr
    assert str(run_dir / workdir_lib.LOCK_FILE) in second.stderr
    first.send_signal(signal.SIGTERM)  # preemption: checkpoint, exit 0, lock released
    rest, _ = first.communicate(timeout=120)
  finally:
    if first.poll() is None:
      first.kill()
  assert first.returncode == 0, rest
  assert not (run_dir / workdir_lib.LOCK_FILE).exists()


def _dead_pid() -> int:
  process = subprocess.Popen([sys.executable, "-c", "pass"])
  process.wait()
  return process.pid


def _write_lock(workdir, **holder):
  holder = {"host": socket.gethostname(), "pid": os.getpid(), "started": "2024-01-01T00:00:00",
            "command": "python -m otcxr_jax.main ...", "token": "x",
            "heartbeat_unix": time.time(), **holder}
  (workdir / workdir_lib.LOCK_FILE).write_text(json.dumps(holder))


def test_a_stale_lock_is_taken_over_with_a_warning(root, run_dir, capsys):
  pid = _dead_pid()
  _write_lock(run_dir, pid=pid)
  pretrain.run(_config(root), str(run_dir))  # finished: nothing to train
  err = capsys.readouterr().err
  assert f"Warning: taking over the stale lock {run_dir / workdir_lib.LOCK_FILE}" in err
  assert f"pid {pid}" in err and f"no process {pid} runs on this host" in err
  assert not (run_dir / workdir_lib.LOCK_FILE).exists()

  # Another host's lock: held while its heartbeat is recent, stale once it is old.
  _write_lock(run_dir, host="elsewhere", pid=1)
  with pytest.raises(workdir_lib.WorkdirInUseError, match=r"host elsewhere, pid 1, started"):
    pretrain.run(_config(root), str(run_dir))
  _write_lock(run_dir, host="elsewhere", pid=1,
              heartbeat_unix=time.time() - workdir_lib.STALE_AFTER_S - 60)
  pretrain.run(_config(root), str(run_dir))
  assert "its last heartbeat was" in capsys.readouterr().err
  assert not (run_dir / workdir_lib.LOCK_FILE).exists()


def test_lock_is_released_on_errors_and_on_sigterm(root, run_dir, tmp_path):
  config = _config(root, batch_size=16)
  with pytest.raises(workdir_lib.ConfigChangeError):
    pretrain.run(config, str(run_dir))
  assert not (run_dir / workdir_lib.LOCK_FILE).exists()

  # SIGTERM outside the train loop: the process ends as before, without leaving the lock.
  script = textwrap.dedent(f"""
      import os, signal, sys, time
      from tests.tiny import tiny_config
      from otcxr_jax.training import workdir
      with workdir.open_run(tiny_config({str(root / 'tfds')!r}), {str(tmp_path / 'w')!r}):
        print("locked", flush=True)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
      sys.exit(3)
      """)
  done = subprocess.run([sys.executable, "-c", script], cwd=_REPO, capture_output=True,
                        text=True, timeout=120, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert done.returncode == -signal.SIGTERM and "locked" in done.stdout, done.stderr
  assert not (tmp_path / "w" / workdir_lib.LOCK_FILE).exists()


def _truncate_largest_array_file(step_dir) -> str:
  data = step_dir / "state" / "d"
  path = max(data.iterdir(), key=lambda p: p.stat().st_size)
  with open(path, "r+b") as f:
    f.truncate(100)
  return str(path)


@pytest.mark.parametrize("damage", ["truncated", "empty_metadata"])
def test_damaged_latest_checkpoint_resumes_from_the_previous_step(root, run_dir, capsys, damage):
  directory = run_dir / "checkpoints" / "pretrain"
  if damage == "truncated":
    where = _truncate_largest_array_file(directory / "2")
    why = "is not valid for value of size 100"
  else:
    where = str(directory / "2" / "state" / "_METADATA")
    (directory / "2" / "state" / "_METADATA").write_text("")
    why = "_METADATA: empty"

  result = pretrain.run(_config(root), str(run_dir))
  assert result.resumed_from == 1 and [h["step"] for h in result.history] == [2]
  err = capsys.readouterr().err
  lines = [line for line in err.splitlines() if "checkpoint step 2" in line]
  assert len(lines) == 1, err
  assert where in lines[0] and why in lines[0] and "resuming from step 1" in lines[0]
  assert "Traceback" not in err and "Event loop is closed" not in err
  assert sorted(p.name for p in directory.iterdir()) == ["1", "2", "2.damaged"]  # step 2 saved again

  # An evaluation of a damaged latest step names it instead of using an older one.
  shutil.copytree(directory / "2.damaged", directory / "3")
  with pytest.raises(ckpt_lib.DamagedCheckpointError, match=rf"checkpoint step 3 .*{why}"):
    ckpt_lib.restore_network(directory, _config(root))


def test_no_intact_checkpoint_is_one_clear_error(root, run_dir):
  directory = run_dir / "checkpoints" / "pretrain"
  _truncate_largest_array_file(directory / "2")
  (directory / "1" / "state" / "_METADATA").write_text("")
  before = _files(run_dir)
  done = _main(root, run_dir)
  assert done.returncode == 2, done.stderr
  assert "Traceback" not in done.stderr
  [error] = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
  assert f"no checkpoint in {directory} can be read: step 2: " in error
  assert f"step 1: {directory / '1' / 'state' / '_METADATA'}: empty" in error
  assert _files(run_dir) == before  # nothing moved


def test_metric_log_holds_each_step_once_after_two_resumptions(root, tmp_path):
  workdir = tmp_path / "run"
  log = workdir / "metrics" / "pretrain.jsonl"
  directory = workdir / "checkpoints" / "pretrain"
  for attempt in range(3):
    result = pretrain.run(_config(root), str(workdir))
    assert result.resumed_from == (1 if attempt else None)
    # As if the process had died while saving step 2 (after logging it): orbax's temporary
    # folder instead of the step.
    (directory / "2").rename(directory / f"2.orbax-checkpoint-tmp-{attempt}")
  steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
  assert steps == [1, 2]
  assert not (directory / "2.orbax-checkpoint-tmp-0").exists()  # cleaned up by the next run
