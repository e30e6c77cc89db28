"""launch.sh cloud subcommands: --dry-run prints exactly the commands a real run executes."""

import os
import shlex
import subprocess
from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parents[1]
_PY = [".venv/bin/python", "-m", "otcxr_jax.main"]
_SSH = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "tp1", "--zone=us-central2-b"]
_OVERRIDES = ["--config.train.batch_size=64", "--config.data.name=it's spaced"]
_RUN_SH = (["cd", "otcxr-jax", "&&", "nohup", *_PY, "--config", "configs/demo.py", "--workdir",
            "gs://bucket/run1", *_OVERRIDES, ">>", "run.log", "2>&1", "<", "/dev/null", "&"])

# (launch.sh arguments, the commands it runs as argv lists; a nested list: a remote command's words)
_CASES = {
    "tpu-create": (
        ["tpu-create", "tp1", "--zone", "us-central2-b", "--type", "v4-8"],
        [["gcloud", "compute", "tpus", "tpu-vm", "create", "tp1", "--zone=us-central2-b",
          "--accelerator-type=v4-8", "--version=tpu-ubuntu2204-base"]]),
    "tpu-create-version": (
        ["tpu-create", "tp1", "--zone=us-central2-b", "--type=v4-32", "--version", "v2-alpha"],
        [["gcloud", "compute", "tpus", "tpu-vm", "create", "tp1", "--zone=us-central2-b",
          "--accelerator-type=v4-32", "--version=v2-alpha"]]),
    "tpu-install": (
        ["tpu-install", "tp1", "--zone", "us-central2-b"],
        [[*_SSH, "--worker=all", "--command=mkdir -p otcxr-jax"],
         ["gcloud", "compute", "tpus", "tpu-vm", "scp", "--worker=all", "--zone=us-central2-b",
          "--recurse", "launch.sh", "requirements.txt", "requirements-test.txt", "otcxr_jax",
          "configs", "tfds_builders", "tp1:otcxr-jax"],
         [*_SSH, "--worker=all", "--command=cd otcxr-jax && bash launch.sh setup tpu"]]),
    "tpu-run": (
        ["tpu-run", "tp1", "--zone", "us-central2-b", "configs/demo.py", "gs://bucket/run1",
         *_OVERRIDES],
        [[*_SSH, "--worker=all", _RUN_SH]]),
    "tpu-resume": (
        ["tpu-resume", "tp1", "--zone", "us-central2-b", "configs/demo.py", "gs://bucket/run1",
         *_OVERRIDES],
        [[*_SSH, "--worker=all", _RUN_SH]]),
    "tpu-logs": (
        ["tpu-logs", "tp1", "--zone", "us-central2-b"],
        [[*_SSH, "--worker=0", "--command=tail -n 100 otcxr-jax/run.log"]]),
    "tpu-delete": (
        ["tpu-delete", "tp1", "--zone", "us-central2-b"],
        [["gcloud", "compute", "tpus", "tpu-vm", "delete", "tp1", "--zone=us-central2-b",
          "--quiet"]]),
}


@pytest.fixture
def stubs(tmp_path):
  """``gcloud`` and ``sbatch`` stubs first on PATH, recording each call (tab-separated) in a log."""
  bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
  bin_dir.mkdir()
  for tool in ("gcloud", "sbatch"):
    stub = bin_dir / tool
    stub.write_text("#!/usr/bin/env bash\n"
                    "{ printf '%s' \"$(basename \"$0\")\"; printf '\\t%s' \"$@\"; printf '\\n'; }"
                    f" >> {shlex.quote(str(log))}\n")
    stub.chmod(0o755)
  env = {k: v for k, v in os.environ.items() if k != "OTCXR_VENV"}
  env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"

  def launch(*args, check=True):
    proc = subprocess.run(["bash", "launch.sh", *args], cwd=_REPO, env=env, text=True,
                          capture_output=True, timeout=30)
    if check:
      assert proc.returncode == 0, proc.stderr
    return proc

  def calls():
    return [line.split("\t") for line in log.read_text().splitlines()] if log.exists() else []

  return launch, calls


