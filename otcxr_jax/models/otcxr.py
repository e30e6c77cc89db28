"""The OTCXR pretraining network (Gorade, Singh, Mishra, WACV 2025, arXiv 2404.11868).

Two augmented views s and t of a batch go through one weight-shared encoder; a dense map of
each becomes a set of tokens, projected position-wise to ``q`` tokens. With CV-SIM, each view's
tokens then attend to the other's with one shared block:

    q_s' = CVSIM(q_s, q_t),    q_t' = CVSIM(q_t, q_s).

The objective (optimal transport between q_s' and q_t' plus variance/covariance terms) lives in
``otcxr_jax.objectives`` and is not part of the network.

With a teacher (``objective.teacher_tau > 0``, not in the paper) the network also holds BYOL's
image-level branch (Grill et al. 2020): the encoder's pooled features -> a global projector ->
a predictor, and an EMA copy of the encoder and the global projector (``models/target.py``)
that projects both views without gradient.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx, struct

from otcxr_jax.models.common import Encoder, dense_channels
from otcxr_jax.models.cvsim import CVSIM
from otcxr_jax.models.heads import DenseProjector
from otcxr_jax.models.target import EMATarget


@struct.dataclass
class OTCXROutput:
  """Tokens of the two views; all arrays are float32.

  Attributes:
    q_s: ``(B, N, D)`` tokens of view s, ``N = h*w`` in row-major order over ``grid``.
    q_t: ``(B, N, D)`` tokens of view t.
    pooled_s: ``(B, C)`` encoder's pooled features of view s.
    pooled_t: ``(B, C)`` encoder's pooled features of view t.
    grid: ``(h, w)`` spatial layout of the tokens (static).
    attention_s: ``(B, heads, N, N)`` CV-SIM attention of s's tokens over t's, when asked.
    attention_t: ``(B, heads, N, N)`` CV-SIM attention of t's tokens over s's, when asked.
    p_s: ``(B, D')`` the predictions of view s's pooled features (with a teacher).
    p_t: ``(B, D')`` of view t.
    z_s_target: ``(B, D')`` the teacher's projection of view s (with a teacher), no gradient.
    z_t_target: ``(B, D')`` of view t.
  """

  q_s: jax.Array
  q_t: jax.Array
  pooled_s: jax.Array
  pooled_t: jax.Array
  grid: tuple[int, int] = struct.field(pytree_node=False)
  attention_s: jax.Array | None = None
  attention_t: jax.Array | None = None
  p_s: jax.Array | None = None
  p_t: jax.Array | None = None
  z_s_target: jax.Array | None = None
  z_t_target: jax.Array | None = None


class OTCXRModel(nnx.Module):
  """Weight-shared encoder, dense projector and optional CV-SIM over two views."""

  def __init__(
      self,
      encoder: Encoder,
      projector: DenseProjector,
      cvsim: CVSIM | None,
      *,
      dense_stage: str = "dense",
      global_projector: DenseProjector | None = None,
      predictor: DenseProjector | None = None,
  ):
    """Assembles the network.

    Args:
      encoder: module returning an ``EncoderOutput``.
      projector: position-wise MLP whose ``in_dim`` matches the chosen map's channels.
      cvsim: cross-view block of width ``projector.out_dim``, or ``None`` (ablation).
      dense_stage: ``'dense'`` for the encoder's last map, or one of its stage names
        (e.g. ``'stage3'`` for a ResNet's stride-16 map).
      global_projector: an MLP of the encoder's pooled features, or None.
      predictor: an MLP from ``global_projector.out_dim`` to the same, given exactly with
        ``global_projector``; the network then also holds the teacher (EMA copies of the
        encoder and the global projector as built).
    """
    channels = dense_channels(encoder, dense_stage)
    if projector.in_dim != channels:
      raise ValueError(f"projector.in_dim={projector.in_dim} does not match the {channels} "
                       f"channels of dense_stage={dense_stage!r}")
    if cvsim is not None and cvsim.dim != projector.out_dim:
      raise ValueError(
          f"cvsim.dim={cvsim.dim} does not match projector.out_dim={projector.out_dim}")
    if (global_projector is None) != (predictor is None):
      raise ValueError("global_projector and predictor come together (the teacher's branch), "
                       f"got {type(global_projector).__name__} and {type(predictor).__name__}")
    if global_projector is not None:
      if global_projector.in_dim != encoder.num_features:
        raise ValueError(f"global_projector.in_dim={global_projector.in_dim} does not match the "
                         f"encoder's {encoder.num_features} pooled features")
      width = global_projector.out_dim
      if (predictor.in_dim, predictor.out_dim) != (width, width):
        raise ValueError(f"predictor must map {width} to {width} features, "
                         f"got {predictor.in_dim} -> {predictor.out_dim}")
    self.encoder = encoder
    self.projector = projector
    self.cvsim = cvsim
    self.dense_stage = dense_stage
    self.global_projector = global_projector
    self.predictor = predictor
    self.target = (EMATarget(encoder=encoder, global_projector=global_projector)
                   if predictor is not None else None)

  def __call__(
      self, view_s: jax.Array, view_t: jax.Array, *, return_attention: bool = False
  ) -> OTCXROutput:
    """Encodes two ``(B, H, W, C)`` views of the same images.

    Both views go through the encoder in one call (concatenated along the batch), so
    BatchNorm statistics are those of both views together.

    Args:
      view_s: source view.
      view_t: target view, same shape as ``view_s``.
      return_attention: also return CV-SIM's attention maps (needs a CV-SIM).
    """
    if view_s.shape != view_t.shape:
      raise ValueError(f"view_s and view_t must have the same shape, got {view_s.shape} and "
                       f"{view_t.shape}")
    if return_attention and self.cvsim is None:
      raise ValueError("return_attention=True needs a model built with a CV-SIM")
    batch = view_s.shape[0]
    views = jnp.concatenate([view_s, view_t], axis=0)
    out = self.encoder(views)
    dense = out.dense if self.dense_stage == "dense" else out.stages[self.dense_stage]
    _, h, w, c = dense.shape
    q = self.projector(dense.reshape(2 * batch, h * w, c))
    attention_s = attention_t = None
    if self.cvsim is not None:
      # Both directions in one call: rows [s; t] attend to [t; s].
      context = jnp.concatenate([q[batch:], q[:batch]], axis=0)
      q, attention = self.cvsim(q, context, return_attention=True)
      if return_attention:
        attention_s, attention_t = attention[:batch], attention[batch:]
    teacher = {}
    if self.predictor is not None:
      p = self.predictor(self.global_projector(out.pooled)).astype(jnp.float32)
      z = self.target.global_projector(self.target.encoder(views).pooled)
      z = jax.lax.stop_gradient(z.astype(jnp.float32))
      teacher = dict(p_s=p[:batch], p_t=p[batch:], z_s_target=z[:batch], z_t_target=z[batch:])
    return OTCXROutput(
        q_s=q[:batch].astype(jnp.float32),
        q_t=q[batch:].astype(jnp.float32),
        pooled_s=out.pooled[:batch],
        pooled_t=out.pooled[batch:],
        grid=(h, w),
        attention_s=attention_s,
        attention_t=attention_t,
        **teacher,
    )
