"""The paired comparisons' forest plot: what it draws, against the numbers it was given, and its
place in the benchmark's report."""

import math

import numpy as np
import pytest

from benchmarks import comparison_plot, synthetic_report
from tests.bench.test_benchmark_synthetic import _config

NAN = (math.nan, math.nan)


def _segments(collection):
  return [tuple(map(tuple, np.asarray(s).round(6))) for s in collection.get_segments()]


def test_forest_figure_draws_the_intervals_and_differences_it_is_given():
  rows = ("vicreg", "random_init", "raw_pixels")
  differences = (0.012, 0.037, math.nan)
  tests = ((0.001, 0.021), (0.027, 0.047), NAN)
  seeds = ((0.000, 0.023), NAN, NAN)  # one seed: no interval over the seeds
  fig = comparison_plot.forest_figure(rows, differences, tests, seeds, reference="otcxr",
                                      title="t")
  ax = fig.axes[0]
  seed_lines, test_lines = ax.collections
  assert _segments(seed_lines) == [((0.0, 2.0), (0.023, 2.0))]  # first row on top
  assert _segments(test_lines) == [((0.001, 2.0), (0.021, 2.0)), ((0.027, 1.0), (0.047, 1.0))]
  dots = next(line for line in ax.lines if line.get_marker() == "o")
  np.testing.assert_allclose(dots.get_xdata(), [0.012, 0.037])
  np.testing.assert_allclose(dots.get_ydata(), [2, 1])
  zero = [line for line in ax.lines if line.get_linestyle() == "--"]
  assert len(zero) == 1 and tuple(zero[0].get_xdata()) == (0.0, 0.0)
  assert [t.get_text() for t in ax.get_yticklabels()] == [
      "otcxr minus vicreg", "otcxr minus random_init", "otcxr minus raw_pixels"]


def test_forest_figure_refuses_lists_of_different_lengths():
  with pytest.raises(ValueError, match="2 rows but 1 differences"):
    comparison_plot.forest_figure(("a", "b"), (0.1,), (NAN, NAN), (NAN, NAN), reference="r",
                                  title="t")


def test_report_links_one_forest_plot_per_compared_evaluation(tmp_path):
  """Two evaluations with saved test scores, one without (kNN saves none): two PNGs, linked
  after the comparisons' table."""
  from otcxr_jax.evaluation import score_files
  config = _config(tmp_path)
  with config.unlocked():
    config.benchmark.runs = ("otcxr", "vicreg")
    config.benchmark.references = ("raw_pixels",)
    config.benchmark.evaluations = ("linear_probe", "linear_probe_map", "knn")
    config.benchmark.evaluation_rows = {}
    config.benchmark.seeds = 1
    config.benchmark.timed_runs = ()
  rng = np.random.default_rng(2)
  labels = (rng.random((120, 2)) < 0.4).astype(np.float32)
  for row, evaluation in [("otcxr", "linear_probe"), ("otcxr", "linear_probe_map"),
                          ("vicreg", "linear_probe"), ("vicreg", "linear_probe_map"),
                          ("raw_pixels", "linear_probe")]:
    folder = synthetic_report.metrics_path(tmp_path, row, 0, evaluation).parent
    score_files.save_scores(folder, labels, labels + rng.normal(size=labels.shape),
                            ("atelectasis", "edema"))
  text = synthetic_report.write_report(config, tmp_path).read_text()
  section = text.split("## Paired comparisons", 1)[1].split("## Per-class", 1)[0]
  links = [line for line in section.splitlines() if line.startswith("![")]
  names = ["paired_linear_probe_auc.png", "paired_linear_probe_auc_dense_map.png"]
  assert [link.rsplit("(plots/", 1)[1].rstrip(")") for link in links] == names
  for name in names:
    assert (tmp_path / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
