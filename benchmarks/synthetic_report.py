"""The synthetic benchmark's evaluations, its results table and ``report.md`` with plots.

Everything in the report is read back from files: the ``metrics.json`` (and, for the paired
comparisons, the ``test_scores.npz``) that each evaluation mode
writes (``<workdir>/runs/<row>/seed<k>/<evaluation>/metrics.json``) and the timing results
(``<workdir>/timing/<run>.json``), so a report rebuilt from a finished or partial benchmark
directory shows exactly what those files hold.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
from typing import Any, Callable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from etils import epath  # noqa: E402

from benchmarks import comparison_plot, step_timing  # noqa: E402
from otcxr_jax.evaluation import metrics as auc_metrics  # noqa: E402
from otcxr_jax.evaluation import score_files  # noqa: E402
from otcxr_jax.reporting import plots  # noqa: E402
from otcxr_jax.reporting import summary as report_lib  # noqa: E402

METRICS_FILE = "metrics.json"
#: Reference rows: the encoder at initialisation, supervised training from scratch, and the linear
#: probe of raw pixels (the images downsampled to ``probe.pixel_floor_size``, as in the demo).
REFERENCES = ("random_init", "supervised", "raw_pixels")


def _test_auc(metrics: Mapping[str, Any]) -> float | None:
  return metrics["test"]["mean_auc"]


def _test_per_class_auc(metrics: Mapping[str, Any]) -> Mapping[str, float | None]:
  return metrics["test"]["per_class_auc"]


@dataclasses.dataclass(frozen=True)
class Evaluation:
  """An evaluation of an encoder: the mode that runs it and the report columns it fills.

  Attributes:
    mode: module of ``otcxr_jax.modes`` whose ``run(config, workdir)`` runs it.
    columns: column name -> its value in the evaluation's ``metrics.json`` (None: undefined).
    finetune_split: the label fraction of a fine-tuning evaluation (``config.finetune.split``).
    requires: the evaluation of the same row whose workdir this one reads (localisation explains
      the fine-tuned classifier of ``finetune_10pct``), run before it.
    per_class: ``metrics.json`` -> ``{class: value}`` (None: undefined), the per-class values
      of its first column (None: the evaluation has none).
    scores: the mode saves its test scores (``evaluation/score_files.py``), which the paired
      comparisons of the report read.
    fields: the config fields the evaluation sets beyond the shared config (nested, as
      ``benchmark_runs``), e.g. the probe's readout.
    pixel_floor: the paired comparisons set each row against the ``raw_pixels`` row's probe of
      the pixels (``PIXEL_EVALUATION``), the floor of every linear readout of the image.
  """

  mode: str
  columns: Mapping[str, Callable[[Mapping[str, Any]], float | None]]
  finetune_split: str | None = None
  requires: str | None = None
  per_class: Callable[[Mapping[str, Any]], Mapping[str, float | None]] | None = None
  scores: bool = False
  fields: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  pixel_floor: bool = False


def _pointing_game(method: str) -> Callable[[Mapping[str, Any]], float | None]:
  return lambda m: (m["methods"].get(method) or {}).get("pointing_game")


EVALUATIONS: dict[str, Evaluation] = {
    "linear_probe": Evaluation("linear_probe", {"linear probe AUC": _test_auc},
                               per_class=_test_per_class_auc, scores=True),
    # The same probe of the dense map flattened (h x w cells x C channels): a linear readout that
    # keeps where things are, as the demo's probe (configs/demo.py).
    "linear_probe_map": Evaluation("linear_probe", {"linear probe AUC (dense map)": _test_auc},
                                   per_class=_test_per_class_auc, scores=True,
                                   fields={"probe": {"readout": "map"}}, pixel_floor=True),
    "knn": Evaluation("knn", {"kNN AUC": _test_auc}, per_class=_test_per_class_auc),
    "finetune_1pct": Evaluation("finetune", {"fine-tune 1% AUC": _test_auc}, "train_1pct",
                                per_class=_test_per_class_auc, scores=True),
    "finetune_10pct": Evaluation("finetune", {"fine-tune 10% AUC": _test_auc}, "train_10pct",
                                 per_class=_test_per_class_auc, scores=True),
    "finetune_100pct": Evaluation("finetune", {"fine-tune 100% AUC": _test_auc}, "train",
                                  per_class=_test_per_class_auc, scores=True),
    "segment": Evaluation("segment", {
        "segment Dice (all)": lambda m: m["test"]["dice_all"],
        "segment Dice (positive)": lambda m: m["test"]["dice_positive"],
    }),
    "localize": Evaluation("localize", {
        "pointing game (CAM)": _pointing_game("cam"),
        "pointing game (CV-SIM attention)": _pointing_game("attention"),
        "pointing game (transport)": _pointing_game("transport"),
    }, requires="finetune_10pct"),
}
#: The evaluation of the ``supervised`` reference (from random initialisation, every label).
SUPERVISED_EVALUATION = "finetune_100pct"
#: The one evaluation of the ``raw_pixels`` reference (when the benchmark runs it).
PIXEL_EVALUATION = "linear_probe"


def mode_available(mode: str) -> bool:
  """Whether ``otcxr_jax.modes.<mode>`` exists in this checkout."""
  return importlib.util.find_spec(f"otcxr_jax.modes.{mode}") is not None


def rows(config: ml_collections.ConfigDict) -> list[str]:
  """The table's rows: the runs, then the references."""
  return list(config.benchmark.runs) + list(config.benchmark.references)


