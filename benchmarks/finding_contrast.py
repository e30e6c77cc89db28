r"""How visible each synthetic finding is at each resolution, and how many test images the
synthetic benchmark needs for a tight mean AUC.

    python benchmarks/finding_contrast.py --out docs/finding_contrast \
        [--resolutions 64,128,224,256] [--examples 50] \
        [--test_patients 4000,6000,8000,9000,10000,12000]

**Contrast.** For each finding (``CLASS_NAMES``) the first ``--examples`` positive images of a
cohort (``--patients`` patients drawn from ``--seed``) are rendered three times at each
resolution, with the renderer itself (``phantom.Renderer``):

- ``clean``: noise-free (the image's ``noise`` parameter set to 0), with the finding;
- ``normal``: noise-free, the same image with that finding alone switched off (its flag set to 0;
  cardiomegaly: the cardiothoracic ratio set back to the patient's normal one); every other
  finding, the anatomy, the exposure and the distractors are unchanged;
- ``noisy``: the image as the dataset stores it (with its quantum noise).

Per image, in grey levels of the uint8 image:

- *area*: the pixels where ``|clean - normal| > 1`` (rounding alone moves a pixel by at most 1),
  the finding's footprint; an image whose area is empty counts as not visible;
- *peak* and *mean contrast*: the maximum and the mean of ``|clean - normal|`` over the area;
- *noise sd*: the standard deviation of ``noisy - clean`` over the area dilated by
  ``NOISE_MARGIN`` pixels (the renderer's noise has sd ``noise (0.3 + intensity)`` before the
  3-tap detector blur, so it is measured where the finding lies; the dilation gives a few dozen
  pixels even for a nodule of 3);
- *CNR*, the contrast-to-noise ratio of the whole finding: its summed contrast over the standard
  deviation of the noise summed over the same pixels with the same signs,
  ``CNR = sum_A |d| / sd(sum_A sign(d) n)`` with ``d = clean - normal`` and ``n`` the noise. The
  detector blur correlates neighbouring pixels: ``n = B w`` with ``w`` white of sd
  ``sigma / |B|`` (``|B| = 3/8``, the L2 norm of the ``[1, 2, 1]/4`` x ``[1, 2, 1]/4`` kernel) for a
  pixel sd ``sigma``, so ``sd(sum_A m n) = sigma |B m| / |B|`` for ``m = sign(d)`` on ``A``:

      CNR = mean contrast * A * |B| / (sigma * |B m|)

  which is ``mean contrast / sigma`` for one pixel and ``mean contrast / sigma * sqrt(A |B|^2)``
  (an independent noise sample per 7.1 pixels) for a large area. It is the z-score of an observer
  who knows the finding's footprint and sums the pixels there: an upper bound on detectability,
  since it ignores the variation of the anatomy (rib crossings, vessels, the heart's outline) that
  a model must tell findings apart from (``benchmarks/finding_search.py`` measures that for the
  round findings). By the Rose criterion a signal needs a CNR of about 5 to
  be seen at an unknown position in white noise;
- *local CNR*: the same ratio on the footprint's pixels within the ``LOCAL`` x ``LOCAL`` window
  centred on the largest ``|d|``: what the finding shows at the scale of a first convolution
  (a finding seen only as a faint shift over a large area has a high CNR and a low local CNR).

Reported per finding and resolution: the share of visible images, medians over the visible ones
of area (pixels and % of the image), peak and mean contrast, noise sd, CNR and local CNR, and the
10th percentile of the CNR and local CNR (the harder cases).

**Test size.** The 95% interval of the mean AUC (``bootstrap_auc_ci``, 1000 resamples of the test
images) is measured on the exact test split that the synthetic builder makes of a cohort of each
``--test_patients`` patients (patient-disjoint, 10% of the patients, so the cohort's label
prevalences and co-occurrences), with simulated scores of per-class AUC ``--auc``: for each class
``score = delta * label + N(0, 1)`` with ``delta = sqrt(2) Phi^-1(AUC)`` (binormal, equal
variances), independent between classes. The interval's half-width is averaged over
``--test_repeats`` draws of the scores; the smallest cohort whose mean half-width is at most
``--target`` is the benchmark's ``data.synthetic_patients``.

Output in ``--out``: ``report.md`` (both tables), ``cnr_by_resolution.png``,
``test_interval.png`` and ``results.json``.
"""

from __future__ import annotations

import pathlib
import sys

if not __package__:  # run as a file: make the repository root importable
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import dataclasses  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
from typing import Any, Sequence  # noqa: E402

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from etils import epath  # noqa: E402
from scipy import ndimage, special  # noqa: E402

