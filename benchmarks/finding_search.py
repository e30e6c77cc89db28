r"""Seen where it is, or found by searching: how hard the synthetic round findings are to detect.

    python benchmarks/finding_search.py --out docs/finding_search \
        [--findings nodule,mass] [--sigmas 1,1.5,2,3,4,5] [--split test]

``benchmarks/finding_contrast.py`` measures each finding against the image noise: an upper bound
on detectability, for an observer who knows where the finding is. A model must also tell it from
the anatomy (rib crossings, vessels seen end-on, the edges of the heart and the scapulae), which
the phantom draws at the same scales. This measures both sides for the round opacities, on the
split that the benchmark evaluates on (``configs/benchmark_synthetic.py``'s data, built if
missing), with a blob detector: the scale-normalised Laplacian of Gaussian
``r = -sigma^2 (LoG_sigma * image)``, positive on a bright blob of radius about
``sigma sqrt(2)``, at each ``sigma`` of ``--sigmas`` (pixels):

- **known location**: ``r`` at the centre of the finding's box in each positive image, against
  ``r`` at the same places in the negative images (each negative at the box centre of a positive
  drawn at random): the AUC of an observer told where to look;
- **search**: the maximum of ``r`` over the image (less a border of ``3 sigma``), for every image:
  the AUC of the same detector when it has to find the finding among everything else of that
  scale.

A finding with a high known-location AUC and a search AUC near 0.5 is visible but not conspicuous:
as for nodules on real films, detecting it is a search among look-alikes, which a linear readout
of features learned without labels is not expected to do. Each AUC comes with its 95% bootstrap
interval (``metrics.bootstrap_auc_ci``, resampling the images).

Output in ``--out``: ``report.md``, ``auc_by_sigma.png`` and ``results.json``.
"""

from __future__ import annotations

import pathlib
import sys

if not __package__:  # run as a file: make the repository root importable
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import json  # noqa: E402
import math  # noqa: E402
from typing import Sequence  # noqa: E402

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from etils import epath  # noqa: E402
from scipy import ndimage  # noqa: E402

from configs import benchmark_synthetic  # noqa: E402
from otcxr_jax.data import datasets  # noqa: E402
from otcxr_jax.evaluation import metrics  # noqa: E402
from otcxr_jax.reporting import plots  # noqa: E402
from otcxr_jax.reporting import summary as report_lib  # noqa: E402

#: Bootstrap resamples of each interval.
NUM_SAMPLES = 1000


def blob_response(images: np.ndarray, sigma: float) -> np.ndarray:
  """``-sigma^2 LoG_sigma * image`` of each ``(N, H, W)`` image (float64; reflected at the border):
  positive on bright blobs of radius about ``sigma sqrt(2)``."""
  images = np.asarray(images, np.float64)
  return np.stack([-sigma**2 * ndimage.gaussian_laplace(x, sigma, mode="reflect")
                   for x in images])


def known_location_scores(response: np.ndarray, labels: np.ndarray,
                          centres: Sequence[tuple[int, int] | None], *, seed: int = 0
                          ) -> tuple[np.ndarray, np.ndarray]:
  """``(labels, scores)`` of the known-location observer: each positive's ``response`` at its own
  centre, each negative's at the centre of a positive drawn at random (``seed``). ``centres[i]``:
  ``(row, column)`` of image ``i``'s finding, None for an image without it; positives without a
  centre are left out."""
  labels = np.asarray(labels).astype(bool)
  positives = [i for i in np.flatnonzero(labels) if centres[i] is not None]
  negatives = np.flatnonzero(~labels)
  if not positives or not len(negatives):
    raise ValueError(f"known-location scores need positives with a box and negatives; got "
                     f"{len(positives)} and {len(negatives)}")
  places = np.random.default_rng(seed).choice(len(positives), size=len(negatives))
  pos = [response[i, centres[i][0], centres[i][1]] for i in positives]
  neg = [response[j, centres[positives[p]][0], centres[positives[p]][1]]
         for j, p in zip(negatives, places)]
  return (np.r_[np.ones(len(pos)), np.zeros(len(neg))].astype(np.float32),
          np.asarray(pos + neg, np.float64))


def search_scores(response: np.ndarray, border: int) -> np.ndarray:
  """The maximum of each image's ``response`` away from a ``border`` of pixels."""
  h, w = response.shape[1:]
  if 2 * border >= min(h, w):
    raise ValueError(f"a border of {border} pixels leaves nothing of a {h}x{w} image")
  inner = response[:, border:h - border, border:w - border]
  return inner.reshape(len(response), -1).max(axis=1)


def _auc(labels: np.ndarray, scores: np.ndarray, seed: int) -> dict:
  low, high = metrics.bootstrap_auc_ci(np.asarray(labels)[:, None], np.asarray(scores)[:, None],
                                       num_samples=NUM_SAMPLES, seed=seed).per_class[0]
  return {"auc": metrics.roc_auc(labels, scores), "low": float(low), "high": float(high)}


def study(images: np.ndarray, labels: np.ndarray, centres: Sequence[tuple[int, int] | None],
          sigmas: Sequence[float], *, seed: int = 0) -> list[dict]:
  """For each ``sigma``: ``{'sigma', 'known_location': {auc, low, high}, 'search': {...}}``."""
  out = []
  for sigma in sigmas:
    response = blob_response(images, sigma)
    known = known_location_scores(response, labels, centres, seed=seed)
    search = search_scores(response, border=math.ceil(3 * sigma))
    out.append({"sigma": float(sigma), "known_location": _auc(*known, seed),
                "search": _auc(np.asarray(labels, np.float32), search, seed)})
  return out


