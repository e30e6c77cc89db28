r"""Does an encoder's output carry the image, or only the position? Two numbers per encoder.

For dense features :math:`x_{bpc}` of images :math:`b`, positions :math:`p` and channels
:math:`c`, the total variance over images and positions splits exactly (a two-way layout) into

.. math::
    \underbrace{\mathrm{Var}_{b,p}(x)}_{\text{total}}
    = \underbrace{\mathrm{Var}_p(\bar x_{\cdot p})}_{\text{between positions}}
    + \underbrace{\mathrm{Var}_b(\bar x_{b \cdot})}_{\text{between images}}
    + \underbrace{\mathrm{Var}_{b,p}(x_{bp} - \bar x_{\cdot p} - \bar x_{b \cdot} + \bar x)}
      _{\text{interaction}},

summed over channels. The *position share* is what every image has at a given place (anatomy's
average layout, padding effects); the *image share* is what moves a whole image's pooled feature;
the interaction is where an image differs from the average layout at some places only (a focal
finding). An encoder whose features are nearly all position share gives pooled features that are
the same for every image.

The second number is the median over pooled-feature dimensions of :math:`\mathrm{std}_b /
|\mathrm{mean}_b|`: near 0 when pooled features are a large common offset with tiny
image-to-image changes (a linear probe that standardises its inputs hides this; a head that reads
raw features does not).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from flax import nnx

from otcxr_jax.evaluation import features


@dataclasses.dataclass(frozen=True)
class FeatureSpread:
  position_share: float      # between-position variance / total (dense map)
  image_share: float         # between-image variance / total
  interaction_share: float   # the rest: 1 - position_share - image_share
  pooled_std_over_mean: float  # median over dimensions of std/|mean| of pooled features

  def as_dict(self) -> dict[str, float]:
    return dataclasses.asdict(self)


def variance_shares(dense: np.ndarray) -> tuple[float, float, float]:
  """``(position, image, interaction)`` shares of the total variance of ``(B, H, W, C)`` or
  ``(B, N, C)`` features (population variances; the three sum to 1)."""
  x = np.asarray(dense, np.float64)
  x = x.reshape(x.shape[0], -1, x.shape[-1])
  total = x.var(axis=(0, 1)).sum()
  if total <= 0:
    return 0.0, 0.0, 0.0
  position = x.mean(axis=0).var(axis=0).sum()
  image = x.mean(axis=1).var(axis=0).sum()
  return float(position / total), float(image / total), float(1 - (position + image) / total)


def pooled_std_over_mean(pooled: np.ndarray) -> float:
  """Median over dimensions of ``std / |mean|`` of ``(B, C)`` pooled features."""
  p = np.asarray(pooled, np.float64)
  return float(np.median(p.std(axis=0) / np.maximum(np.abs(p.mean(axis=0)), 1e-12)))


class _First:
  """The first ``count`` records of a random-access source."""

  def __init__(self, source, count: int):
    self._source, self._count = source, min(count, len(source))

  def __len__(self) -> int:
    return self._count

  def __getitem__(self, index: int):
    if not 0 <= index < self._count:
      raise IndexError(index)
    return self._source[index]


def feature_spread(encoder: nnx.Module, source, *, image_size: int, batch_size: int = 128,
                   limit: int = 512, mesh=None) -> FeatureSpread:
  """The diagnostics of ``encoder`` (eval mode) on the first ``limit`` records of ``source`` (a
  split's random-access source, or a list of ``{'image': uint8 (H, W, C)}``), read as the probes
  read features (``features.map_split``: resized to ``image_size``, sharded over ``mesh``, every
  process getting the whole result)."""
  fn = features.encoder_fn(encoder, image_size, lambda out: (out.dense, out.pooled), mesh)
  (dense, pooled), _ = features.map_split(lambda batch: fn(batch["image"]),
                                          _First(source, limit), batch_size=batch_size,
                                          keys=("image",), mesh=mesh)
  return FeatureSpread(*variance_shares(dense), pooled_std_over_mean(pooled))
