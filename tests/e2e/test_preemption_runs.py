"""Preemption (SIGTERM -> checkpoint, clean exit, exact resumption) and non-finite-loss policies.

End to end: the runs (the unit tests are in tests/training/test_preemption.py)."""

import signal
import subprocess
import sys

import numpy as np

from tests.training.test_preemption import _CHILD, _REPO, _params, run_toy


def test_sigterm_checkpoints_and_resumes_exactly(tmp_path):
  workdir = tmp_path / "run"
  child = subprocess.Popen([sys.executable, "-c", _CHILD, str(workdir)], cwd=_REPO,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  try:
    lines = []
    for line in child.stdout:  # the first progress line: training (and the handler) started
      lines.append(line)
      if line.startswith("[toy] step "):
        break
    child.send_signal(signal.SIGTERM)
    rest, _ = child.communicate(timeout=60)
  finally:
    if child.poll() is None:
      child.kill()
  output = "".join(lines) + rest
  assert child.returncode == 0, output
  step = int(output.split("PREEMPTED ")[1].split()[0])
  assert 1 <= step < 10_000
  assert (workdir / "checkpoints" / "toy" / str(step)).is_dir()

  resumed = run_toy(workdir, step + 2)
  full = run_toy(tmp_path / "full", step + 2)
  assert resumed.resumed_from == step
  for a, b in zip(_params(full.state), _params(resumed.state)):
    np.testing.assert_array_equal(a, b)


def test_sigterm_handler_restored_after_run(tmp_path):
  previous = signal.getsignal(signal.SIGTERM)
  run_toy(tmp_path, 1)
  assert signal.getsignal(signal.SIGTERM) is previous
