"""One report of evaluation runs: their ``metrics.json`` collected into ``report.md`` with plots.

    python -m otcxr_jax.reporting workdirs/linear_probe_nih workdirs/finetune_nih_* \
        workdirs/segment_siim workdirs/localize_nih --out reports/paper
    # or, the workdirs in config.report.workdirs (configs/report_paper.py lists the paper's):
    python -m otcxr_jax.main --config configs/report_paper.py --workdir reports/paper

Each workdir holds one run of the modes ``linear_probe``, ``knn``, ``finetune`` (test mean and
per-class ROC AUC with bootstrap 95% intervals), ``segment`` (test Dice over all and over positive
images) or ``localize`` (pointing game and IoU per heatmap method and class). ``report.md`` has a
table per kind of run and these figures (in ``<out>/figures``):

* per-class test AUC bars of the classification runs (one figure per class list);
* ROC curves of each classification run that saved its test scores
  (``evaluation/score_files.py``: ``linear_probe`` and ``finetune`` do);
* test mean AUC against the label fraction of the fine-tuning runs (1%, 10%, 100%), one line per
  dataset and encoder start;
* Dice bars of the segmentation runs; the example figures the segmentation and localisation runs
  drew, copied.

Numbers are printed to three decimals, "undefined" where a metric is (a class with a single label
value on the split). A run is named by its workdir's name (with its parent's where two coincide);
workdirs without a ``metrics.json`` are listed as not run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any, Sequence

import numpy as np
from etils import epath

from otcxr_jax.evaluation import score_files
from otcxr_jax.reporting import figures as report_figures
from otcxr_jax.reporting.plots import auc_bars
from otcxr_jax.reporting.summary import markdown_table

CLASSIFICATION_MODES = ("linear_probe", "knn", "finetune")
REPORTED_MODES = (*CLASSIFICATION_MODES, "segment", "localize")
FIGURES = "figures"


@dataclasses.dataclass(frozen=True)
class Run:
  """An evaluation run: its name in the report, workdir, ``metrics.json`` and dataset."""

  name: str
  path: epath.Path
  metrics: dict[str, Any]
  dataset: str


def _dataset(path: epath.Path, result: dict[str, Any]) -> str:
  """``metrics['dataset']``, else ``<data.name>/<data.config>`` of the run's ``config.json``."""
  if result.get("dataset"):
    return str(result["dataset"])
  config = path / "config.json"
  if config.exists():
    data = json.loads(config.read_text()).get("data", {})
    return f"{data.get('name', '?')}/{data.get('config', '?')}"
  return "unknown"


def collect(workdirs: Sequence[str | epath.PathLike]) -> tuple[list[Run], list[epath.Path]]:
  """Reads the runs, in the order given: ``(runs, workdirs without a metrics.json)``.

  Raises:
    FileNotFoundError: no workdir has a ``metrics.json``.
    ValueError: a ``metrics.json`` is not of a mode in ``REPORTED_MODES``, or a workdir is given
      twice.
  """
  paths = [epath.Path(w) for w in workdirs]
  if not paths:
    raise ValueError("no workdir given")
  resolved = [str(p.resolve()) for p in paths]
  repeated = sorted({r for r in resolved if resolved.count(r) > 1})
  if repeated:
    raise ValueError(f"workdir(s) given more than once: {repeated}")
  names = [p.name for p in paths]
  names = [f"{p.parent.name}/{p.name}" if names.count(p.name) > 1 else p.name for p in paths]
  runs, missing = [], []
  for name, path in zip(names, paths):
    file = path / "metrics.json"
    if not file.exists():
      missing.append(path)
      continue
    result = json.loads(file.read_text())
    if result.get("mode") not in REPORTED_MODES:
      raise ValueError(f"{file} is of mode {result.get('mode')!r}; the report collects runs of "
                       f"{REPORTED_MODES}.")
    runs.append(Run(name, path, result, _dataset(path, result)))
  if not runs:
    raise FileNotFoundError(f"none of the workdirs holds a metrics.json (a finished evaluation "
                            f"run): {[str(p) for p in paths]}")
  return runs, missing


