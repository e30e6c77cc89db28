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
_PREFLIGHT = [*_SSH, "--worker=all",
              "--command=cd otcxr-jax && timeout 600 .venv/bin/python -m otcxr_jax.preflight"]
_CREATE = ["gcloud", "compute", "tpus", "tpu-vm", "create", "tp1", "--zone=us-central2-b"]
_QUEUE = ["gcloud", "compute", "tpus", "queued-resources", "create", "tp1", "--zone=us-central2-b",
          "--node-id=tp1"]
# The TPU software version of each generation, https://cloud.google.com/tpu/docs/runtimes
_RUNTIMES = {"v4-8": "tpu-ubuntu2204-base", "v5litepod-8": "v2-alpha-tpuv5-lite",
             "v5p-8": "v2-alpha-tpuv5", "v6e-8": "v2-alpha-tpuv6e"}

# (launch.sh arguments, the commands it runs as argv lists; a nested list: a remote command's words)
_CASES = {
    **{f"tpu-create-{t}": (["tpu-create", "tp1", "--zone", "us-central2-b", "--type", t],
                           [[*_CREATE, f"--accelerator-type={t}", f"--version={v}"]])
       for t, v in _RUNTIMES.items()},
    "tpu-create-version": (
        ["tpu-create", "tp1", "--zone=us-central2-b", "--type=v4-32", "--version", "v2-alpha"],
        [[*_CREATE, "--accelerator-type=v4-32", "--version=v2-alpha"]]),
    "tpu-create-spot": (
        ["tpu-create", "tp1", "--zone", "us-central2-b", "--type", "v6e-8", "--spot"],
        [[*_CREATE, "--accelerator-type=v6e-8", "--version=v2-alpha-tpuv6e", "--spot"]]),
    "tpu-create-preemptible": (
        ["tpu-create", "--preemptible", "tp1", "--zone", "us-central2-b", "--type", "v4-8"],
        [[*_CREATE, "--accelerator-type=v4-8", "--version=tpu-ubuntu2204-base",
          "--preemptible"]]),
    "tpu-create-queued": (
        ["tpu-create", "tp1", "--zone", "us-central2-b", "--type", "v5litepod-16", "--queued"],
        [[*_QUEUE, "--accelerator-type=v5litepod-16", "--runtime-version=v2-alpha-tpuv5-lite"]]),
    "tpu-create-queued-spot": (
        ["tpu-create", "tp1", "--zone", "us-central2-b", "--type", "v5p-16", "--queued", "--spot"],
        [[*_QUEUE, "--accelerator-type=v5p-16", "--runtime-version=v2-alpha-tpuv5", "--spot"]]),
    "tpu-install": (
        ["tpu-install", "tp1", "--zone", "us-central2-b"],
        [[*_SSH, "--worker=all", "--command=mkdir -p otcxr-jax"],
         ["gcloud", "compute", "tpus", "tpu-vm", "scp", "--worker=all", "--zone=us-central2-b",
          "--recurse", "launch.sh", "requirements.txt", "requirements-test.txt", "otcxr_jax",
          "configs", "tfds_builders", "tp1:otcxr-jax"],
         [*_SSH, "--worker=all", "--command=cd otcxr-jax && env PYTHON=python3 "
                                 "OTCXR_INSTALL_PYTHON=1 bash launch.sh setup tpu"],
         _PREFLIGHT]),
    "tpu-preflight": (["tpu-preflight", "tp1", "--zone", "us-central2-b"], [_PREFLIGHT]),
    "tpu-run": (
        ["tpu-run", "tp1", "--zone", "us-central2-b", "configs/demo.py", "gs://bucket/run1",
         *_OVERRIDES],
        [_PREFLIGHT, [*_SSH, "--worker=all", _RUN_SH]]),
    "tpu-resume": (
        ["tpu-resume", "tp1", "--zone", "us-central2-b", "configs/demo.py", "gs://bucket/run1",
         *_OVERRIDES],
        [_PREFLIGHT, [*_SSH, "--worker=all", _RUN_SH]]),
    "tpu-logs": (
        ["tpu-logs", "tp1", "--zone", "us-central2-b"],
        [[*_SSH, "--worker=0", "--command=tail -n 100 otcxr-jax/run.log"]]),
    "tpu-delete": (
        ["tpu-delete", "tp1", "--zone", "us-central2-b"],
        [["gcloud", "compute", "tpus", "tpu-vm", "delete", "tp1", "--zone=us-central2-b",
          "--quiet"]]),
    "tpu-delete-queued": (
        ["tpu-delete", "tp1", "--zone", "us-central2-b", "--queued"],
        [["gcloud", "compute", "tpus", "queued-resources", "delete", "tp1",
          "--zone=us-central2-b", "--force", "--quiet"]]),
}

# What `gcloud ... ssh --worker=all` prints for the preflight of a healthy v4-32 (4 workers of 4
# chips; the lines in the format of otcxr_jax.preflight.report, mixed with gcloud's messages).
PREFLIGHT_V4_32 = (_REPO / "tests" / "fixtures" / "preflight_v4-32.txt").read_text()


