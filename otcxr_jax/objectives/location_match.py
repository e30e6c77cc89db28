r"""Location-matched MSE: OTCXR's alignment with the transport plan replaced by crop geometry.

The ablation ``objective.alignment='location_mse'`` asks how much the learned optimal-transport
correspondence adds over the correspondence the augmentation already knows. Each token ``i`` of
view s sits at a source-image position :math:`p^s_i` (the centre of its cell mapped through the
view's crop box, rotation and flip, `otcxr_jax.data.augment.positions_in_source`); it is paired
with the token of view t nearest to it in the source image,

.. math::

    \nu_{s\to t}(i) = \arg\min_j \lVert p^s_i - p^t_j \rVert^2

(first index on ties), and symmetrically :math:`\nu_{t\to s}`. The alignment loss is the mean
squared error over the matched pairs of both directions,

.. math::

    L_{loc} = \tfrac12 \Big[
        \frac{1}{BND}\sum_{b,i}\lVert q^s_{b,i} - q^t_{b,\nu_{s\to t}(i)}\rVert^2
      + \frac{1}{BMD}\sum_{b,j}\lVert q^t_{b,j} - q^s_{b,\nu_{t\to s}(j)}\rVert^2\Big],

VICReg's invariance term (a mean squared error, Bardes et al. 2022) on location-matched tokens:
VICRegL's location matching (Bardes, Ponce, LeCun 2022) with every token kept. Every token is
matched, also where the two crops do not overlap (its match is then the nearest cell at the edge of
the other view); the matching carries no gradient.

Scale: with unit second moments (which the variance hinge enforces) :math:`\lVert z\rVert^2
\approx D` and the per-dimension MSE is about :math:`2(1-\cos)`, twice the cosine transport cost,
so the same weight ``alpha`` puts about twice the pull on the pairs (see ``objectives/otcxr.py``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def nearest_position_matches(pos_a: jax.Array, pos_b: jax.Array) -> jax.Array:
  """``(B, Na)`` int32 index of the cell of b nearest in the source image to each cell of a.

  Args:
    pos_a: ``(B, Na, 2)`` source-image positions of view a's cells.
    pos_b: ``(B, Nb, 2)`` source-image positions of view b's cells.
  """
  for name, pos in (("pos_a", pos_a), ("pos_b", pos_b)):
    if pos.ndim != 3 or pos.shape[-1] != 2:
      raise ValueError(f"{name} must have shape (B, N, 2), got {pos.shape}.")
  if pos_a.shape[0] != pos_b.shape[0]:
    raise ValueError(f"pos_a and pos_b must have the same batch size, got {pos_a.shape[0]} and "
                     f"{pos_b.shape[0]}.")
  pos_a, pos_b = jax.lax.stop_gradient((pos_a, pos_b))
  d2 = jnp.sum(jnp.square(pos_a[:, :, None, :] - pos_b[:, None, :, :]), axis=-1)
  return jnp.argmin(d2, axis=-1).astype(jnp.int32)


def location_matched_mse(q_s: jax.Array, q_t: jax.Array, pos_s: jax.Array,
                         pos_t: jax.Array) -> jax.Array:
  """:math:`L_{loc}` of the module docstring, a float32 scalar.

  Args:
    q_s: ``(B, N, D)`` tokens of view s.
    q_t: ``(B, M, D)`` tokens of view t.
    pos_s: ``(B, N, 2)`` source-image positions of ``q_s``'s tokens.
    pos_t: ``(B, M, 2)`` source-image positions of ``q_t``'s tokens.
  """
  for name, q, pos in (("q_s", q_s, pos_s), ("q_t", q_t, pos_t)):
    if q.ndim != 3 or pos.shape[:2] != q.shape[:2]:
      raise ValueError(f"{name} must be (B, N, D) with one position per token, got {q.shape} "
                       f"and positions {pos.shape}.")
  if q_s.shape[-1] != q_t.shape[-1]:
    raise ValueError(f"q_s and q_t must have the same feature size, got {q_s.shape[-1]} and "
                     f"{q_t.shape[-1]}.")
  q_s, q_t = q_s.astype(jnp.float32), q_t.astype(jnp.float32)

  def one_way(q_a, q_b, match):
    matched = jnp.take_along_axis(q_b, match[..., None], axis=1)
    return jnp.mean(jnp.square(q_a - matched))

  return 0.5 * (one_way(q_s, q_t, nearest_position_matches(pos_s, pos_t))
                + one_way(q_t, q_s, nearest_position_matches(pos_t, pos_s)))
