"""An evaluation's results as it reports them: ``metrics.json``, AUC summaries and Markdown tables.

Per-class AUC (``null`` where a class has a single label value on the split), mean AUC over the
defined classes, and percentile-bootstrap 95% intervals (:func:`metrics.bootstrap_auc_ci`).
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from etils import epath

from otcxr_jax.evaluation import metrics
from otcxr_jax.training import summaries

BOOTSTRAP_SAMPLES = 1000


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  """A Markdown table of ``rows`` under ``header`` (cells as given)."""
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
  return "\n".join(lines)


def _num(x) -> float | None:
  return None if np.isnan(x) else float(x)


def auc_summary(labels: np.ndarray, scores: np.ndarray, class_names: Sequence[str], *,
                seed: int = 0, num_samples: int = BOOTSTRAP_SAMPLES) -> dict[str, Any]:
  """JSON-ready AUCs of ``(N, K)`` labels and scores, with bootstrap 95% intervals."""
  if len(class_names) != labels.shape[1]:
    raise ValueError(f"class_names has {len(class_names)} names for {labels.shape[1]} label "
                     f"columns.")
  per_class = metrics.per_class_auc(labels, scores)
  ci = metrics.bootstrap_auc_ci(labels, scores, num_samples=num_samples, seed=seed)
  interval = lambda pair: None if np.isnan(pair).any() else [float(pair[0]), float(pair[1])]
  return {
      "num_examples": int(len(labels)),
      "mean_auc": _num(metrics.mean_auc(labels, scores)),
      "mean_auc_ci95": interval(np.asarray(ci.mean)),
      "per_class_auc": dict(zip(class_names, map(_num, per_class))),
      "per_class_auc_ci95": dict(zip(class_names, map(interval, ci.per_class))),
  }


def auc_table(summaries: Mapping[str, Mapping[str, Any]]) -> str:
  """Markdown table: one row per class and the mean, one column per summarised split."""
  splits = list(summaries)
  classes = list(next(iter(summaries.values()))["per_class_auc"])
  fmt = lambda x: "undefined" if x is None else f"{x:.3f}"
  fmt_ci = lambda ci: "" if ci is None else f" [{ci[0]:.3f}, {ci[1]:.3f}]"
  rows = [[name] + [fmt(summaries[s]["per_class_auc"][name]) +
                    fmt_ci(summaries[s]["per_class_auc_ci95"][name]) for s in splits]
          for name in classes]
  rows.append(["**mean**"] + [fmt(summaries[s]["mean_auc"]) + fmt_ci(summaries[s]["mean_auc_ci95"])
                              for s in splits])
  return markdown_table(["class"] + [f"{s} AUC [95% CI]" for s in splits], rows)


def write_metrics(workdir: str | epath.PathLike, result: Mapping[str, Any], *,
                  tensorboard: bool = True) -> epath.Path:
  """Writes ``<workdir>/metrics.json`` (process 0 only) and returns its path; with
  ``tensorboard`` (``config.train.tensorboard``) also its numbers and the workdir's PNG figures
  to ``<workdir>/tensorboard/<result['mode']>`` (``training/summaries.py``)."""
  path = epath.Path(workdir) / "metrics.json"
  if jax.process_index() == 0:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
  summaries.write_results(workdir, str(result.get("mode", "evaluation")), result,
                          enabled=tensorboard)
  return path
