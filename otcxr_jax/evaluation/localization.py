r"""Heatmaps of where a model looks, and how well they localise findings against boxes.

Heatmaps (each a map over the encoder's ``h x w`` dense grid):

* **CAM** (class activation map; Zhou et al., CVPR 2016) of a classifier whose logits are a
  linear head on average-pooled features,
  :math:`y_k = b_k + \sum_c W_{ck} \frac{1}{hw}\sum_{ij} A_{ijc}` (our ResNet classifiers;
  ``evaluation/classifier.py``, whose head standardises the pooled features with fixed
  statistics: :math:`W` and :math:`b` are then those of ``head.affine()``, the same head as one
  affine map of the raw pooled features, :math:`W_{ck} = W'_{ck} / s_c` and
  :math:`b_k = b'_k - \sum_c m_c W'_{ck} / s_c` for the head's weights :math:`W'`, :math:`b'`
  and feature means :math:`m` and standard deviations :math:`s`):
  :math:`\mathrm{CAM}_k = \sum_c W_{ck} A_c`, so that
  :math:`y_k = b_k + \mathrm{mean}_{ij}\,\mathrm{CAM}_k`. For this architecture CAM is Grad-CAM
  (Selvaraju et al., ICCV 2017, Eq. 1-2) without its final ReLU: Grad-CAM weights channel ``c``
  by the spatial mean of the gradient, :math:`\alpha^k_c = \frac{1}{hw}\sum_{ij}
  \partial y_k / \partial A_{ijc} = W_{ck} / hw`, and
  :math:`\mathrm{GradCAM}_k = \mathrm{ReLU}(\sum_c \alpha^k_c A_c)
  = \mathrm{ReLU}(\mathrm{CAM}_k) / hw`. :func:`class_activation_maps` computes the closed form
  (exact, no backward pass). We score CAM rather than Grad-CAM because the ReLU discards the
  ranking of positions wherever the class evidence :math:`\mathrm{CAM}_k` is negative: where it
  is negative at every position of an image (a rare class, non-negative ResNet features; the
  short synthetic-data fine-tuning runs give such maps for every boxed test image), Grad-CAM is
  all zero and points nowhere, while CAM still orders the positions by their contribution to the
  logit. Where CAM's maximum is positive, both maps have the same maximum (the same pointing game).
* **CV-SIM attention received** (:func:`attention_received`): for attention
  :math:`A \in [0,1]^{H \times N \times M}` of ``N`` query tokens over ``M`` key tokens (rows sum
  to one), the attention key position ``j`` receives, averaged over heads and queries,
  :math:`r_j = \frac{1}{HN}\sum_{h,i} A_{hij}` (:math:`\sum_j r_j = 1`, uniform attention gives
  :math:`1/M`). High where many positions of the other view look.
* **Transport cost per position** (:func:`position_transport_cost`): for a plan
  :math:`P \in \mathbb{R}_+^{N \times M}` between the tokens of an image and those of a
  reference, and the feature cost :math:`C` it was solved with, position ``i`` pays
  :math:`\tau_i = \sum_j P_{ij} C_{ij} / \sum_j P_{ij}`, the mean cost of where its mass goes
  (:math:`\langle P, C\rangle = \sum_i a_i \tau_i` with :math:`a_i` the row mass). Against
  references without findings (``modes/localize.py``), it is high where the image has no
  counterpart in normal anatomy.

Scores (per finding instance: one image and one class with boxes in it; ``B`` the union of that
class's boxes in the image, rasterised by :func:`box_mask`), on the heatmap bilinearly upsampled
to the ``S x S`` evaluation image (:func:`upsample`):

* **pointing game** (Zhang et al., "Top-down neural attention by excitation backprop", ECCV
  2016; here without their 15-pixel tolerance): a hit when the heatmap's maximum (the first in
  row-major order) lies in ``B``;
* **IoU** :math:`|R \cap B| / |R \cup B|` of the thresholded heatmap ``R`` (:func:`threshold`);
* **chance**: the fraction of the image ``B`` covers, the pointing-game rate of a uniformly random
  point.

A constant heatmap points nowhere: a miss, and an empty region (IoU 0). Scores are averaged per
class, then over the classes that have instances (``mean``), and over all instances (``all``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

#: Heatmaps ``modes/localize.py`` computes: classifier CAM and the pretraining network's maps.
METHODS = ("cam", "attention", "transport")
#: How a heatmap is thresholded into a region (see :func:`threshold`).
THRESHOLD_MODES = ("fraction_of_max", "top_fraction")


def class_activation_maps(dense: jax.Array, kernel: jax.Array) -> jax.Array:
  """CAM of every class for a linear head on average-pooled features (module docstring).

  Args:
    dense: ``(B, h, w, C)`` last-stage feature maps ``A`` whose spatial mean is the pooled input of
      the head.
    kernel: ``(C, K)`` head weights ``W`` on the raw pooled features
      (``LinearClassifier.affine()[0]``, which folds a standardising head's feature statistics
      in: ``W = linear.kernel / std``).

  Returns:
    ``(B, h, w, K)`` float32 maps ``sum_c W[c, k] A[..., c]``; Grad-CAM is ``relu(CAM) / (h w)``.
  """
  if dense.ndim != 4 or kernel.ndim != 2 or dense.shape[-1] != kernel.shape[0]:
    raise ValueError(f"dense must be (B, h, w, C) and kernel (C, K) with the same C, got shapes "
                     f"{dense.shape} and {kernel.shape}")
  return jnp.einsum("bhwc,ck->bhwk", dense.astype(jnp.float32), kernel.astype(jnp.float32),
                    precision=jax.lax.Precision.HIGHEST)


def attention_received(attention: jax.Array, grid: tuple[int, int]) -> jax.Array:
  """``(B, h, w)`` mean attention each key position receives (module docstring).

  Args:
    attention: ``(B, heads, N, M)`` attention of ``N`` queries over ``M = h w`` keys.
    grid: ``(h, w)`` layout of the keys, row-major.
  """
  if attention.ndim != 4 or attention.shape[-1] != grid[0] * grid[1]:
    raise ValueError(f"attention must be (B, heads, N, {grid[0] * grid[1]}) for grid {grid}, got "
                     f"shape {attention.shape}")
  received = jnp.mean(attention.astype(jnp.float32), axis=(1, 2))
  return received.reshape(attention.shape[0], *grid)


def position_transport_cost(plan: jax.Array, cost: jax.Array, grid: tuple[int, int]
                            ) -> jax.Array:
  """``(B, h, w)`` mean cost ``sum_j P_ij C_ij / sum_j P_ij`` of each row of the plans.

  Args:
    plan: ``(B, N, M)`` non-negative transport plans, ``N = h w`` rows in row-major order.
    cost: ``(B, N, M)`` the costs the plans move mass at.
    grid: ``(h, w)`` layout of the rows.
  """
  if plan.ndim != 3 or plan.shape[1] != grid[0] * grid[1] or cost.shape != plan.shape:
    raise ValueError(f"plan and cost must be (B, {grid[0] * grid[1]}, M) for grid {grid}, got "
                     f"shapes {plan.shape} and {cost.shape}")
  p = plan.astype(jnp.float32)
  mass = jnp.maximum(jnp.sum(p, axis=-1), jnp.finfo(jnp.float32).tiny)
  per_row = jnp.sum(p * cost.astype(jnp.float32), axis=-1) / mass
  return per_row.reshape(plan.shape[0], *grid)


def upsample(maps: np.ndarray, size: int) -> np.ndarray:
  """``(n, h, w)`` maps -> ``(n, size, size)`` float32 by bilinear interpolation (half-pixel
  centres, as ``torch.nn.functional.interpolate(..., align_corners=False)``)."""
  maps = np.asarray(maps, np.float32)
  if maps.ndim != 3:
    raise ValueError(f"maps must be (n, h, w), got shape {maps.shape}")
  if maps.shape[1:] == (size, size):
    return maps
  return np.asarray(jax.image.resize(maps, (maps.shape[0], size, size), "bilinear"))


def box_mask(boxes: np.ndarray, size: int) -> np.ndarray:
  """``(size, size)`` bool union of boxes: the pixels each box overlaps (at least one per box).

  Args:
    boxes: ``(n, 4)`` ``(ymin, xmin, ymax, xmax)`` in [0, 1] relative to the image (the datasets'
      box format).
    size: side of the pixel grid.
  """
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  if np.any(boxes < 0) or np.any(boxes > 1) or np.any(boxes[:, 2:] < boxes[:, :2]):
    raise ValueError(f"boxes must be (ymin, xmin, ymax, xmax) in [0, 1] with min <= max, got "
                     f"{boxes.tolist()}")
  mask = np.zeros((size, size), bool)
  for y0, x0, y1, x1 in boxes:
    top, left = min(int(math.floor(y0 * size)), size - 1), min(int(math.floor(x0 * size)),
                                                               size - 1)
    bottom = max(int(math.ceil(y1 * size)), top + 1)
    right = max(int(math.ceil(x1 * size)), left + 1)
    mask[top:bottom, left:right] = True
  return mask


def _is_constant(heatmap: np.ndarray) -> bool:
  return not np.ptp(heatmap) > 0


def pointing_hit(heatmap: np.ndarray, truth: np.ndarray) -> bool:
  """Whether the heatmap's maximum (first in row-major order) lies in ``truth``; a constant map
  is a miss."""
  if heatmap.shape != truth.shape:
    raise ValueError(f"heatmap {heatmap.shape} and truth {truth.shape} must have the same shape")
  if _is_constant(heatmap):
    return False
  return bool(truth.flat[int(np.argmax(heatmap))])


def threshold(heatmap: np.ndarray, mode: str, value: float) -> np.ndarray:
  """The region a heatmap marks, a bool mask of its shape.

  Args:
    heatmap: 2-D map.
    mode: ``'fraction_of_max'``: the pixels where the min-max normalised map
      ``(m - min m) / (max m - min m)`` is at least ``value``; ``'top_fraction'``: the
      ``ceil(value * pixels)`` highest pixels (with every pixel tied with the last of them).
    value: in (0, 1].

  A constant heatmap marks nothing (an empty mask).
  """
  if mode not in THRESHOLD_MODES:
    raise ValueError(f"mode must be one of {THRESHOLD_MODES}, got {mode!r}")
  if not 0.0 < value <= 1.0:
    raise ValueError(f"value must be in (0, 1], got {value!r}")
  heatmap = np.asarray(heatmap, np.float64)
  if _is_constant(heatmap):
    return np.zeros(heatmap.shape, bool)
  if mode == "fraction_of_max":
    lo, hi = heatmap.min(), heatmap.max()
    return (heatmap - lo) / (hi - lo) >= value
  k = math.ceil(value * heatmap.size)
  kth_largest = np.partition(heatmap.ravel(), heatmap.size - k)[heatmap.size - k]
  return heatmap >= kth_largest


def iou(region: np.ndarray, truth: np.ndarray) -> float:
  """``|region ∩ truth| / |region ∪ truth|`` of two bool masks (0 when both are empty)."""
  if region.shape != truth.shape:
    raise ValueError(f"region {region.shape} and truth {truth.shape} must have the same shape")
  union = np.logical_or(region, truth).sum()
  return float(np.logical_and(region, truth).sum() / union) if union else 0.0


@dataclasses.dataclass(frozen=True)
class Instance:
  """One finding instance: an image (row ``image`` of the evaluated images), one class with
  boxes in it, and the union of those boxes rasterised at the evaluation size."""

  image: int
  label: int
  truth: np.ndarray


def instances(boxes: Sequence[np.ndarray], box_labels: Sequence[np.ndarray], size: int
              ) -> list[Instance]:
  """The finding instances of images with ``boxes[i]`` ``(n_i, 4)`` and ``box_labels[i]``
  ``(n_i,)``: one per image and distinct label, in image order, then label order."""
  out = []
  for i, (b, labels) in enumerate(zip(boxes, box_labels)):
    labels = np.asarray(labels).reshape(-1)
    for label in sorted(set(labels.tolist())):
      out.append(Instance(i, int(label), box_mask(np.asarray(b)[labels == label], size)))
  return out


@dataclasses.dataclass(frozen=True)
class InstanceScores:
  """Per-instance scores: ``hits`` (pointing game), ``ious``, and ``chance`` (box area share)."""

  hits: np.ndarray
  ious: np.ndarray
  chance: np.ndarray


def score_instances(heatmaps: np.ndarray, truths: Sequence[np.ndarray], *, mode: str,
                    value: float) -> InstanceScores:
  """Scores ``(n, S, S)`` heatmaps (already upsampled) against ``n`` ``(S, S)`` box masks."""
  if len(heatmaps) != len(truths):
    raise ValueError(f"{len(heatmaps)} heatmaps for {len(truths)} box masks")
  hits = [pointing_hit(m, t) for m, t in zip(heatmaps, truths)]
  ious = [iou(threshold(m, mode, value), t) for m, t in zip(heatmaps, truths)]
  chance = [float(t.mean()) for t in truths]
  return InstanceScores(np.asarray(hits, bool), np.asarray(ious, np.float64),
                        np.asarray(chance, np.float64))


def summarise(scores: InstanceScores, labels: Sequence[int], class_names: Sequence[str]
              ) -> dict[str, Any]:
  """JSON-ready means per class (classes with instances only), over classes and over instances.

  Returns:
    ``{'pointing_game', 'iou', 'chance'`` (means over classes), ``'pointing_game_all', 'iou_all',
    'chance_all'`` (means over instances), ``'num_instances', 'per_class': {name:
    {'num_instances', 'pointing_game', 'iou', 'chance'}}}``.
  """
  labels = np.asarray(labels)
  if not len(labels):
    raise ValueError("no finding instance to summarise")
  per_class = {}
  for k in sorted(set(labels.tolist())):
    chosen = labels == k
    per_class[class_names[k]] = {
        "num_instances": int(chosen.sum()),
        "pointing_game": float(scores.hits[chosen].mean()),
        "iou": float(scores.ious[chosen].mean()),
        "chance": float(scores.chance[chosen].mean()),
    }
  over_classes = lambda key: float(np.mean([c[key] for c in per_class.values()]))
  return {
      "pointing_game": over_classes("pointing_game"),
      "iou": over_classes("iou"),
      "chance": over_classes("chance"),
      "pointing_game_all": float(scores.hits.mean()),
      "iou_all": float(scores.ious.mean()),
      "chance_all": float(scores.chance.mean()),
      "num_instances": int(len(labels)),
      "per_class": per_class,
  }
