"""PCA whitening of features with a training split's statistics (the linear probe's and kNN's
input, ``evaluation/linear_probe.py`` and ``evaluation/knn.py``).

Self-supervised features are often nearly collinear: what tells images apart lies in directions
of small variance. Whitening rotates the features onto their principal axes and scales each to
unit variance, so that a first-order optimiser (the probe) or a cosine (kNN) weighs every
direction alike. Directions whose variance is below ``WHITEN_RELATIVE_FLOOR`` of the largest are
dropped (numerical noise, duplicated or constant features).
"""

from __future__ import annotations

import numpy as np

#: Whitening drops the principal directions whose variance is below this share of the largest.
WHITEN_RELATIVE_FLOOR = 1e-6
#: Features whitened at most (a float64 covariance of 8,192 features is 512 MiB); wider inputs,
#: such as a large dense map flattened, are standardised instead (``applies``).
MAX_FEATURES = 8192


def applies(num_features: int) -> bool:
  """Whether inputs of ``num_features`` are whitened (at most ``MAX_FEATURES``)."""
  return num_features <= MAX_FEATURES


def whitening(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """``(mean, projection)`` with ``(x - mean) @ projection`` white on ``train`` (identity
  covariance, float64 statistics): the principal axes scaled by one over their standard
  deviation, those with variance below ``WHITEN_RELATIVE_FLOOR`` of the largest left out."""
  x = np.asarray(train, np.float64)
  mean = x.mean(0, keepdims=True)
  variances, axes = np.linalg.eigh(np.cov(x - mean, rowvar=False).reshape(x.shape[1], -1))
  keep = variances > WHITEN_RELATIVE_FLOOR * max(variances.max(), 0.0)
  if not keep.any():
    raise ValueError(f"whitening: every one of the {x.shape[1]} features is constant on the "
                     f"{len(x)} training examples")
  return mean, axes[:, keep] / np.sqrt(variances[keep])


def project(features: np.ndarray, mean: np.ndarray, projection: np.ndarray) -> np.ndarray:
  """``(features - mean) @ projection`` in float64, as float32 (a :func:`whitening`)."""
  return ((np.asarray(features, np.float64) - mean) @ projection).astype(np.float32)


def whitened(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
  """``train`` and ``others`` projected with :func:`whitening` of ``train``, as float32."""
  white = whitening(train)
  return [project(a, *white) for a in (train, *others)]


def fold(kernel: np.ndarray, bias: np.ndarray, mean: np.ndarray,
         projection: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """A linear map trained on whitened inputs ``(x - mean) @ projection`` as the same affine map
  of ``x``: ``x @ (projection @ kernel) + (bias - mean @ projection @ kernel)`` (float64,
  returned as float32)."""
  folded = np.asarray(projection, np.float64) @ np.asarray(kernel, np.float64)
  offset = np.asarray(bias, np.float64) - np.asarray(mean, np.float64).reshape(-1) @ folded
  return folded.astype(np.float32), offset.astype(np.float32)