from tfds_builders.synthetic_cxr import phantom  # noqa: E402
from otcxr_jax.evaluation import metrics  # noqa: E402
from otcxr_jax.reporting import plots  # noqa: E402
from otcxr_jax.reporting import summary as report_lib  # noqa: E402

CLASS_NAMES = phantom.CLASS_NAMES
CONTRAST_THRESHOLD = 1.0  # grey levels: the footprint of a finding
NOISE_MARGIN = 3  # pixels around the footprint where its noise sd is measured
LOCAL = 3  # side of the window of the local CNR
BLUR_NORM = 0.375  # L2 norm of the detector's separable [1, 2, 1]/4 blur kernel
ROSE_CNR = 5.0
#: Chronic findings are columns of the patient table; the rest of the image table.
_CARDIOMEGALY = "cardiomegaly"


@dataclasses.dataclass(frozen=True)
class Measurement:
  """One image's finding, in grey levels (all NaN but ``area`` when the area is empty)."""

  area: int
  peak: float
  mean: float
  noise_sd: float
  cnr: float
  local_cnr: float


def blur(x: np.ndarray) -> np.ndarray:
  """The detector blur's ``[1, 2, 1]/4`` x ``[1, 2, 1]/4`` kernel, zero outside the image (the
  transpose of the renderer's blur away from the border)."""
  k = np.array([0.25, 0.5, 0.25])
  y = ndimage.convolve1d(np.asarray(x, np.float64), k, axis=0, mode="constant")
  return ndimage.convolve1d(y, k, axis=1, mode="constant")


def cnr(difference: np.ndarray, area: np.ndarray, noise_sd: float) -> float:
  """``sum_A |d| / sd(sum_A sign(d) n)`` for blurred noise of pixel sd ``noise_sd`` (module
  docstring); ``area``: boolean footprint ``A``; infinite without noise."""
  if noise_sd == 0:
    return math.inf
  m = np.where(area, np.sign(difference), 0.0)
  signal = float(np.abs(difference[area]).sum())
  return signal * BLUR_NORM / (noise_sd * float(np.linalg.norm(blur(m))))


def measure(clean: np.ndarray, normal: np.ndarray, noisy: np.ndarray,
            threshold: float = CONTRAST_THRESHOLD, margin: int = NOISE_MARGIN,
            local: int = LOCAL) -> Measurement:
  """The finding ``clean - normal`` against the noise ``noisy - clean`` (2-D or ``(R, R, 1)``
  images of the same size)."""
  clean, normal, noisy = (np.asarray(x, np.float64).squeeze() for x in (clean, normal, noisy))
  d = clean - normal
  area = np.abs(d) > threshold
  size = int(area.sum())
  if not size:
    return Measurement(0, math.nan, math.nan, math.nan, math.nan, math.nan)
  near = ndimage.binary_dilation(area, iterations=margin) if margin else area
  noise_sd = float(np.std((noisy - clean)[near]))
  i, j = np.unravel_index(np.argmax(np.abs(d)), d.shape)
  window = np.zeros_like(area)
  h = local // 2
  window[max(i - h, 0):i + h + 1, max(j - h, 0):j + h + 1] = True
  return Measurement(size, float(np.abs(d[area]).max()), float(np.abs(d[area]).mean()), noise_sd,
                     cnr(d, area, noise_sd), cnr(d, area & window, noise_sd))


def variant(cohort: phantom.Cohort, index: int, *, without: str | None = None,
            noise_free: bool = False) -> phantom.Cohort:
  """The cohort with image ``index`` changed: ``without`` that finding switched off (on its
  patient's row for chronic findings), and/or its noise set to zero."""
  patients = {k: v.copy() for k, v in cohort.patients.items()}
  images = {k: v.copy() for k, v in cohort.images.items()}
  labels = cohort.labels.copy()
  patient = images["patient"][index]
  if without is not None:
    if without in patients:
      patients[without][patient] = 0
      if without == _CARDIOMEGALY:  # drawn by the anatomy from the ratio, not the flag
        patients["ctr"][patient] = patients["ctr_normal"][patient]
    else:
      images[without][index] = 0
    labels[index, CLASS_NAMES.index(without)] = 0
  if noise_free:
    images["noise"][index] = 0.0
  return dataclasses.replace(cohort, patients=patients, images=images, labels=labels)


def measure_finding(render: phantom.Renderer, cohort: phantom.Cohort, index: int,
                    finding: str) -> Measurement:
  """One positive image's ``finding`` at the renderer's resolution."""
  clean = render(variant(cohort, index, noise_free=True), index)["image"]
  normal = render(variant(cohort, index, without=finding, noise_free=True), index)["image"]
  noisy = render(cohort, index)["image"]
  return measure(clean, normal, noisy)


