"""``python -m otcxr_jax.main``: an expected failure is a line or two on stderr with exit status 2
(its traceback with ``--verbosity=1``), while a bug keeps its traceback (the unit tests are in
tests/test_main_errors.py)."""

import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}
HINT = "(run with --verbosity=1 for the traceback)"

_RAISING_MODE = """
    import sys
    from otcxr_jax import errors, main
    from otcxr_jax.modes import build_dataset

    class WorkdirInUse(errors.UserError):  # a subclass main.py does not know of
      pass

    def run(config, workdir):
      raise {exception}

    build_dataset.run = run
    sys.argv = ["otcxr_jax.main", "--config", "configs/build.py:dataset=rsna", *sys.argv[1:]]
    main.run()
"""


def _main(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "otcxr_jax.main", *args], cwd=REPO, env=ENV,
                        capture_output=True, text=True, timeout=300)


def test_missing_manual_dir_is_a_short_error(tmp_path):
  missing = tmp_path / "no_such_download"
  args = ("--config", "configs/build.py:dataset=nih",
          f"--config.data.manual_dir={missing}", f"--config.data.data_dir={tmp_path / 'data'}")
  result = _main(*args)
  assert result.returncode == 2, result.stderr[-3000:]
  assert "Traceback" not in result.stderr
  lines = result.stderr.strip().splitlines()
  assert len(lines) <= 5, result.stderr
  assert lines[-2:] == [
      f"Error: nih_chest_xray14: the manual directory {missing} does not exist. What to download "
      "and where its files go: docs/datasets.md, section `nih_chest_xray14`.", HINT]
  assert not (tmp_path / "data" / "nih_chest_xray14").exists()
  verbose = _main(*args, "--verbosity=1")
  assert verbose.returncode not in (0, 2)
  assert "Traceback" in verbose.stderr and "ManualDirError" in verbose.stderr
  assert str(missing) in verbose.stderr


def test_unset_manual_dir_names_the_flag(tmp_path):
  result = _main("--config", "configs/build.py:dataset=rsna",
                 f"--config.data.data_dir={tmp_path}")
  assert result.returncode == 2 and "Traceback" not in result.stderr
  assert result.stderr.strip().splitlines()[-2:] == [
      "Error: config.data.manual_dir is not set: pass --config.data.manual_dir=/path/to/the/"
      "rsna_pneumonia download. What to download and where its files go: docs/datasets.md, "
      "section `rsna_pneumonia`.", HINT]


@pytest.mark.parametrize("exception, status, traceback", [
    ('WorkdirInUse("workdir /w is in use by process 12")', 2, False),
    ('RuntimeError("a bug")', 1, True),
])
def test_any_user_error_from_a_mode_is_expected(tmp_path, exception, status, traceback):
  code = textwrap.dedent(_RAISING_MODE).format(exception=exception)
  result = subprocess.run([sys.executable, "-c", code, f"--workdir={tmp_path}"], cwd=REPO,
                          env=ENV, capture_output=True, text=True, timeout=300)
  assert result.returncode == status, result.stderr[-3000:]
  assert ("Traceback" in result.stderr) == traceback
  if not traceback:
    assert result.stderr.strip().splitlines()[-2:] == [
        "Error: workdir /w is in use by process 12", HINT]
  verbose = subprocess.run([sys.executable, "-c", code, f"--workdir={tmp_path}", "--verbosity=1"],
                           cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
  assert verbose.returncode == 1 and "Traceback" in verbose.stderr
