"""A labelled grid of chest phantoms: normals (PA and AP), then each finding alone, as rendered
(above) and with its box (red) or pneumothorax mask outline (green) (below).

``python -m tfds_builders.synthetic_cxr.phantom_gallery --out docs/synthetic_cxr_examples.png``
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from . import phantom  # noqa: E402


def pick(cohort: phantom.Cohort) -> list[tuple[str, int]]:
  """(title, image index): the first normals of each view, then the first image having each
  finding as its only one."""
  labels, views = cohort.labels, cohort.images["view"]
  normal = np.flatnonzero(labels.sum(axis=1) == 0)
  chosen = [(f"normal {v}", int(i)) for v, i in (("PA", normal[views[normal] == 0][0]),
                                                 ("PA", normal[views[normal] == 0][1]),
                                                 ("AP", normal[views[normal] == 1][0]),
                                                 ("AP", normal[views[normal] == 1][1]))]
  for c, name in enumerate(phantom.CLASS_NAMES):
    alone = np.flatnonzero((labels[:, c] == 1) & (labels.sum(axis=1) == 1))
    if alone.size == 0:
      raise ValueError(f"the cohort has no image with {name} alone; draw more patients")
    chosen.append((name, int(alone[0])))
  return chosen


def _outline(ax, record: phantom.Record, resolution: int) -> None:
  for y0, x0, y1, x1 in record["boxes"] * resolution:
    ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color="red",
                               linewidth=1.0))
  if record["mask"].any():
    ax.contour(record["mask"], levels=[0.5], colors="lime", linewidths=0.8)


def gallery(out: str, *, resolution: int = 256, num_patients: int = 400, seed: int = 0) -> None:
  """Renders the grid to ``out`` (PNG)."""
  cohort = phantom.sample_cohort(num_patients, seed)
  render = phantom.Renderer(resolution)
  tiles = pick(cohort)
  normals, findings = tiles[:4], tiles[4:]
  cols = 4
  rows = 1 + 2 * -(-len(findings) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.75 * rows), dpi=100)
  for ax in axes.flat:
    ax.axis("off")
  for ax, (title, i) in zip(axes[0], normals):
    ax.imshow(render(cohort, i)["image"][:, :, 0], cmap="gray", vmin=0, vmax=255)
    ax.set_title(title, fontsize=9)
  # Findings: blocks of two rows, the image as rendered above the annotated one.
  for k, (title, i) in enumerate(findings):
    record = render(cohort, i)
    row, col = 1 + 2 * (k // cols), k % cols
    for ax in (axes[row, col], axes[row + 1, col]):
      ax.imshow(record["image"][:, :, 0], cmap="gray", vmin=0, vmax=255)
    _outline(axes[row + 1, col], record, resolution)
    axes[row, col].set_title(f"{title} ({record['view']})", fontsize=9)
  fig.tight_layout(pad=0.4)
  fig.savefig(out)
  plt.close(fig)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="docs/synthetic_cxr_examples.png")
  parser.add_argument("--resolution", type=int, default=256)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  gallery(args.out, resolution=args.resolution, seed=args.seed)


if __name__ == "__main__":
  main()