def positives(cohort: phantom.Cohort, finding: str, count: int) -> np.ndarray:
  """The first ``count`` image rows positive for ``finding``."""
  rows = np.flatnonzero(cohort.labels[:, CLASS_NAMES.index(finding)])
  if len(rows) < count:
    raise ValueError(f"{finding}: {len(rows)} positive images in a cohort of "
                     f"{cohort.num_patients} patients, {count} asked for; use more --patients.")
  return rows[:count]


def _median(values: Sequence[float]) -> float:
  values = [v for v in values if not math.isnan(v)]
  return statistics.median(values) if values else math.nan


def summarise(found: Sequence[Measurement], resolution: int) -> dict[str, float]:
  """Share visible and medians (CNR also its 10th percentile) over the visible images."""
  seen = [m for m in found if m.area]
  cnrs, local = [m.cnr for m in seen], [m.local_cnr for m in seen]
  return {
      "visible": len(seen) / len(found),
      "area_px": _median([m.area for m in seen]),
      "area_percent": 100 * _median([m.area for m in seen]) / resolution**2,
      "peak": _median([m.peak for m in seen]),
      "mean_contrast": _median([m.mean for m in seen]),
      "noise_sd": _median([m.noise_sd for m in seen]),
      "cnr": _median(cnrs),
      "cnr_p10": float(np.percentile(cnrs, 10)) if cnrs else math.nan,
      "local_cnr": _median(local),
      "local_cnr_p10": float(np.percentile(local, 10)) if local else math.nan,
  }


def contrast_table(resolutions: Sequence[int], examples: int, patients: int,
                   seed: int) -> dict[str, dict[int, dict[str, float]]]:
  """``{finding: {resolution: summarise(...)}}``."""
  cohort = phantom.sample_cohort(patients, seed)
  rows = {f: positives(cohort, f, examples) for f in CLASS_NAMES}
  out: dict[str, dict[int, dict[str, float]]] = {f: {} for f in CLASS_NAMES}
  for r in resolutions:
    render = phantom.Renderer(r)
    for f in CLASS_NAMES:
      out[f][r] = summarise([measure_finding(render, cohort, int(i), f) for i in rows[f]], r)
  return out


def test_split_labels(patients: int, seed: int = 0) -> np.ndarray:
  """Labels of the test split the synthetic builder makes of a cohort of ``patients``."""
  from tfds_builders.cxr_base import splits
  from tfds_builders.synthetic_cxr import synthetic_cxr_dataset_builder as builder
  cohort = phantom.sample_cohort(patients, seed)
  by_patient = builder.image_ids_by_patient(cohort)
  test = splits.split_patients(by_patient, builder.SPLIT_FRACTIONS,
                               seed=f"synthetic_cxr/{seed}")["test"]
  return cohort.labels[[builder.image_index(i) for i in test]]


def simulated_scores(labels: np.ndarray, auc: float, rng: np.random.Generator) -> np.ndarray:
  """Binormal scores with AUC ``auc`` in each column: ``sqrt(2) Phi^-1(auc) label + N(0, 1)``."""
  delta = math.sqrt(2.0) * float(special.ndtri(auc))
  return delta * labels + rng.standard_normal(labels.shape)


def interval_half_width(labels: np.ndarray, auc: float, repeats: int, seed: int = 0,
                        num_samples: int = 1000) -> list[float]:
  """Half-widths of the mean AUC's bootstrap 95% interval, one per draw of simulated scores."""
  rng = np.random.default_rng(seed)
  out = []
  for r in range(repeats):
    ci = metrics.bootstrap_auc_ci(labels, simulated_scores(labels, auc, rng),
                                  num_samples=num_samples, seed=seed + r)
    out.append((ci.mean[1] - ci.mean[0]) / 2)
  return out


def test_size_table(patient_counts: Sequence[int], aucs: Sequence[float], repeats: int,
                    seed: int = 0) -> list[dict[str, Any]]:
  """One row per cohort size: test images, fewest positives of a class, the half-width by AUC."""
  out = []
  for n in patient_counts:
    labels = test_split_labels(n, seed)
    positive = labels.sum(0)
    row = {"patients": int(n), "test_images": int(len(labels)),
           "min_positives": int(positive.min()),
           "min_positives_class": CLASS_NAMES[int(positive.argmin())], "half_width": {}}
    for a in aucs:
      widths = interval_half_width(labels, a, repeats, seed)
      row["half_width"][f"{a:g}"] = {"mean": float(np.mean(widths)),
                                     "max": float(np.max(widths))}
    out.append(row)
  return out


