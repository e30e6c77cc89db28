"""Multi-head scaled dot-product attention written out, so attention maps can be returned."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def split_heads(x: jax.Array, num_heads: int) -> jax.Array:
  """``(B, N, H*d)`` -> ``(B, H, N, d)``."""
  b, n, dim = x.shape
  return x.reshape(b, n, num_heads, dim // num_heads).transpose(0, 2, 1, 3)


def merge_heads(x: jax.Array) -> jax.Array:
  """``(B, H, N, d)`` -> ``(B, N, H*d)``."""
  b, h, n, d = x.shape
  return x.transpose(0, 2, 1, 3).reshape(b, n, h * d)


def multi_head_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, num_heads: int
) -> tuple[jax.Array, jax.Array]:
  """Attention of Vaswani et al. (2017), Eq. 1, per head: ``softmax(q_h k_h^T / sqrt(d)) v_h``.

  Scores and the softmax over keys are computed in float32 whatever the input dtype; the
  weighted values are returned in ``v``'s dtype.

  Args:
    q: ``(B, N, D)`` projected queries.
    k: ``(B, M, D)`` projected keys.
    v: ``(B, M, D)`` projected values.
    num_heads: number of heads ``H``; must divide ``D``.

  Returns:
    ``(out, attention)``: ``out`` ``(B, N, D)`` with the heads concatenated, and
    ``attention`` ``(B, H, N, M)`` float32 whose rows (over keys) sum to one.
  """
  head_dim = q.shape[-1] // num_heads
  qh, kh, vh = (split_heads(t, num_heads) for t in (q, k, v))
  scores = jnp.einsum("bhnd,bhmd->bhnm", qh, kh, preferred_element_type=jnp.float32)
  attention = jax.nn.softmax(scores * head_dim**-0.5, axis=-1)
  out = jnp.einsum("bhnm,bhmd->bhnd", attention.astype(vh.dtype), vh)
  return merge_heads(out), attention