def evaluated(config: ml_collections.ConfigDict, row: str, evaluation: str) -> bool:
  """Whether ``evaluation`` runs on ``row``: every row, unless ``benchmark.evaluation_rows``
  names the rows it is limited to."""
  limited = config.benchmark.get("evaluation_rows") or {}
  return evaluation not in limited or row in limited[evaluation]


def layout(config: ml_collections.ConfigDict) -> list[tuple[str, str]]:
  """``[(row, evaluation), ...]`` the benchmark runs: modes missing from the checkout left out."""
  out = []
  for row in rows(config):
    if row == "supervised":
      evaluations = [SUPERVISED_EVALUATION]
    elif row == "raw_pixels":
      evaluations = [e for e in config.benchmark.evaluations if e == PIXEL_EVALUATION]
    else:
      evaluations = list(config.benchmark.evaluations)
    out += [(row, e) for e in evaluations
            if mode_available(EVALUATIONS[e].mode) and evaluated(config, row, e)]
  return out


def metrics_path(workdir: epath.Path, row: str, seed: int, evaluation: str) -> epath.Path:
  return workdir / "runs" / row / f"seed{seed}" / evaluation / METRICS_FILE


@dataclasses.dataclass
class Table:
  """Per-seed values read from the ``metrics.json`` files.

  Attributes:
    rows: row names in table order.
    columns: column names in table order.
    values: ``values[row][column]``: one float per seed read (NaN where undefined).
    sources: the ``metrics.json`` paths read.
    not_run: ``(row, column)`` cells whose evaluation the config does not run on that row.
  """

  rows: list[str]
  columns: list[str]
  values: dict[str, dict[str, list[float]]]
  sources: list[str]
  not_run: frozenset[tuple[str, str]] = frozenset()

  def stats(self, row: str, column: str) -> tuple[float, float, int]:
    """``(mean, sample std, n)`` over the defined values (std NaN for n < 2; all NaN for 0)."""
    x = np.asarray([v for v in self.values[row].get(column, []) if not math.isnan(v)])
    if x.size == 0:
      return math.nan, math.nan, 0
    return float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else math.nan, int(x.size)

  def interval(self, row: str, column: str) -> tuple[float, float]:
    """The 95% Student-t interval of the mean over the seeds (``auc_metrics.seed_interval``; NaN
    bounds for fewer than two defined values)."""
    return auc_metrics.seed_interval(self.values[row].get(column, []))[1:]

  def best(self, column: str) -> float:
    """The largest row mean of ``column`` (every metric here is better when higher)."""
    means = [m for m in (self.stats(r, column)[0] for r in self.rows) if not math.isnan(m)]
    return max(means) if means else math.nan