def chosen_patients(rows: Sequence[dict[str, Any]], auc: float, target: float) -> int | None:
  """The smallest cohort whose mean half-width at ``auc`` is within ``target`` (None: none)."""
  fits = [r["patients"] for r in rows if r["half_width"][f"{auc:g}"]["mean"] <= target]
  return min(fits) if fits else None


def _fmt(x: float, digits: int = 1) -> str:
  return "–" if math.isnan(x) else f"{x:.{digits}f}"


def markdown_contrast(table: dict[str, dict[int, dict[str, float]]]) -> tuple[str, str, str]:
  """The CNR and local CNR summary (findings x resolutions), the peak contrast relative to the
  largest size's, and the full table."""
  resolutions = list(next(iter(table.values())))
  summary = report_lib.markdown_table(
      ["finding"] + [f"CNR {r}²" for r in resolutions] + [f"local {r}²" for r in resolutions],
      [[f] + [f"{_fmt(table[f][r][k])} ({_fmt(table[f][r][k + '_p10'])})"
              for k in ("cnr", "local_cnr") for r in resolutions] for f in table])
  top = max(resolutions)
  relative = report_lib.markdown_table(
      ["finding"] + [f"{r}²" for r in resolutions],
      [[f] + [_fmt(table[f][r]["peak"] / table[f][top]["peak"], 2) for r in resolutions]
       for f in table])
  body = []
  for f, by_r in table.items():
    for r, s in by_r.items():
      body.append([f, f"{r}²", f"{100 * s['visible']:.0f}%", _fmt(s["area_px"], 0),
                   _fmt(s["area_percent"], 2), _fmt(s["peak"]), _fmt(s["mean_contrast"]),
                   _fmt(s["noise_sd"], 2), _fmt(s["mean_contrast"] / s["noise_sd"], 2),
                   _fmt(s["cnr"]), _fmt(s["cnr_p10"]), _fmt(s["local_cnr"]),
                   _fmt(s["local_cnr_p10"])])
  full = report_lib.markdown_table(
      ["finding", "size", "visible", "area (px)", "area (% of image)", "peak", "mean contrast",
       "noise sd", "contrast / sd", "CNR", "CNR p10", "local CNR", "local p10"], body)
  return summary, relative, full


def markdown_test_size(rows: Sequence[dict[str, Any]], target: float) -> str:
  aucs = list(rows[0]["half_width"])
  body = []
  for r in rows:
    cells = [str(r["patients"]), str(r["test_images"]),
             f"{r['min_positives']} ({r['min_positives_class']})"]
    for a in aucs:
      w = r["half_width"][a]
      mark = "" if w["mean"] <= target else " ✗"
      cells.append(f"±{w['mean']:.4f} (max ±{w['max']:.4f}){mark}")
    body.append(cells)
  return report_lib.markdown_table(
      ["patients", "test images", "fewest positives (class)"]
      + [f"half-width at AUC {a}" for a in aucs], body)


def cnr_chart(table: dict[str, dict[int, dict[str, float]]], path: epath.Path) -> str:
  """Grouped bars: median CNR of each finding per resolution (log scale), the Rose criterion."""
  findings = list(table)
  resolutions = list(next(iter(table.values())))
  width = 0.8 / len(resolutions)
  fig, ax = plt.subplots(figsize=(8.5, 3.6))
  x = np.arange(len(findings))
  for j, r in enumerate(resolutions):
    values = [table[f][r]["cnr"] for f in findings]
    ax.bar(x + (j - (len(resolutions) - 1) / 2) * width, values, width, label=f"{r}²")
  ax.axhline(ROSE_CNR, color="k", lw=0.8, ls="--", label=f"Rose criterion ({ROSE_CNR:g})")
  ax.set_yscale("log")
  ax.set_xticks(x, findings, rotation=30, ha="right")
  ax.set_ylabel("median CNR")
  ax.set_title("Contrast-to-noise ratio of each finding by image size")
  ax.grid(axis="y", alpha=0.3, which="both")
  ax.legend(fontsize=8, ncol=len(resolutions) + 1)
  fig.tight_layout()
  return plots.save_figure(fig, path)