def _fmt(x: float | None) -> str:
  return "undefined" if x is None else f"{x:.3f}"


def _ci(ci: Sequence[float] | None) -> str:
  return "" if not ci else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _labels(result: dict[str, Any]) -> str:
  if result["mode"] == "finetune":
    return f"{result['split']} ({100 * result['label_fraction']:g}%)"
  return "train (frozen encoder)"


def _figure_name(name: str, stem: str) -> str:
  return f"{stem}_{name.replace('/', '_')}.png"


def _classification(runs: list[Run], figures: epath.Path) -> str:
  rows = [[r.name, r.metrics["mode"], r.dataset, r.metrics.get("init", ""), _labels(r.metrics),
           f"**{_fmt(r.metrics['test']['mean_auc'])}**", _ci(r.metrics["test"]["mean_auc_ci95"]),
           str(r.metrics["test"]["num_examples"])] for r in runs]
  parts = ["## Classification (test split)",
           markdown_table(["run", "mode", "dataset", "encoder", "labels", "test mean AUC",
                           "95% CI", "test images"], rows)]
  groups: dict[tuple[str, ...], list[Run]] = {}
  for r in runs:
    groups.setdefault(tuple(r.metrics["test"]["per_class_auc"]), []).append(r)
  for i, (classes, members) in enumerate(groups.items(), start=1):
    rows = [[c] + [_fmt(r.metrics["test"]["per_class_auc"][c]) for r in members] for c in classes]
    rows.append(["**mean**"] + [_fmt(r.metrics["test"]["mean_auc"]) for r in members])
    per_class = {r.name: np.array([np.nan if r.metrics["test"]["per_class_auc"][c] is None
                                   else r.metrics["test"]["per_class_auc"][c] for c in classes])
                 for r in members}
    bars = auc_bars(classes, per_class, figures / f"auc_per_class_{i}.png")
    parts += [f"### Per-class test AUC ({', '.join(sorted({r.dataset for r in members}))})",
              markdown_table(["class"] + [r.name for r in members], rows),
              f"![per-class AUC]({FIGURES}/{bars})"]
  rocs = []
  for r in runs:
    saved = score_files.load_scores(r.path)
    if saved is not None:
      name = report_figures.roc_curves(saved.labels, saved.scores, saved.class_names,
                                       figures / _figure_name(r.name, "roc"),
                                       f"{r.name}: test ROC curves (AUC)")
      rocs.append(f"![ROC curves of {r.name}]({FIGURES}/{name})")
  if rocs:
    parts += ["### ROC curves (test split)"] + rocs
  curves: dict[str, dict[str, list]] = {}
  for r in (r for r in runs if r.metrics["mode"] == "finetune"):
    t = r.metrics["test"]
    curves.setdefault(r.dataset, {}).setdefault(f"{r.metrics['init']} encoder", []).append(
        (r.metrics["label_fraction"], t["mean_auc"], t["mean_auc_ci95"]))
  for i, (dataset, lines) in enumerate(curves.items(), start=1):
    lines = {k: [p for p in v if p[1] is not None] for k, v in lines.items()}
    name = report_figures.label_fraction_curves(lines, figures / f"label_fraction_{i}.png",
                                                f"Fine-tuning on {dataset}")
    parts += [f"### Label fraction ({dataset})", f"![label fraction]({FIGURES}/{name})"]
  return "\n\n".join(parts)


def _copy_figure(run: Run, key: str, figures: epath.Path, stem: str) -> str | None:
  """Copies the figure a run drew (``metrics[key]``) into ``figures``; its new name."""
  if not run.metrics.get(key):
    return None
  source = run.path / run.metrics[key]
  if not source.exists():
    return None
  target = figures / _figure_name(run.name, stem)
  figures.mkdir(parents=True, exist_ok=True)
  source.copy(target, overwrite=True)
  return target.name


