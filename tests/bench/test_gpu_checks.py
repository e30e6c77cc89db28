"""benchmarks/gpu_checks.sh without a GPU: a stand-in ``nvidia-smi`` reports the card and a
stand-in Python records the commands the script would run."""

import os
import pathlib
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


def _run(tmp_path, stage, card_mib, **env):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir(exist_ok=True)
  smi = bin_dir / "nvidia-smi"
  smi.write_text("#!/usr/bin/env bash\n"
                 f'if [[ "$*" == *noheader* ]]; then echo "{card_mib}"; '
                 f'else echo "name, memory.total [MiB]"; echo "Card, {card_mib} MiB"; fi\n')
  calls = tmp_path / "calls.txt"
  python = bin_dir / "python"
  python.write_text(f'#!/usr/bin/env bash\necho "$*" >> {calls}\n')
  for f in (smi, python):
    f.chmod(0o755)
  out = subprocess.run(
      ["bash", "benchmarks/gpu_checks.sh", stage, str(tmp_path / "out")], cwd=REPO,
      capture_output=True, text=True, timeout=60,
      env={**{k: v for k, v in os.environ.items() if k != "COMPARE_BATCH"}, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHON": str(python), **env})
  return out, calls.read_text().splitlines() if calls.exists() else []


@pytest.mark.parametrize("card_mib, env, batch", [
    ("81559", {}, "128"),              # H100 80 GB: both frameworks' batch-256 steps do not fit
    ("143771", {}, "256"),             # H200: the paper's batch
    ("81559", {"COMPARE_BATCH": "64"}, "64"),
])
def test_compare_picks_the_batch_the_card_holds(tmp_path, card_mib, env, batch):
  out, calls = _run(tmp_path, "compare", card_mib, **env)
  assert out.returncode == 0, out.stderr
  assert [c.split("--step ")[1].split()[0] for c in calls] == ["otcxr", "encoder"]
  for call in calls:
    assert call.startswith("benchmarks/compare_pytorch.py --setting resnet50_224")
    assert f"--batch {batch} " in call
  assert f"batch {batch} (card memory {card_mib} MiB)" in (tmp_path / "out/gpu.txt").read_text()


def test_unknown_stage_is_refused(tmp_path):
  out, calls = _run(tmp_path, "train", "81559")
  assert out.returncode == 2 and "unknown stage train" in out.stderr
  assert not calls