def interval_chart(rows: Sequence[dict[str, Any]], target: float, path: epath.Path) -> str:
  """Mean half-width of the mean AUC's interval against the test split's size."""
  fig, ax = plt.subplots(figsize=(5.0, 3.4))
  n = [r["test_images"] for r in rows]
  for a in rows[0]["half_width"]:
    ax.plot(n, [r["half_width"][a]["mean"] for r in rows], "o-", label=f"AUC {a}")
  ax.axhline(target, color="k", lw=0.8, ls="--", label=f"±{target:g}")
  ax.set_xlabel("test images")
  ax.set_ylabel("95% half-width of mean AUC")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  return plots.save_figure(fig, path)


FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "Output directory.", required=True)
flags.DEFINE_list("resolutions", ["64", "128", "224", "256"], "Image sides to measure.")
flags.DEFINE_integer("examples", 50, "Positive images per finding.")
flags.DEFINE_integer("patients", 1000, "Patients of the cohort the positives are taken from.")
flags.DEFINE_integer("seed", 0, "Seed of that cohort.")
flags.DEFINE_list("test_patients", ["4000", "6000", "8000", "9000", "10000", "12000"],
                  "Cohort sizes (data.synthetic_patients) whose test split is measured; empty: "
                  "skip the test-size part.")
flags.DEFINE_list("auc", ["0.75", "0.65"], "Per-class AUCs of the simulated scores; the first "
                  "decides the chosen cohort.")
flags.DEFINE_integer("test_repeats", 5, "Draws of the simulated scores per cohort and AUC.")
flags.DEFINE_float("target", 0.015, "Half-width the 95% interval of the mean AUC must reach.")


def run(out: epath.PathLike, *, resolutions: Sequence[int], examples: int, patients: int,
        seed: int, test_patients: Sequence[int], aucs: Sequence[float], test_repeats: int,
        target: float) -> epath.Path:
  """Both measurements; writes ``report.md``, the charts and ``results.json`` to ``out``."""
  out = epath.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  table = contrast_table(resolutions, examples, patients, seed)
  summary, relative, full = markdown_contrast(table)
  chart = cnr_chart(table, out / "cnr_by_resolution.png")
  results: dict[str, Any] = {"contrast": {f: {str(r): s for r, s in by_r.items()}
                                          for f, by_r in table.items()},
                             "examples": examples, "patients": patients, "seed": seed}
  text = f"""# Contrast of the synthetic findings, and the test size of the benchmark

Written by `benchmarks/finding_contrast.py` (definitions in its docstring). {examples} positive
images per finding from a cohort of {patients} patients (seed {seed}), each rendered noise-free
with and without the finding and as stored (with its noise). Grey levels of the uint8 image;
area: pixels changed by more than {CONTRAST_THRESHOLD:g} grey level; CNR: the finding's summed
contrast over the sd of the blurred noise summed over the same pixels (an observer who knows where
to look; the Rose criterion asks for about {ROSE_CNR:g}). Medians over the images where the
finding changes some pixel ("visible").

## Median CNR (10th percentile) by image size

{summary}

![CNR by resolution]({chart})

## Median peak contrast relative to {max(resolutions)}²

Below 1: the finding is smaller than the detector blur and the pixel (partial volume), so its
peak is diluted.

{relative}

## Every measurement

{full}
"""
  if test_patients:
    rows = test_size_table(test_patients, aucs, test_repeats)
    chosen = chosen_patients(rows, aucs[0], target)
    results.update(test_size=rows, target=target, chosen_patients=chosen)
    interval = interval_chart(rows, target, out / "test_interval.png")
    verdict = (f"The smallest of these cohorts within ±{target:g} at AUC {aucs[0]:g}: "
               f"**{chosen} patients**." if chosen else
               f"None of these cohorts reaches ±{target:g} at AUC {aucs[0]:g}.")
    text += f"""
## Test split against the 95% interval of the mean AUC

The test split the synthetic builder makes of a cohort of each size (10% of the patients,
patient-disjoint), with simulated scores of equal per-class AUC (binormal, independent between
classes); half-width of the bootstrap 95% interval of the mean AUC (1000 resamples), mean and
maximum over {test_repeats} draws of the scores; ✗: mean above ±{target:g}.

{markdown_test_size(rows, target)}

{verdict}

![interval against test size]({interval})
"""
  (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
  path = out / "report.md"
  path.write_text(text)
  return path


def main(argv):
  del argv
  path = run(FLAGS.out, resolutions=[int(r) for r in FLAGS.resolutions], examples=FLAGS.examples,
             patients=FLAGS.patients, seed=FLAGS.seed,
             test_patients=[int(n) for n in FLAGS.test_patients],
             aucs=[float(a) for a in FLAGS.auc], test_repeats=FLAGS.test_repeats,
             target=FLAGS.target)
  print(path.read_text())


if __name__ == "__main__":
  app.run(main)
