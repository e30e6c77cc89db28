"""PNG figures of the evaluation report (``reporting/runs.py``): ROC curves, label-fraction
curves, Dice bars. Each function writes one figure and returns its file name."""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from otcxr_jax.evaluation import metrics  # noqa: E402
from otcxr_jax.reporting import plots  # noqa: E402


def roc_curves(labels: np.ndarray, scores: np.ndarray, class_names: Sequence[str], path,
               title: str) -> str:
  """One ROC curve per class with both label values on the split (legend: its AUC)."""
  fig, ax = plt.subplots(figsize=(4.6, 4.2))
  for k, name in enumerate(class_names):
    y = labels[:, k]
    if y.min() == y.max():
      continue
    fpr, tpr, _ = metrics.roc_curve(y, scores[:, k])
    ax.plot(fpr, tpr, lw=1.2, label=f"{name} ({metrics.roc_auc(y, scores[:, k]):.3f})")
  ax.plot([0, 1], [0, 1], "k--", lw=0.8)
  ax.set_xlabel("false-positive rate")
  ax.set_ylabel("true-positive rate")
  ax.set_title(title, fontsize=9)
  ax.legend(fontsize=6, loc="lower right")
  fig.tight_layout()
  return plots.save_figure(fig, path)


def label_fraction_curves(curves: Mapping[str, Sequence[tuple[float, float, tuple | None]]],
                          path, title: str) -> str:
  """Test mean AUC against the label fraction (log axis), one line per curve.

  Args:
    curves: ``{label: [(fraction in (0, 1], mean AUC, (low, high) 95% CI or None), ...]}``.
  """
  fig, ax = plt.subplots(figsize=(4.6, 3.4))
  for label, points in curves.items():
    points = sorted(points)
    x = [100 * p[0] for p in points]
    y = [p[1] for p in points]
    err = np.array([[p[1] - p[2][0], p[2][1] - p[1]] if p[2] else [0.0, 0.0]
                    for p in points]).T
    ax.errorbar(x, y, yerr=err, marker="o", capsize=3, lw=1.5, label=label)
  ax.set_xscale("log")
  ax.set_xticks([1, 10, 100], ["1%", "10%", "100%"])
  ax.set_xlabel("labelled training images")
  ax.set_ylabel("test mean ROC AUC")
  ax.set_title(title, fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  return plots.save_figure(fig, path)


def dice_bars(runs: Mapping[str, tuple[float | None, float | None]], path) -> str:
  """Grouped bars per run: Dice over all test images and over the positive ones."""
  names = list(runs)
  x = np.arange(len(names))
  fig, ax = plt.subplots(figsize=(1.5 + 1.3 * len(names), 3.4))
  for i, label in enumerate(("all images", "positive images")):
    values = [np.nan if runs[n][i] is None else runs[n][i] for n in names]
    ax.bar(x + (i - 0.5) * 0.38, np.nan_to_num(values), 0.38, label=label)
  ax.set_xticks(x, names, rotation=20, ha="right", fontsize=8)
  ax.set_ylim(0.0, 1.0)
  ax.set_ylabel("test Dice")
  ax.set_title("Segmentation", fontsize=9)
  ax.legend(fontsize=8)
  fig.tight_layout()
  return plots.save_figure(fig, path)
