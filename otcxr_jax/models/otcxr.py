"""The OTCXR pretraining network (Gorade, Singh, Mishra, WACV 2025, arXiv 2404.11868).

Two augmented views s and t of a batch go through one weight-shared encoder; a dense map of
each becomes a set of tokens, projected position-wise to ``q`` tokens. With CV-SIM, each view's
tokens then attend to the other's with one shared block:

    q_s' = CVSIM(q_s, q_t),    q_t' = CVSIM(q_t, q_s).

The objective (optimal transport between q_s' and q_t' plus variance/covariance terms) lives in
``otcxr_jax.objectives`` and is not part of the network.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx, struct

from otcxr_jax.models.common import Encoder, dense_channels
from otcxr_jax.models.cvsim import CVSIM
from otcxr_jax.models.heads import DenseProjector


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
  """

  q_s: jax.Array
  q_t: jax.Array
  pooled_s: jax.Array
  pooled_t: jax.Array
  grid: tuple[int, int] = struct.field(pytree_node=False)
  attention_s: jax.Array | None = None
  attention_t: jax.Array | None = None


class OTCXRModel(nnx.Module):
  """Weight-shared encoder, dense projector and optional CV-SIM over two views."""

  def __init__(
      self,
      encoder: Encoder,
      projector: DenseProjector,
      cvsim: CVSIM | None,
      *,
      dense_stage: str = "dense",
  ):
    """Assembles the network.

    Args:
      encoder: module returning an ``EncoderOutput``.
      projector: position-wise MLP whose ``in_dim`` matches the chosen map's channels.
      cvsim: cross-view block of width ``projector.out_dim``, or ``None`` (ablation).
      dense_stage: ``'dense'`` for the encoder's last map, or one of its stage names
        (e.g. ``'stage3'`` for a ResNet's stride-16 map).
    """
    channels = dense_channels(encoder, dense_stage)
    if projector.in_dim != channels:
      raise ValueError(f"projector.in_dim={projector.in_dim} does not match the {channels} "
                       f"channels of dense_stage={dense_stage!r}")
    if cvsim is not None and cvsim.dim != projector.out_dim:
      raise ValueError(
          f"cvsim.dim={cvsim.dim} does not match projector.out_dim={projector.out_dim}")
    self.encoder = encoder
    self.projector = projector
    self.cvsim = cvsim
    self.dense_stage = dense_stage

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
    out = self.encoder(jnp.concatenate([view_s, view_t], axis=0))
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
    return OTCXROutput(
        q_s=q[:batch].astype(jnp.float32),
        q_t=q[batch:].astype(jnp.float32),
        pooled_s=out.pooled[:batch],
        pooled_t=out.pooled[batch:],
        grid=(h, w),
        attention_s=attention_s,
        attention_t=attention_t,
    )
