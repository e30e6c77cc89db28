"""PNG figures for reports (matplotlib, non-interactive backend)."""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from etils import epath  # noqa: E402


def save_figure(fig, path: epath.PathLike) -> str:
  """Writes ``fig`` as a PNG to ``path`` (local or remote, through epath), closes it, returns
  the file name (what reports link to)."""
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open("wb") as f:
    fig.savefig(f, dpi=110, bbox_inches="tight")
  plt.close(fig)
  return path.name


def image_rows(rows: Sequence[Sequence[tuple[np.ndarray, str, Callable | None]]], path, *,
               title_size: int = 8) -> str:
  """Grey images in a grid, one row per example: each panel ``(image, title, draw)`` shows the
  ``(H, W)`` image in [0, 1] and what ``draw(axes)`` adds over it (an overlay, boxes; None:
  nothing). Panels are 2.4 x 2.5 inches."""
  columns = max(len(row) for row in rows)
  fig, axes = plt.subplots(len(rows), columns, figsize=(2.4 * columns, 2.5 * len(rows)),
                           squeeze=False)
  for r, row in enumerate(rows):
    for c, (image, title, draw) in enumerate(row):
      ax = axes[r, c]
      ax.imshow(image, cmap="gray", vmin=0, vmax=1)
      if draw is not None:
        draw(ax)
      ax.set_title(title, fontsize=title_size)
      ax.set_axis_off()
  fig.tight_layout()
  return save_figure(fig, path)


def heatmap_overlay(heat: np.ndarray) -> Callable:
  """``draw(axes)`` of a heatmap over an image: min-max normalised (jet, alpha 0.45), its maximum
  marked with a white cross (a constant map: no colour, no mark)."""
  def draw(ax):
    span = np.ptp(heat)
    ax.imshow((heat - heat.min()) / span if span > 0 else np.zeros_like(heat), cmap="jet",
              alpha=0.45, vmin=0, vmax=1)
    if span > 0:
      y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
      ax.plot(x, y, "w+", ms=10, mew=2)
  return draw


def mask_overlay(mask: np.ndarray) -> Callable:
  """``draw(axes)`` of a binary mask over an image (autumn, alpha 0.55, only where it is set)."""
  def draw(ax):
    ax.imshow(np.ma.masked_where(~mask, mask), cmap="autumn", alpha=0.55, vmin=0, vmax=1)
  return draw


def box_outlines(boxes: np.ndarray, size: int) -> Callable:
  """``draw(axes)`` of ``(n, 4)`` ``(ymin, xmin, ymax, xmax)`` boxes in [0, 1] as outlines on a
  ``size x size`` image."""
  from matplotlib import patches

  def draw(ax):
    for y0, x0, y1, x1 in boxes * size:
      ax.add_patch(patches.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False,
                                     edgecolor="lime", lw=1.5))
  return draw


def both(*draws: Callable | None) -> Callable:
  """One ``draw(axes)`` doing each of ``draws`` in turn (None skipped)."""
  def draw(ax):
    for d in draws:
      if d is not None:
        d(ax)
  return draw


def training_curves(history: Sequence[Mapping[str, float]], keys: Sequence[str], path,
                    title: str = "") -> str | None:
  """One panel per metric of ``keys`` that ``history`` holds, against the step; None (no figure)
  where it holds none of them (e.g. a run whose metric log was removed)."""
  keys = [k for k in keys if any(k in h for h in history)]
  if not keys:
    return None
  fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.8), squeeze=False)
  for ax, key in zip(axes[0], keys):
    pts = [(h["step"], h[key]) for h in history if key in h]
    ax.plot(*zip(*pts), lw=1.5)
    ax.set_title(key)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  return save_figure(fig, path)