def _normalise(argv):
  """Splits a ``--command=...`` remote shell command into its words, for comparison."""
  prefix = "--command=cd otcxr-jax && nohup"
  return [shlex.split(a.removeprefix("--command=")) if a.startswith(prefix) else a for a in argv]


@pytest.mark.parametrize("case", sorted(_CASES))
def test_dry_run_prints_the_commands(stubs, case):
  launch, calls = stubs
  args, expected = _CASES[case]
  out = launch("--dry-run", *args).stdout
  printed = [_normalise(shlex.split(line)) for line in out.splitlines()]
  assert printed == expected
  assert calls() == []  # nothing ran


@pytest.mark.parametrize("case", sorted(_CASES))
def test_commands_run_as_printed(stubs, case):
  launch, calls = stubs
  args, expected = _CASES[case]
  launch(*args)
  assert [_normalise(c) for c in calls()] == expected


def _srun_argv(script: str):
  [srun] = [line for line in script.splitlines() if line.startswith("srun ")]
  return shlex.split(srun)


def test_slurm_writes_and_submits_the_batch_script(stubs, tmp_path):
  launch, calls = stubs
  workdir = tmp_path / "w"
  args = ["slurm", "configs/demo.py", str(workdir), "--nodes", "2", "--gpus-per-node=4",
          *_OVERRIDES]
  dry = launch("--dry-run", *args).stdout
  assert not workdir.exists() and calls() == []
  launch(*args)
  script_path = workdir / "otcxr.sbatch"
  script = script_path.read_text()
  assert calls() == [["sbatch", str(script_path)]]
  # the dry run printed the same script between the heredoc lines, then the same sbatch command
  lines = dry.splitlines()
  assert lines[0] == f"mkdir -p {workdir}"
  assert lines[1] == f"cat > {script_path} <<'SCRIPT'" and lines[-2] == "SCRIPT"
  assert "\n".join(lines[2:-2]) + "\n" == script
  assert shlex.split(lines[-1]) == ["sbatch", str(script_path)]

  directives = [line for line in script.splitlines() if line.startswith("#SBATCH")]
  for d in ("--nodes=2", "--ntasks-per-node=1", "--gpus-per-node=4", f"--chdir={_REPO}",
            f"--output={workdir}/slurm-%j.out", "--requeue", "--signal=TERM@120",
            "--job-name=otcxr-demo"):
    assert f"#SBATCH {d}" in directives
  assert "bash launch.sh setup cuda" in script
  assert _srun_argv(script) == ["srun", *_PY, "--config", "configs/demo.py", "--workdir",
                                str(workdir), *_OVERRIDES]


@pytest.mark.parametrize("args, message", [
    (["tpu-delete", "tp1"], "tpu-delete: --zone is required"),
    (["tpu-create", "--zone", "z", "--type", "v4-8"], "tpu-create: the TPU VM name is missing"),
    (["tpu-create", "tp1", "--zone", "z"], "tpu-create: --type is required"),
    (["tpu-run", "tp1", "--zone", "z", "configs/demo.py"], "usage: bash launch.sh tpu-run NAME"),
    (["tpu-logs", "tp1", "--zone", "z", "extra"], "tpu-logs: unexpected arguments: extra"),
    (["slurm", "configs/demo.py", "w", "--nodes", "0"], "slurm: --nodes=0: expected a positive"),
    (["slurm", "configs/demo.py"], "usage: bash launch.sh slurm CONFIG WORKDIR"),
])
def test_bad_arguments_are_refused(stubs, args, message):
  launch, calls = stubs
  proc = launch("--dry-run", *args, check=False)
  assert proc.returncode == 2 and message in proc.stderr
  assert calls() == []


def test_help_lists_every_cloud_subcommand(stubs):
  launch, _ = stubs
  out = launch("help").stdout
  for sub in ("tpu-create", "tpu-install", "tpu-run", "tpu-resume", "tpu-logs", "tpu-delete",
              "slurm", "--dry-run"):
    assert f"{sub} " in out or f"{sub}\n" in out
