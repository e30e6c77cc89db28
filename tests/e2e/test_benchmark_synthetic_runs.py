"""The synthetic benchmark end to end at tiny scale: report.md against the files it read.

End to end: the runs (the unit tests are in tests/bench/test_benchmark_synthetic.py)."""

import json
import re

import pytest

from benchmarks import benchmark_synthetic
from tests.bench.test_benchmark_synthetic import (COLUMNS, KNN_ROWS, ROWS, RUNS, TIMED, _config,
                                                  _table)


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory):
  root = tmp_path_factory.mktemp("benchmark")
  config = _config(root / "tfds")
  report = benchmark_synthetic.run(config, root / "work")
  return config, root / "work", report


def _test_mean_auc(workdir, row, evaluation):
  path = workdir / "runs" / row / "seed0" / evaluation / "metrics.json"
  return json.loads(path.read_text())["test"]["mean_auc"]


def test_results_table_matches_the_metrics_files(benchmark):
  _, workdir, report = benchmark
  header, rows = _table(report.read_text(), "## Results")
  assert header == ["run", *COLUMNS]
  assert list(rows) == list(ROWS)
  for j, (column, evaluation) in enumerate(COLUMNS.items()):
    limited = KNN_ROWS if evaluation == "knn" else ROWS
    for row in set(ROWS) - set(limited):
      assert rows[row][j] == "–", (row, column)
      assert not (workdir / "runs" / row / "seed0" / evaluation).exists()
    expected = {row: _test_mean_auc(workdir, row, evaluation) for row in limited}
    defined = [v for v in expected.values() if v is not None]
    best = max(defined)
    for row, value in expected.items():
      cell = rows[row][j]
      if value is None:
        assert cell == "n/a", (row, column)
        continue
      bold = cell.startswith("**") and cell.endswith("**")
      assert cell.strip("*") == f"{value:.3f}", (row, column, cell, value)  # one seed: no ±
      assert bold == (value == best), (row, column, cell)


def test_feature_spread_section_holds_every_probed_encoder(benchmark):
  _, workdir, report = benchmark
  _, rows = _table(report.read_text(), "## What the features carry")
  assert list(rows) == list(ROWS)
  for row, cells in rows.items():
    path = workdir / "runs" / row / "seed0" / "linear_probe" / "metrics.json"
    spread = json.loads(path.read_text())["feature_spread"]
    assert cells == [f"{spread[k]:.4f}" for k in ("position_share", "image_share",
                                                  "pooled_std_over_mean")], row


def test_runtime_section_matches_the_timing_files(benchmark):
  _, workdir, report = benchmark
  text = report.read_text()
  timings = {run: json.loads((workdir / "timing" / f"{run}.json").read_text()) for run in TIMED}
  assert sorted(p.stem for p in (workdir / "timing").glob("*.json")) == sorted(TIMED)
  header, rows = _table(text, "## Runtime")
  assert header[:4] == ["run", "s / step", "images / s", "peak memory (MiB)"]
  for run, t in timings.items():
    assert t["batch_size"] == 8 and t["image_size"] == 32
    assert t["seconds_per_step"] > 0 and t["peak_memory_bytes"] >= t["memory_before_bytes"] > 0
    assert t["memory_source"] in ("device", "rss_vmhwm", "rss_getrusage")
    assert rows[run][0] == f"{t['seconds_per_step']:.4f}"
    assert rows[run][2] == f"{t['peak_memory_bytes'] / 2**20:.1f}"
  ratio = timings["otcxr"]["seconds_per_step"] / timings["vicreg"]["seconds_per_step"]
  memory = timings["otcxr"]["peak_memory_bytes"] / timings["vicreg"]["peak_memory_bytes"]
  assert (f"OTCXR over VICReg: {ratio:.2f}x the time per step, {memory:.2f}x the peak memory."
          in text)


def test_plots_exist_and_ablations_are_listed(benchmark):
  _, workdir, report = benchmark
  text = report.read_text()
  images = re.findall(r"!\[[^]]*\]\((plots/[^)]+\.png)\)", text)
  # One per metric, seconds per step, peak memory, and the forest plot of the paired comparisons
  # of the one evaluation that saves test scores (the linear probe; kNN saves none).
  assert len(images) == len(COLUMNS) + 3
  assert "plots/paired_linear_probe_auc.png" in images
  for name in images:
    assert (workdir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  _, runs = _table(text, "## Runs")
  assert runs["otcxr_location_mse"] == ["`objective.alignment='location_mse'`, "
                                        "`objective.alpha=25.0`"]
  assert runs["vicreg"] == ["`method='vicreg'`"]
  # The ablation's pretraining used its fields on top of the shared (demo) config.
  saved = json.loads((workdir / "runs/otcxr_location_mse/seed0/pretrain/config.json").read_text())
  assert saved["objective"]["alignment"] == "location_mse"
  assert saved["objective"]["location_weight"] == 0.2 and saved["objective"]["center_tokens"]


def test_rerun_skips_finished_steps_and_redoes_a_missing_one(benchmark):
  config, workdir, report = benchmark
  files = sorted(workdir.glob("runs/*/seed0/*/metrics.json")) + sorted(
      workdir.glob("timing/*.json"))
  # pretraining and linear probe of each run, the reference's probe, kNN of KNN_ROWS, timings
  assert len(files) == len(RUNS) * 2 + 1 + len(KNN_ROWS) + len(TIMED)
  redo = workdir / "runs" / "otcxr" / "seed0" / "knn" / "metrics.json"
  before = {f: f.stat().st_mtime_ns for f in files if f != redo}
  redo.unlink()
  benchmark_synthetic.run(config, workdir)
  assert {f: f.stat().st_mtime_ns for f in before} == before
  assert redo.exists()
  assert "vicreg" in report.read_text()
