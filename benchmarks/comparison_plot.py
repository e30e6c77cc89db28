"""The benchmark's paired comparisons as a forest plot: one line per row set against the reference.

Each line shows the difference of test mean AUC (reference minus row, mean over the seeds) as a
dot, its 95% interval over the test images as a thick bar and its 95% interval over the seeds as
a thin bar (absent for one seed), beside a vertical line at 0: a comparison is clear when both
bars stay on one side of it (``benchmarks/synthetic_report.py``).
"""

from __future__ import annotations

import math
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from etils import epath  # noqa: E402

from otcxr_jax.reporting import plots  # noqa: E402

Interval = tuple[float, float]


def forest_figure(rows: Sequence[str], differences: Sequence[float],
                  test_intervals: Sequence[Interval], seed_intervals: Sequence[Interval], *,
                  reference: str, title: str) -> plt.Figure:
  """The figure: rows top to bottom in the given order; a NaN difference or bound is not drawn.

  Its axes hold two line collections, in this order: the seed intervals (thin, the defined
  ones) and the test-image intervals (thick), each segment ``[(low, y), (high, y)]`` at the
  row's ``y`` (0 for the last row, up by 1 per row); the dots are its one marker line.
  """
  n = len(rows)
  if not (len(differences) == len(test_intervals) == len(seed_intervals) == n):
    raise ValueError(f"{n} rows but {len(differences)} differences, {len(test_intervals)} "
                     f"test intervals and {len(seed_intervals)} seed intervals")
  fig, ax = plt.subplots(figsize=(6.4, 0.9 + 0.42 * max(n, 1)))
  ys = [n - 1 - i for i in range(n)]

  def defined(intervals):
    keep = [i for i, (low, high) in enumerate(intervals)
            if not (math.isnan(low) or math.isnan(high))]
    return ([ys[i] for i in keep], [intervals[i][0] for i in keep],
            [intervals[i][1] for i in keep])

  y, low, high = defined(seed_intervals)
  ax.hlines(y, low, high, colors="tab:gray", linewidth=1.2, label="95% CI over the seeds")
  y, low, high = defined(test_intervals)
  ax.hlines(y, low, high, colors="tab:blue", linewidth=4.5, alpha=0.55,
            label="95% CI over the test images")
  dots = [i for i, d in enumerate(differences) if not math.isnan(d)]
  ax.plot([differences[i] for i in dots], [ys[i] for i in dots], "o", color="tab:blue",
          markersize=5, label="mean over the seeds")
  ax.axvline(0.0, color="black", linewidth=0.8, linestyle="--")
  ax.set_yticks(ys, [f"{reference} minus {r}" for r in rows], fontsize=8)
  ax.set_ylim(-0.7, n - 0.3)
  ax.set_xlabel("difference of test mean AUC")
  ax.set_title(title)
  ax.grid(axis="x", alpha=0.3)
  ax.legend(fontsize=7, loc="best")
  fig.tight_layout()
  return fig


def forest_plot(rows: Sequence[str], differences: Sequence[float],
                test_intervals: Sequence[Interval], seed_intervals: Sequence[Interval],
                path: epath.PathLike, *, reference: str, title: str) -> str:
  """:func:`forest_figure` written as a PNG to ``path``; returns the file name."""
  return plots.save_figure(forest_figure(rows, differences, test_intervals, seed_intervals,
                                         reference=reference, title=title), path)