def box_centres(boxes: Sequence[np.ndarray], box_labels: Sequence[np.ndarray], index: int,
                size: int) -> list[tuple[int, int] | None]:
  """The pixel ``(row, column)`` of the centre of each image's first box of class ``index``
  (boxes ``(ymin, xmin, ymax, xmax)`` in [0, 1]), None where it has none."""
  out = []
  for b, l in zip(boxes, box_labels):
    chosen = np.asarray(b).reshape(-1, 4)[np.asarray(l).reshape(-1) == index]
    if not len(chosen):
      out.append(None)
      continue
    ymin, xmin, ymax, xmax = chosen[0]
    out.append((min(int((ymin + ymax) / 2 * size), size - 1),
                min(int((xmin + xmax) / 2 * size), size - 1)))
  return out


def read_split(data_dir: str | None, split: str):
  """Images ``(N, H, W)`` uint8, labels ``(N, K)``, boxes and box labels of the benchmark's
  ``split`` (``configs/benchmark_synthetic.py``'s data), and the class names."""
  config = benchmark_synthetic.get_config()
  if data_dir:
    config.data.data_dir = data_dir
  source = datasets.split_source(config, split)
  records = [source[i] for i in range(len(source))]
  images = np.stack([np.asarray(r["image"])[..., 0] for r in records])
  labels = np.stack([np.asarray(r["labels"]) for r in records])
  return (images, labels, [r["boxes"] for r in records], [r["box_labels"] for r in records],
          datasets.class_names(config))


def _plot(results: dict, path: epath.Path) -> str:
  fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.4), squeeze=False)
  for ax, (name, rows) in zip(axes[0], results.items()):
    sigmas = [r["sigma"] for r in rows]
    for key, style in (("known_location", "-o"), ("search", "--s")):
      auc = [r[key]["auc"] for r in rows]
      ax.plot(sigmas, auc, style, label=key.replace("_", " "))
      ax.fill_between(sigmas, [r[key]["low"] for r in rows], [r[key]["high"] for r in rows],
                      alpha=0.2)
    ax.axhline(0.5, color="black", linewidth=0.8, linestyle=":")
    ax.set_xlabel("blob detector sigma (pixels)")
    ax.set_ylabel("AUC")
    ax.set_ylim(0.4, 1.0)
    ax.set_title(name)
    ax.legend(fontsize=8)
  fig.tight_layout()
  return plots.save_figure(fig, path)


def run(out: str, *, findings: Sequence[str], sigmas: Sequence[float], split: str = "test",
        data_dir: str | None = None, seed: int = 0) -> epath.Path:
  """Measures ``findings`` on ``split``; writes ``report.md``, the plot and ``results.json``."""
  out = epath.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  images, labels, boxes, box_labels, names = read_split(data_dir, split)
  unknown = [f for f in findings if f not in names]
  if unknown:
    raise ValueError(f"--findings: {unknown} are not classes of the dataset ({names})")
  results = {}
  for name in findings:
    k = names.index(name)
    centres = box_centres(boxes, box_labels, k, images.shape[1])
    results[name] = study(images, labels[:, k], centres, sigmas, seed=seed)
  (out / "results.json").write_text(json.dumps(results, indent=1))
  figure = _plot(results, out / "auc_by_sigma.png")
  fmt = lambda a: f"{a['auc']:.3f} [{a['low']:.3f}, {a['high']:.3f}]"
  body = [[name, f"{int(labels[:, names.index(name)].sum())}", f"{r['sigma']:g}",
           fmt(r["known_location"]), fmt(r["search"])]
          for name, rows in results.items() for r in rows]
  text = (f"# Seen where it is, or found by searching\n\n"
          f"`{split}` split of the benchmark's data ({len(images)} images at "
          f"{images.shape[1]}x{images.shape[2]}); AUC [95% bootstrap interval] of a "
          f"Laplacian-of-Gaussian blob detector told where the finding is (known location) and "
          f"searching the whole image (search); `python benchmarks/finding_search.py` "
          f"(its docstring).\n\n"
          + report_lib.markdown_table(["finding", "positives", "sigma (px)", "known location",
                                       "search"], body)
          + f"\n\n![AUC by sigma]({figure})\n")
  path = out / "report.md"
  path.write_text(text)
  return path


def _define_flags() -> None:
  """Flags of the command line only (importing this module defines none: other benchmarks' flags
  of the same names would clash)."""
  flags.DEFINE_string("out", None, "Output directory.", required=True)
  flags.DEFINE_list("findings", ["nodule", "mass"], "Round findings to measure.")
  flags.DEFINE_list("sigmas", ["1", "1.5", "2", "3", "4", "5"], "Blob detector scales (pixels).")
  flags.DEFINE_string("split", "test", "Split of the benchmark's data.")
  flags.DEFINE_string("data_dir", None, "TFDS data directory (default: TFDS's).")
  flags.DEFINE_integer("seed", 0, "Seed of the negatives' places and of the bootstrap.")


def main(argv):
  del argv
  f = flags.FLAGS
  path = run(f.out, findings=f.findings, sigmas=[float(s) for s in f.sigmas], split=f.split,
             data_dir=f.data_dir, seed=f.seed)
  print(path.read_text())


if __name__ == "__main__":
  _define_flags()
  app.run(main)