def collect(config: ml_collections.ConfigDict, workdir: epath.Path) -> Table:
  """The table of the ``metrics.json`` files present for the config's rows and seeds."""
  steps = layout(config)
  columns = []
  for _, e in steps:
    columns += [c for c in EVALUATIONS[e].columns if c not in columns]
  values = {row: {} for row in rows(config)}
  sources = []
  for row, e in steps:
    for path, metrics in _present_metrics(config, workdir, row, e):
      sources.append(str(path))
      for column, read in EVALUATIONS[e].columns.items():
        value = read(metrics)
        values[row].setdefault(column, []).append(math.nan if value is None else float(value))
  ran = {(row, c) for row, e in steps for c in EVALUATIONS[e].columns}
  not_run = frozenset((r, c) for r in rows(config) for c in columns if (r, c) not in ran)
  return Table(rows=rows(config), columns=columns, values=values, sources=sources,
               not_run=not_run)


def _present_metrics(config: ml_collections.ConfigDict, workdir: epath.Path, row: str,
                     evaluation: str):
  """``(path, metrics)`` of each seed's ``metrics.json`` of ``row``'s ``evaluation`` that exists."""
  for seed in range(config.benchmark.seeds):
    path = metrics_path(workdir, row, seed, evaluation)
    if path.exists():
      yield path, json.loads(path.read_text())


def collect_per_class(config: ml_collections.ConfigDict, workdir: epath.Path,
                      evaluation: str) -> Table | None:
  """The per-class table of ``evaluation`` on the rows it runs on: its headline column (the mean
  over the classes, as in the results table), then one column per class, from the
  ``metrics.json`` files present. None when the evaluation has no per-class values or runs on no
  row."""
  spec = EVALUATIONS[evaluation]
  rows_run = [row for row, e in layout(config) if e == evaluation]
  if spec.per_class is None or not rows_run:
    return None
  headline = next(iter(spec.columns))
  columns = [headline]
  values = {row: {} for row in rows_run}
  sources = []
  for row in rows_run:
    for path, metrics in _present_metrics(config, workdir, row, evaluation):
      sources.append(str(path))
      cells = {headline: spec.columns[headline](metrics), **spec.per_class(metrics)}
      for column, value in cells.items():
        if column not in columns:
          columns.append(column)
        values[row].setdefault(column, []).append(math.nan if value is None else float(value))
  return Table(rows=rows_run, columns=columns, values=values, sources=sources)


def markdown_per_class(config: ml_collections.ConfigDict, workdir: epath.Path) -> str:
  """One table per evaluation with per-class values: the headline beside each class."""
  sections = []
  for evaluation in dict.fromkeys(e for _, e in layout(config)):
    table = collect_per_class(config, workdir, evaluation)
    if table is not None:
      sections.append(f"### {table.columns[0]}\n\n"
                      f"{markdown_results(table, config.benchmark.seeds)}")
  return "\n\n".join(sections) or "No evaluation with per-class values was run."


#: The feature-spread diagnostics (``evaluation/diagnostics.py``) the linear probe records for
#: each encoder it probes: column -> key of ``metrics.json``'s ``feature_spread``.
SPREAD_COLUMNS = {"position share": "position_share", "image share": "image_share",
                  "pooled std/\\|mean\\|": "pooled_std_over_mean"}


def collect_spread(config: ml_collections.ConfigDict, workdir: epath.Path) -> Table | None:
  """The feature spread of every encoder the linear probe read, from the ``metrics.json`` files
  present that record it (files of an older probe do not); None when none does."""
  values, sources = {}, []
  for row, e in layout(config):
    if e != PIXEL_EVALUATION or row == "raw_pixels":
      continue
    for path, metrics in _present_metrics(config, workdir, row, e):
      if metrics.get("feature_spread"):
        sources.append(str(path))
        for column, key in SPREAD_COLUMNS.items():
          values.setdefault(row, {}).setdefault(column, []).append(
              float(metrics["feature_spread"][key]))
  if not values:
    return None
  return Table(rows=list(values), columns=list(SPREAD_COLUMNS), values=values, sources=sources)


def markdown_spread(config: ml_collections.ConfigDict, workdir: epath.Path) -> str:
  """The feature-spread table (4 decimals, nothing in bold: no value is better in itself)."""
  table = collect_spread(config, workdir)
  if table is None:
    return "No linear-probe run recorded the feature spread."
  return markdown_results(table, config.benchmark.seeds, bold_best=False, digits=4)


