"""The demo mode end to end at tiny size: probes, the paired comparison, the feature spread."""

import json

import pytest

from otcxr_jax.modes import demo
from tests.tiny import tiny_config

pytestmark = pytest.mark.slow


def test_demo_writes_comparisons_and_diagnostics(tmp_path):
  config = tiny_config(tmp_path / "data", mode="demo")
  workdir = tmp_path / "demo"
  result = demo.run(config, str(workdir))
  saved = json.loads((workdir / "metrics.json").read_text())
  assert set(saved["probes"]) == {"OTCXR", "random init", "raw pixels"}
  for floor in ("random init", "raw pixels"):
    d = saved["probes"][floor]["otcxr_minus_this"]
    expected = saved["probes"]["OTCXR"]["test_mean_auc"] - saved["probes"][floor]["test_mean_auc"]
    assert d["difference"] == pytest.approx(expected, abs=1e-6)
    low, high = d["ci95"]
    assert low <= d["difference"] <= high
  for name in ("OTCXR", "random init"):
    s = saved["feature_spread"][name]
    assert s["position_share"] + s["image_share"] + s["interaction_share"] == pytest.approx(1.0)
    assert s["pooled_std_over_mean"] >= 0
  report = (workdir / "report.md").read_text()
  assert "OTCXR minus floor" in report and "position share" in report
  assert "With non-overlapping 95% intervals it beats" in report
  assert result["probes"] == saved["probes"]