@pytest.fixture
def stubs(tmp_path):
  """``gcloud`` and ``sbatch`` stubs first on PATH, recording each call (tab-separated) in a log."""
  bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
  bin_dir.mkdir()
  preflight_out = tmp_path / "preflight.txt"  # what the stub prints for a preflight command
  preflight_out.write_text(PREFLIGHT_V4_32)
  for tool in ("gcloud", "sbatch"):
    stub = bin_dir / tool
    stub.write_text("#!/usr/bin/env bash\n"
                    "{ printf '%s' \"$(basename \"$0\")\"; printf '\\t%s' \"$@\"; printf '\\n'; }"
                    f" >> {shlex.quote(str(log))}\n"
                    '[[ "$*" != *otcxr_jax.preflight* ]] || '
                    f"cat {shlex.quote(str(preflight_out))}\n")
    stub.chmod(0o755)
  env = {k: v for k, v in os.environ.items() if k not in ("OTCXR_VENV", "PYTHON")}
  env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"

  def launch(*args, check=True):
    proc = subprocess.run(["bash", "launch.sh", *args], cwd=_REPO, env=env, text=True,
                          capture_output=True, timeout=30)
    if check:
      assert proc.returncode == 0, proc.stderr
    return proc

  def calls():
    return [line.split("\t") for line in log.read_text().splitlines()] if log.exists() else []

  launch.preflight_out = preflight_out
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
    (["tpu-create", "tp1", "--zone", "z", "--type", "v9-8"],
     "tpu-create: no known runtime image for --type=v9-8"),
    (["tpu-create", "tp1", "--zone", "z", "--type", "v4-8", "--spot", "--preemptible"],
     "tpu-create: choose one of --spot and --preemptible"),
    (["tpu-create", "tp1", "--zone", "z", "--type", "v4-8", "--queued", "--preemptible"],
     "tpu-create: queued resources take --spot, not --preemptible"),
    (["tpu-run", "tp1", "--zone", "z", "--spot", "configs/demo.py", "gs://b/r"],
     "tpu-run: --spot applies to tpu-create only"),
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
  for sub in ("tpu-create", "tpu-install", "tpu-preflight", "tpu-run", "tpu-resume", "tpu-logs", "tpu-delete",
              "slurm", "--dry-run"):
    assert f"{sub} " in out or f"{sub}\n" in out


def test_run_stops_when_the_preflight_finds_a_worker_not_ready(stubs):
  launch, calls = stubs
  args = ["tpu-run", "tp1", "--zone", "us-central2-b", "configs/demo.py", "gs://bucket/run1"]
  ok = launch(*args)
  assert "preflight: 4 worker(s), Python 3.11.13, jax 0.10.2" in ok.stdout
  assert "16 x TPU v4 (tpu, 4 per worker)" in ok.stdout
  launch.preflight_out.write_text(PREFLIGHT_V4_32.replace("python=3.11.13", "python=3.10.12", 1))
  before = len(calls())
  proc = launch(*args, check=False)
  assert proc.returncode == 2
  assert "runs Python 3.10.12; the requirements need >= 3.11" in proc.stderr
  assert "tpu-run: stopped: the workers are not ready" in proc.stderr
  assert [_normalise(c) for c in calls()[before:]] == [_PREFLIGHT]  # nothing was launched


def _fake_python(path, version: str, log):
  """An interpreter stand-in: answers the version query, records any other call."""
  path.write_text("#!/usr/bin/env bash\n"
                  f'if [[ "$1" == -c ]]; then echo {version}; exit 0; fi\n'
                  f"{{ printf '%s' \"$(basename \"$0\")\"; printf '\\t%s' \"$@\"; printf '\\n'; }}"
                  f" >> {shlex.quote(str(log))}\n")
  path.chmod(0o755)


def test_setup_refuses_a_python_older_than_the_requirements(stubs, tmp_path):
  launch, calls = stubs
  _fake_python(tmp_path / "python3.10", "3.10", tmp_path / "calls.log")
  env = {**os.environ, "PYTHON": str(tmp_path / "python3.10"),
         "OTCXR_VENV": str(tmp_path / "venv")}
  proc = subprocess.run(["bash", "launch.sh", "setup", "tpu"], cwd=_REPO, env=env, text=True,
                        capture_output=True, timeout=30)
  assert proc.returncode == 2
  assert "is Python 3.10; the requirements need >= 3.11" in proc.stderr
  assert "OTCXR_INSTALL_PYTHON=1" in proc.stderr
  assert calls() == [] and not (tmp_path / "venv").exists()


def test_setup_on_an_old_python_installs_python_3_11_with_uv(tmp_path):
  """What `tpu-install` runs on a worker of a 3.10 image: uv's Python 3.11 in the venv."""
  bin_dir, log, venv = tmp_path / "bin", tmp_path / "calls.log", tmp_path / "venv"
  bin_dir.mkdir()
  _fake_python(bin_dir / "python3", "3.10", log)
  uv = bin_dir / "uv"  # records its call; `uv venv ... DIR` makes DIR/bin/python (recording)
  uv.write_text("#!/usr/bin/env bash\n"
                f"{{ printf 'uv'; printf '\\t%s' \"$@\"; printf '\\n'; }} >> {shlex.quote(str(log))}\n"
                'if [[ "$1" == venv ]]; then\n'
                '  mkdir -p "${@: -1}/bin" && cp "$(dirname "$0")/python3" "${@: -1}/bin/python"\n'
                "fi\n")
  uv.chmod(0o755)
  env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
         "PYTHON": "python3", "OTCXR_VENV": str(venv), "OTCXR_INSTALL_PYTHON": "1"}
  proc = subprocess.run(["bash", "launch.sh", "setup", "tpu"], cwd=_REPO, env=env, text=True,
                        capture_output=True, timeout=30)
  assert proc.returncode == 0, proc.stderr
  calls = [line.split("\t") for line in log.read_text().splitlines()]
  assert calls == [
      ["uv", "python", "install", "3.11"],
      ["uv", "venv", "--seed", "--python", "3.11", str(venv)],
      ["python", "-m", "pip", "install", "--upgrade", "--quiet", "pip"],
      ["python", "-m", "pip", "install", "--quiet", "-r", "requirements.txt"],
      ["python", "-m", "pip", "install", "--quiet", "jax[tpu]==0.10.2"],
  ]