def format_cell(mean: float, std: float, n: int, seeds: int,
                interval: tuple[float, float] | None = None, digits: int = 3) -> str:
  """``mean ± std`` (``digits`` decimals), then ``interval`` ``[low, high]`` where given and
  defined; the mean alone for one value; ``(n=…)`` when fewer than ``seeds`` values were
  defined; ``n/a`` for none."""
  if n == 0:
    return "n/a"
  f = lambda x: f"{x:.{digits}f}"
  text = f(mean) if math.isnan(std) else f"{f(mean)} ± {f(std)}"
  if interval is not None and not math.isnan(interval[0]):
    text += f" [{f(interval[0])}, {f(interval[1])}]"
  return text if n == seeds else f"{text} (n={n})"


def markdown_results(table: Table, seeds: int, intervals: bool = False, bold_best: bool = True,
                     digits: int = 3) -> str:
  """The results table, the best mean of each column in bold (unless not ``bold_best``); with
  ``intervals``, each cell's 95% interval of the mean over the seeds (``Table.interval``) after
  its mean ± std."""
  body = []
  for row in table.rows:
    cells = [row]
    for column in table.columns:
      if (row, column) in table.not_run:
        cells.append("–")
        continue
      mean, std, n = table.stats(row, column)
      text = format_cell(mean, std, n, seeds,
                         table.interval(row, column) if intervals else None, digits)
      cells.append(f"**{text}**" if bold_best and n and mean == table.best(column) else text)
    body.append(cells)
  return report_lib.markdown_table(["run"] + table.columns, body)


@dataclasses.dataclass(frozen=True)
class Comparison:
  """``reference`` minus ``row`` on one evaluation, over the seeds both have test scores for.

  Attributes:
    difference: mean over those seeds of the two rows' test mean-AUC difference.
    test_interval: 95% paired bootstrap interval over the test images of that seed-averaged
      difference (``metrics.paired_mean_auc_difference_over_runs``): the test split's noise.
    seed_interval: 95% Student-t interval over the seeds' differences: the runs' noise (NaN
      bounds for one seed).
    per_seed: each seed's difference.
  """

  evaluation: str
  reference: str
  row: str
  difference: float
  test_interval: tuple[float, float]
  seed_interval: tuple[float, float]
  per_seed: tuple[float, ...]


def _seed_scores(workdir: epath.Path, row: str, seed: int, evaluation: str):
  return score_files.load_scores(metrics_path(workdir, row, seed, evaluation).parent)