def auc_bars(class_names: Sequence[str], per_class: Mapping[str, np.ndarray], path,
             title: str = "Test ROC AUC per class") -> str:
  """Grouped bars: one group per class (plus the mean), one bar per model."""
  names = list(class_names) + ["mean"]
  fig, ax = plt.subplots(figsize=(1.0 + 0.9 * len(names), 3.6))
  width = 0.8 / len(per_class)
  x = np.arange(len(names))
  for i, (label, aucs) in enumerate(per_class.items()):
    vals = np.append(aucs, np.nanmean(aucs))
    ax.bar(x + (i - (len(per_class) - 1) / 2) * width, np.nan_to_num(vals, nan=0.0), width,
           label=label)
  ax.axhline(0.5, color="k", lw=0.8, ls="--")
  ax.set_xticks(x, names, rotation=30, ha="right")
  ax.set_ylim(0.4, 1.0)
  ax.set_ylabel("ROC AUC")
  ax.set_title(title)
  ax.legend(fontsize=8)
  fig.tight_layout()
  return save_figure(fig, path)


def _cell_centres(grid: tuple[int, int], size: int) -> np.ndarray:
  h, w = grid
  ys, xs = np.meshgrid((np.arange(h) + 0.5) * size / h, (np.arange(w) + 0.5) * size / w,
                       indexing="ij")
  return np.stack([ys.ravel(), xs.ravel()], axis=1)


def correspondences(views_s: np.ndarray, views_t: np.ndarray, plans: np.ndarray,
                    grid: tuple[int, int], path, *, top_k: int = 12) -> str:
  """Each row: view s and view t side by side, the ``top_k`` heaviest plan entries as lines."""
  n, size = len(views_s), views_s.shape[1]
  fig, axes = plt.subplots(n, 1, figsize=(6, 3.1 * n), squeeze=False)
  centres = _cell_centres(grid, size)
  for row in range(n):
    ax = axes[row, 0]
    pair = np.concatenate([views_s[row, ..., 0], np.ones((size, 4)), views_t[row, ..., 0]], 1)
    ax.imshow(pair, cmap="gray", vmin=0, vmax=1)
    plan = plans[row]
    flat = np.argsort(plan.ravel())[::-1][:top_k]
    colors = plt.cm.viridis(np.linspace(0, 1, top_k))
    for c, idx in zip(colors, flat):
      i, j = np.unravel_index(idx, plan.shape)
      (y0, x0), (y1, x1) = centres[i], centres[j]
      ax.plot([x0, x1 + size + 4], [y0, y1], "-o", color=c, lw=1.2, ms=3)
    ax.set_axis_off()
    share = plan.ravel()[flat].sum() / plan.sum()
    ax.set_title(f"view s | view t: the {top_k} heaviest transport-plan entries hold "
                 f"{100 * share:.0f}% of the mass (uniform: {100 * top_k / plan.size:.0f}%)",
                 fontsize=8)
  fig.tight_layout()
  return save_figure(fig, path)


def attention_maps(views_s: np.ndarray, views_t: np.ndarray, attention: np.ndarray,
                   grid: tuple[int, int], path) -> str:
  """Each row: a query cell on view s, and CV-SIM's head-averaged attention over view t."""
  n, size = len(views_s), views_s.shape[1]
  h, w = grid
  fig, axes = plt.subplots(n, 2, figsize=(5.6, 2.8 * n), squeeze=False)
  centres = _cell_centres(grid, size)
  for row in range(n):
    att = attention[row].mean(0)                       # (N_s, N_t) averaged over heads
    query = int(np.argmax(att.max(1)))                 # the most focused query cell
    heat = att[query].reshape(h, w)
    heat = np.repeat(np.repeat(heat, -(-size // h), 0), -(-size // w), 1)[:size, :size]
    axes[row, 0].imshow(views_s[row, ..., 0], cmap="gray", vmin=0, vmax=1)
    axes[row, 0].plot(centres[query, 1], centres[query, 0], "r+", ms=14, mew=2)
    axes[row, 0].set_title("query cell (view s)", fontsize=8)
    axes[row, 1].imshow(views_t[row, ..., 0], cmap="gray", vmin=0, vmax=1)
    axes[row, 1].imshow(heat, cmap="inferno", alpha=0.5,
                        extent=(0, heat.shape[1], heat.shape[0], 0))
    axes[row, 1].set_title("CV-SIM attention over view t", fontsize=8)
    for ax in axes[row]:
      ax.set_axis_off()
  fig.tight_layout()
  return save_figure(fig, path)
