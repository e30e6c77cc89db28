"""benchmarks/feature_study.py: its probe against a hand-made case, and every kind at tiny size."""

import sys

import numpy as np
import pytest

from tests.tiny import tiny_config

sys.path.insert(0, "benchmarks")
import feature_study  # noqa: E402


def test_logistic_probe_scores_separable_and_random_features():
  rng = np.random.default_rng(0)
  def split(n):
    y = (rng.random((n, 2)) < 0.4).astype(np.float32)
    x = np.concatenate([y * 3 + rng.normal(size=(n, 2)), rng.normal(size=(n, 3))], 1)
    return x, y
  splits = {"train": split(200), "validation": split(100), "test": split(100)}
  best = feature_study.logistic_probe(splits, [0.1, 1.0])
  assert best["test"] > 0.95 and best["validation"] > 0.95 and best["C"] in (0.1, 1.0)
  noise = {k: (rng.normal(size=x.shape), y) for k, (x, y) in splits.items()}
  assert abs(feature_study.logistic_probe(noise, [1.0])["test"] - 0.5) < 0.15


@pytest.mark.slow
def test_every_kind_runs_at_tiny_size(tmp_path):
  config = tiny_config(tmp_path / "data")
  config.train.num_steps = 2
  for kind in ("pixels", "random", "supervised", "pretrain"):
    row = feature_study.study(config, str(tmp_path / kind), kind, [1.0])
    expected = {"pixels"} if kind == "pixels" else set(feature_study.FEATURE_SETS)
    assert set(row["probes"]) == expected
    if kind != "pixels":
      s = row["feature_spread"]
      assert s["position_share"] + s["image_share"] + s["interaction_share"] == pytest.approx(1)
  assert (tmp_path / "pretrain" / "checkpoints" / "pretrain" / "2").exists()


@pytest.mark.slow
def test_the_documented_command_runs(tmp_path):
  import json
  import pathlib
  import subprocess
  repo = pathlib.Path(__file__).resolve().parents[2]
  config = tmp_path / "tiny_study.py"
  config.write_text("from tests.tiny import tiny_config\n\n\ndef get_config():\n"
                    f"  return tiny_config({str(tmp_path / 'data')!r})\n")
  out = subprocess.run([sys.executable, "benchmarks/feature_study.py", "--config", str(config),
                        "--workdir", str(tmp_path / "study" / "pixels"), "--kind=pixels",
                        "--Cs=1.0"], cwd=repo, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "test mean AUC: pixels" in out.stdout
  rows = (tmp_path / "study" / "feature_study.jsonl").read_text().splitlines()
  assert len(rows) == 1 and json.loads(rows[0])["kind"] == "pixels"
