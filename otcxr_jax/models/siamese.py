"""The two-view network of the baseline methods (SimCLR, BYOL, Barlow Twins, VICReg, VICRegL).

One weight-shared encoder sees both views (in one call, so BatchNorm statistics are those of both
views, as in :class:`~otcxr_jax.models.OTCXRModel`); its pooled features go through a projector
(an MLP, :class:`~otcxr_jax.models.DenseProjector` applied to ``(B, C)`` vectors) to the
embeddings ``z`` the global objectives compare. Optional parts:

* ``predictor``: BYOL's online predictor ``q_θ`` on ``z`` (Grill et al. 2020, Sec. 3.1);
* ``ema_target=True``: BYOL's target network ξ, EMA copies of the encoder and the projector
  (:class:`~otcxr_jax.models.target.EMATarget`), run on both views with a stop-gradient;
* ``local_projector``: VICRegL's projector of the dense map's cells (Bardes et al. 2022), applied
  position-wise to the map ``dense_stage``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx, struct

from otcxr_jax.models.common import Encoder, dense_channels
from otcxr_jax.models.heads import DenseProjector
from otcxr_jax.models.target import EMATarget


@struct.dataclass
class SiameseOutput:
  """Embeddings of the two views (float32); the optional parts are None when absent.

  Attributes:
    z_s: ``(B, D)`` projected pooled features of view s.
    z_t: ``(B, D)`` of view t.
    p_s: ``(B, D)`` predictor outputs of view s (BYOL).
    p_t: ``(B, D)`` of view t.
    z_s_target: ``(B, D)`` target network's projections of view s (BYOL), no gradient.
    z_t_target: ``(B, D)`` of view t.
    maps_s: ``(B, N, D')`` projected dense-map cells of view s (VICRegL), row-major over ``grid``.
    maps_t: ``(B, N, D')`` of view t.
    grid: ``(h, w)`` of the dense map (static).
  """

  z_s: jax.Array
  z_t: jax.Array
  grid: tuple[int, int] = struct.field(pytree_node=False)
  p_s: jax.Array | None = None
  p_t: jax.Array | None = None
  z_s_target: jax.Array | None = None
  z_t_target: jax.Array | None = None
  maps_s: jax.Array | None = None
  maps_t: jax.Array | None = None


class SiameseModel(nnx.Module):
  """Weight-shared encoder and projector over two views, with the optional parts above."""

  def __init__(self, encoder: Encoder, projector: DenseProjector, *,
               predictor: DenseProjector | None = None, ema_target: bool = False,
               local_projector: DenseProjector | None = None, dense_stage: str = "dense"):
    """Assembles the network.

    Args:
      encoder: module returning an ``EncoderOutput``.
      projector: MLP from the encoder's pooled features (``in_dim = encoder.num_features``).
      predictor: MLP from ``projector.out_dim`` to ``projector.out_dim``, or None.
      ema_target: hold a target network (copies of ``encoder`` and ``projector`` as built).
      local_projector: position-wise MLP of the dense map ``dense_stage``, or None.
      dense_stage: ``'dense'`` for the encoder's last map, or one of its stage names.
    """
    if projector.in_dim != encoder.num_features:
      raise ValueError(f"projector.in_dim={projector.in_dim} does not match the encoder's "
                       f"{encoder.num_features} pooled features")
    if predictor is not None and (predictor.in_dim, predictor.out_dim) != (projector.out_dim,) * 2:
      raise ValueError(f"predictor must map {projector.out_dim} to {projector.out_dim} features, "
                       f"got {predictor.in_dim} -> {predictor.out_dim}")
    channels = dense_channels(encoder, dense_stage)
    if local_projector is not None and local_projector.in_dim != channels:
      raise ValueError(f"local_projector.in_dim={local_projector.in_dim} does not match the "
                       f"{channels} channels of dense_stage={dense_stage!r}")
    self.encoder = encoder
    self.projector = projector
    self.predictor = predictor
    self.local_projector = local_projector
    self.target = EMATarget(encoder=encoder, projector=projector) if ema_target else None
    self.dense_stage = dense_stage

  def __call__(self, view_s: jax.Array, view_t: jax.Array) -> SiameseOutput:
    """Encodes two ``(B, H, W, C)`` views of the same images."""
    if view_s.shape != view_t.shape:
      raise ValueError(f"view_s and view_t must have the same shape, got {view_s.shape} and "
                       f"{view_t.shape}")
    batch = view_s.shape[0]
    views = jnp.concatenate([view_s, view_t], axis=0)
    out = self.encoder(views)
    dense = out.dense if self.dense_stage == "dense" else out.stages[self.dense_stage]
    _, h, w, c = dense.shape
    z = self.projector(out.pooled)
    parts = dict(z_s=z[:batch], z_t=z[batch:], grid=(h, w))
    if self.predictor is not None:
      p = self.predictor(z)
      parts.update(p_s=p[:batch], p_t=p[batch:])
    if self.target is not None:
      z_target = jax.lax.stop_gradient(
          self.target.projector(self.target.encoder(views).pooled))
      parts.update(z_s_target=z_target[:batch], z_t_target=z_target[batch:])
    if self.local_projector is not None:
      maps = self.local_projector(dense.reshape(2 * batch, h * w, c))
      parts.update(maps_s=maps[:batch], maps_t=maps[batch:])
    return SiameseOutput(**parts)
