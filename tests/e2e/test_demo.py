"""The demo mode end to end at tiny size: probes, the paired comparison, the feature spread."""

import json

import pytest

from otcxr_jax.modes import demo
from tests.tensorboard_events import read_events
from tests.tiny import tiny_config

pytestmark = pytest.mark.slow


def test_demo_writes_comparisons_and_diagnostics(tmp_path):
  config = tiny_config(tmp_path / "data", mode="demo")
  config.train.tensorboard = True
  config.probe.train_examples = 12  # the probes read the labels of 12 training images
  workdir = tmp_path / "demo"
  result = demo.run(config, str(workdir))
  saved = json.loads((workdir / "metrics.json").read_text())
  # TensorBoard: pretraining's curves, and beside them the headline AUC and the report's figures
  curves, _, _ = read_events(workdir / "tensorboard" / "pretrain")
  assert "loss" in curves
  scalars, images, steps = read_events(workdir / "tensorboard" / "demo")
  assert scalars["probes/OTCXR/test_mean_auc"] == pytest.approx(
      saved["probes"]["OTCXR"]["test_mean_auc"])
  assert "probes/random_init/otcxr_minus_this/difference" in scalars
  assert set(images) == {f"figures/{p.stem}" for p in (workdir / "figures").glob("*.png")}
  assert "figures/auc_per_class" in images and steps == {config.train.num_steps}
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
  assert "With non-overlapping 95% intervals it " in report
  # the demo's objective and readout (configs/demo.py), named in the report
  assert config.objective.teacher_tau and config.objective.varcov_per_position
  assert config.probe.readout == "map"
  assert "at each cell" in report and "an image-level term of weight 100, BYOL's" in report
  assert "probes on the frozen encoder's dense map, flattened" in report
  # the probe table: one row per probe, the highest test mean AUC alone in bold
  rows = [line.split("|")[1:-1] for line in report.split("## Linear probe")[1].splitlines()
          if line.startswith("| ") and "95% CI" not in line][:3]
  cells = {name.strip(): auc.strip() for name, auc, *_ in rows}
  assert set(cells) == set(saved["probes"])
  best = max(p["test_mean_auc"] for p in saved["probes"].values())
  for name, cell in cells.items():
    auc = saved["probes"][name]["test_mean_auc"]
    assert cell == (f"**{auc:.3f}**" if auc == best else f"{auc:.3f}"), (name, cell)
  assert result["probes"] == saved["probes"]
  assert saved["num_images"]["train"] == 12 and saved["pretrain_images"] > 12
  assert (f"trained on the labels of 12 of the {saved['pretrain_images']:,} training images"
          in report)