def _mean_auc_difference(labels: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
  """Mean AUC of ``a`` minus that of ``b`` over the classes defined for both."""
  pa, pb = auc_metrics.per_class_auc(labels, a), auc_metrics.per_class_auc(labels, b)
  defined = ~np.isnan(pa) & ~np.isnan(pb)
  return float(np.mean(pa[defined] - pb[defined])) if defined.any() else math.nan


def _compared_rows(steps: Sequence[tuple[str, str]], reference: str, evaluation: str
                   ) -> list[tuple[str, str]]:
  """``[(row, the evaluation whose scores stand for it), ...]`` set against ``reference`` on
  ``evaluation``: the rows it ran on, and the pixel floor where it is one
  (``Evaluation.pixel_floor``)."""
  out = [(r, e) for r, e in steps if e == evaluation and r != reference]
  if (EVALUATIONS[evaluation].pixel_floor and ("raw_pixels", PIXEL_EVALUATION) in steps
      and ("raw_pixels", evaluation) not in steps):
    out.append(("raw_pixels", PIXEL_EVALUATION))
  return out


def paired_comparisons(config: ml_collections.ConfigDict, workdir: epath.Path,
                       num_samples: int = 1000) -> list[Comparison]:
  """The first run of ``benchmark.runs`` (OTCXR by default) against every other row, on each
  evaluation that saves test scores, over the seeds both rows have scores for; on a readout of
  the image (``Evaluation.pixel_floor``) also against the probe of the pixels."""
  reference = config.benchmark.runs[0]
  steps = layout(config)
  out = []
  for evaluation in dict.fromkeys(e for _, e in steps):
    if not EVALUATIONS[evaluation].scores or (reference, evaluation) not in steps:
      continue
    for row, row_evaluation in _compared_rows(steps, reference, evaluation):
      pairs = [(_seed_scores(workdir, reference, k, evaluation),
                _seed_scores(workdir, row, k, row_evaluation))
               for k in range(config.benchmark.seeds)]
      pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
      if not pairs:
        continue
      labels = pairs[0][0].labels
      for a, b in pairs:
        if a.labels.shape != labels.shape or b.labels.shape != labels.shape or not (
            np.array_equal(a.labels, labels) and np.array_equal(b.labels, labels)):
          raise ValueError(f"{evaluation}: the test labels of {reference!r} and {row!r} differ "
                           f"between seeds or rows; paired comparisons need the same test split")
      per_seed = tuple(_mean_auc_difference(labels, a.scores, b.scores) for a, b in pairs)
      difference, low, high = auc_metrics.paired_mean_auc_difference_over_runs(
          labels, [a.scores for a, _ in pairs], [b.scores for _, b in pairs],
          num_samples=num_samples, seed=config.seed)
      out.append(Comparison(evaluation, reference, row, difference, (low, high),
                            auc_metrics.seed_interval(per_seed)[1:], per_seed))
  return out


def _signed_interval(interval: tuple[float, float]) -> str:
  low, high = interval
  return "n/a" if math.isnan(low) else f"[{low:+.3f}, {high:+.3f}]"


def markdown_comparisons(comparisons: Sequence[Comparison]) -> str:
  """One line per comparison: the difference, its two intervals and the seeds ahead."""
  if not comparisons:
    return "No evaluation with saved test scores ran on two rows."
  column = {e: next(iter(spec.columns)) for e, spec in EVALUATIONS.items()}
  body = [[column[c.evaluation], f"{c.reference} minus {c.row}", f"{c.difference:+.3f}",
           _signed_interval(c.test_interval), _signed_interval(c.seed_interval),
           f"{sum(d > 0 for d in c.per_seed)} of {len(c.per_seed)}",
           ", ".join(f"{d:+.3f}" for d in c.per_seed)] for c in comparisons]
  return report_lib.markdown_table(
      ["evaluation", "comparison", "difference (mean over seeds)", "95% CI, test images",
       "95% CI, seeds", "seeds ahead", "per seed"], body)


def _slug(text: str) -> str:
  return "_".join("".join(ch if ch.isalnum() else " " for ch in text.lower()).split())


def bar_chart(names: Sequence[str], means: Sequence[float], stds: Sequence[float],
              path: epath.Path, *, title: str) -> str:
  """One bar per name, ±std error bars (NaN: none); undefined means left out. Returns the
  file name."""
  keep = [i for i, m in enumerate(means) if not math.isnan(m)]
  fig, ax = plt.subplots(figsize=(1.2 + 0.55 * max(len(keep), 1), 3.4))
  x = np.arange(len(keep))
  errors = [0.0 if math.isnan(stds[i]) else stds[i] for i in keep]
  ax.bar(x, [means[i] for i in keep], yerr=errors if any(errors) else None, capsize=3,
         color="tab:blue")
  ax.set_xticks(x, [names[i] for i in keep], rotation=45, ha="right", fontsize=8)
  if keep:  # zoom on the bars' range (differences of a few hundredths must be visible)
    low = min(means[i] - e for i, e in zip(keep, errors))
    high = max(means[i] + e for i, e in zip(keep, errors))
    pad = 0.15 * (high - low) or 0.01 * max(abs(high), 1e-3)
    ax.set_ylim(max(0.0, low - pad) if low >= 0 else low - pad, high + pad)
  ax.set_title(title)
  ax.grid(axis="y", alpha=0.3)
  fig.tight_layout()
  return plots.save_figure(fig, path)


def comparison_plots(comparisons: Sequence[Comparison], directory: epath.Path) -> list[str]:
  """One forest plot per evaluation of ``comparisons`` (``comparison_plot``), in
  ``directory``; returns their markdown image links."""
  column = {e: next(iter(spec.columns)) for e, spec in EVALUATIONS.items()}
  links = []
  for evaluation in dict.fromkeys(c.evaluation for c in comparisons):
    group = [c for c in comparisons if c.evaluation == evaluation]
    title = f"{column[evaluation]}: paired differences (test)"
    name = comparison_plot.forest_plot(
        [c.row for c in group], [c.difference for c in group], [c.test_interval for c in group],
        [c.seed_interval for c in group], directory / f"paired_{_slug(column[evaluation])}.png",
        reference=group[0].reference, title=title)
    links.append(f"![{title}](plots/{name})")
  return links


def timed_runs(config: ml_collections.ConfigDict) -> list[str]:
  """The runs whose train step is timed: ``benchmark.timed_runs``, or every run when None."""
  b = config.benchmark
  return list(b.runs if b.timed_runs is None else b.timed_runs)


def read_timings(config: ml_collections.ConfigDict, workdir: epath.Path) -> dict[str, dict]:
  """``{run: timing result}`` of the ``<workdir>/timing/<run>.json`` files present."""
  out = {}
  for run in timed_runs(config):
    path = workdir / "timing" / f"{run}.json"
    if path.exists():
      out[run] = json.loads(path.read_text())
  return out


def markdown_runtime(timings: Mapping[str, Mapping[str, Any]]) -> str:
  """The runtime table, how memory was measured, and OTCXR's overhead over VICReg."""
  if not timings:
    return "No train step was timed."
  mib = lambda b: f"{b / 2**20:.1f}"
  body = [[run, f"{t['seconds_per_step']:.4f}", f"{t['images_per_s']:.1f}",
           mib(t["peak_memory_bytes"]), mib(t["memory_before_bytes"]), f"{t['compile_s']:.1f}"]
          for run, t in timings.items()]
  table = report_lib.markdown_table(
      ["run", "s / step", "images / s", "peak memory (MiB)", "before model (MiB)",
       "compile (s)"], body)
  first = next(iter(timings.values()))
  sources = sorted({t["memory_source"] for t in timings.values()})
  lines = [
      f"Batch {first['batch_size']}, {first['image_size']}x{first['image_size']} images, "
      f"{first['devices']}; median of {first['steps']} steps after {first['warmup']} warm-up, "
      f"each run in a fresh process. Memory: "
      + "; ".join(step_timing.MEMORY_SOURCES[s] for s in sources) + ".",
      "", table, ""]
  if "otcxr" in timings and "vicreg" in timings:
    o, v = timings["otcxr"], timings["vicreg"]
    lines.append(f"OTCXR over VICReg: {o['seconds_per_step'] / v['seconds_per_step']:.2f}x the "
                 f"time per step, {o['peak_memory_bytes'] / v['peak_memory_bytes']:.2f}x the "
                 f"peak memory.")
  else:
    lines.append("OTCXR's overhead over VICReg needs both runs 'otcxr' and 'vicreg'.")
  return "\n".join(lines)


def runtime_plots(timings: Mapping[str, Mapping[str, Any]], directory: epath.Path) -> list[str]:
  """Bar charts of seconds per step and peak memory per run in ``directory``; returns their
  markdown image links (relative to ``directory``'s parent)."""
  links = []
  if not timings:
    return links
  for key, label, scale in (("seconds_per_step", "seconds per step", 1.0),
                            ("peak_memory_bytes", "peak memory (MiB)", 2.0**-20)):
    name = bar_chart(list(timings), [t[key] * scale for t in timings.values()],
                     [math.nan] * len(timings), directory / f"runtime_{_slug(label)}.png",
                     title=label)
    links.append(f"![{label}]({directory.name}/{name})")
  return links


def _flat(overrides, prefix: str = "") -> list[str]:
  """```a.b=value``` for every leaf of nested overrides."""
  out = []
  for key, value in overrides.items():
    if isinstance(value, (Mapping, ml_collections.ConfigDict)):
      out += _flat(value, f"{prefix}{key}.")
    else:
      out.append(f"`{prefix}{key}={value!r}`")
  return out


def write_report(config: ml_collections.ConfigDict, workdir: epath.Path,
                 notes: Sequence[str] = ()) -> epath.Path:
  """``<workdir>/report.md`` and its PNG plots (``<workdir>/plots``) from the files present.

  ``notes``: evaluations that could not run (e.g. a mode missing from the checkout).
  """
  table = collect(config, workdir)
  seeds = config.benchmark.seeds
  figures = []
  for column in table.columns:
    stats = [table.stats(row, column) for row in table.rows]
    name = bar_chart(table.rows, [s[0] for s in stats], [s[1] for s in stats],
                     workdir / "plots" / f"{_slug(column)}.png", title=f"{column} (test)")
    figures.append(f"![{column}](plots/{name})")
  timings = read_timings(config, workdir)
  figures += runtime_plots(timings, workdir / "plots")
  comparisons = paired_comparisons(config, workdir)
  comparison_figures = "\n".join(comparison_plots(comparisons, workdir / "plots"))
  c = config
  definitions = [[run, ", ".join(_flat(c.benchmark_runs[run])) or "(the shared config)"]
                 for run in c.benchmark.runs]
  cohort = f", {c.data.synthetic_patients} patients" if c.data.synthetic_patients else ""
  not_run = "".join(f"- {n}\n" for n in notes)
  not_run = f"Not evaluated:\n\n{not_run}\n" if not_run else ""
  newline = "\n"
  data = (f"`{c.data.name}/{c.data.config}` ({c.data.image_size}x{c.data.image_size}{cohort}); "
          f"every metric on the test split")
  shared = (f"encoder `{c.model.encoder}` (width {c.model.width}, stem `{c.model.stem}`), "
            f"projector {c.model.projector_hidden} -> {c.model.projector_dim}, optimiser "
            f"`{c.optim.name}` (base learning rate {c.optim.base_learning_rate}), batch "
            f"{c.train.batch_size}, {c.train.num_steps} steps, the same augmentations")
  text = f"""# Synthetic benchmark

- data: {data}
- shared by every pretraining run: {shared}
- {len(c.benchmark.runs)} runs x {seeds} seed(s)

## Results (test split)

Mean ± sample standard deviation over the seeds, then the 95% Student-t interval of the mean
over the seeds (one seed: its value; `(n=…)`: fewer seeds gave a defined value; `n/a`:
undefined; `–`: not run on that row, see `benchmark.evaluation_rows`); the best mean of each
column in bold. `random_init`: the
encoder at initialisation; `supervised`: fine-tuned from random initialisation on 100% of the
labels; `raw_pixels`: the linear probe of the images downsampled to
{c.probe.pixel_floor_size}x{c.probe.pixel_floor_size}.

{markdown_results(table, seeds, intervals=True)}

{not_run}{newline.join(figures)}

## Paired comparisons (test split)

`{c.benchmark.runs[0]}` minus each other row, on the same test images, for each evaluation that
saves its test scores: the mean over the seeds of the difference of test mean AUC; its 95%
interval over the test images (paired bootstrap, every resample scoring each seed's runs on the
same images; the test split's noise given these runs), and its 95% Student-t interval over the
seeds (the runs' noise; n/a for one seed); the seeds on which `{c.benchmark.runs[0]}` is ahead,
and each seed's difference. A difference is clear when both intervals exclude 0. On a probe of
the dense map, `raw_pixels` is its probe of the pixels (the floor of any linear readout of the
image).

{markdown_comparisons(comparisons)}

{comparison_figures}

## Per-class AUC (test split)

Each AUC evaluation's headline, the mean over the findings (the column of the results table),
beside the AUC of each finding, on the rows it runs on; mean ± sample standard deviation over the
seeds, the best of each column in bold.

{markdown_per_class(config, workdir)}

## What the features carry (training images)

The linear probe's diagnostics of each encoder it read (`evaluation/diagnostics.py`, the first
512 training images): the shares of the dense map's variance between positions (what every image
has at a place) and between images (what moves a whole image's pooled feature; the rest is where
images differ at some places only), and the median over pooled-feature dimensions of
std/\\|mean\\| (near 0: pooled features nearly the same for every image); mean ± sample standard
deviation over the seeds (`(n=…)`: seeds whose probe recorded it).

{markdown_spread(config, workdir)}

## Runtime

{markdown_runtime(timings)}

## Runs

{report_lib.markdown_table(["run", "fields changed from the shared config"], definitions)}

Read from {len(table.sources)} metrics.json files under `runs/`.
"""
  path = workdir / "report.md"
  path.write_text(text)
  return path