def _segmentation(runs: list[Run], figures: epath.Path) -> str:
  tests = [r.metrics["test"] for r in runs]
  rows = [[r.name, r.dataset, r.metrics.get("init", ""), f"**{_fmt(t['dice_all'])}**",
           _fmt(t["dice_positive"]), str(t["num_images"]), str(t["num_positive"])]
          for r, t in zip(runs, tests)]
  bars = report_figures.dice_bars(
      {r.name: (t["dice_all"], t["dice_positive"]) for r, t in zip(runs, tests)},
      figures / "dice.png")
  parts = ["## Segmentation (test split)",
           markdown_table(["run", "dataset", "encoder", "Dice (all images)",
                           "Dice (positive images)", "images", "positive images"], rows),
           f"![Dice]({FIGURES}/{bars})"]
  for r in runs:
    name = _copy_figure(r, "examples_figure", figures, "segment_examples")
    if name:
      parts.append(f"![segmentation examples of {r.name}]({FIGURES}/{name})")
  return "\n\n".join(parts)


def _localisation(runs: list[Run], figures: epath.Path) -> str:
  rows = []
  for r in runs:
    for method, m in r.metrics["methods"].items():
      rows.append([r.name, r.dataset, method, m["source"].get("init", ""),
                   f"**{_fmt(m['pointing_game'])}**", _fmt(m["iou"]), _fmt(m["chance"]),
                   str(m["num_instances"])])
  parts = ["## Localisation (boxes of the test split)",
           "Pointing game: share of finding instances whose heatmap maximum lies in a box of the "
           "class; IoU of the thresholded heatmap with the boxes; chance: the boxes' share of the "
           "image. Means over classes.",
           markdown_table(["run", "dataset", "method", "maps of", "pointing game", "IoU",
                           "chance", "instances"], rows)]
  for r in runs:
    methods = r.metrics["methods"]
    classes = list(dict.fromkeys(c for m in methods.values() for c in m["per_class"]))
    def cell(method: str, name: str) -> str:
      scores = methods[method]["per_class"].get(name)
      return "" if scores is None else f"{_fmt(scores['pointing_game'])} / {_fmt(scores['iou'])}"

    rows = [[c] + [cell(m, c) for m in methods] for c in classes]
    mode = r.metrics["threshold_mode"].replace("_", " ")
    parts += [f"### {r.name}: per class (pointing game / IoU, region: {mode} "
              f"{r.metrics['threshold']:g})",
              markdown_table(["class"] + list(methods), rows)]
    name = _copy_figure(r, "figure", figures, "localize_examples")
    if name:
      parts.append(f"![heatmaps of {r.name}]({FIGURES}/{name})")
  return "\n\n".join(parts)


def write_report(workdirs: Sequence[str | epath.PathLike], out: str | epath.PathLike
                 ) -> epath.Path:
  """Writes ``<out>/report.md`` and ``<out>/figures/*.png`` for the runs in ``workdirs``."""
  runs, missing = collect(workdirs)
  out = epath.Path(out)
  figures = out / FIGURES
  figures.mkdir(parents=True, exist_ok=True)
  of = lambda modes: [r for r in runs if r.metrics["mode"] in modes]
  sections = ["# Evaluation report",
              markdown_table(["run", "mode", "workdir"],
                             [[r.name, r.metrics["mode"], str(r.path)] for r in runs])]
  if missing:
    sections.append("Not run (no `metrics.json`): " + ", ".join(f"`{p}`" for p in missing) + ".")
  if of(CLASSIFICATION_MODES):
    sections.append(_classification(of(CLASSIFICATION_MODES), figures))
  if of(("segment",)):
    sections.append(_segmentation(of(("segment",)), figures))
  if of(("localize",)):
    sections.append(_localisation(of(("localize",)), figures))
  path = out / "report.md"
  path.write_text("\n\n".join(sections) + "\n")
  return path


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m otcxr_jax.reporting",
      description="Collects the metrics.json of evaluation workdirs (linear_probe, knn, finetune, "
                  "segment, localize) into one report.md with tables and plots.")
  parser.add_argument("workdirs", nargs="+", help="workdirs of evaluation runs")
  parser.add_argument("--out", required=True, help="directory of report.md and figures/")
  args = parser.parse_args(argv)
  try:
    path = write_report(args.workdirs, args.out)
  except (FileNotFoundError, ValueError) as e:
    print(f"report: {e}", file=sys.stderr)
    return 2
  print(f"report: {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
