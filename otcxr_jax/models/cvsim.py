"""CV-SIM, the Cross-Viewpoint Semantics Infusion Module of OTCXR (arXiv 2404.11868).

The paper says CV-SIM exchanges information between the two views by cross-attention and gives
no further detail. Our definition is a pre-norm transformer cross-attention block,

    y = x + W_o · MHA(LN_q(x) W_q, LN_kv(c) W_k, LN_kv(c) W_v)
    y = y + MLP(LN(y)),

where MHA is multi-head scaled dot-product attention (Vaswani et al. 2017) of the tokens ``x``
of one view over the tokens ``c`` of the other. The pretraining model calls one instance both
ways (view s over view t, and t over s), so the weights are shared between directions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from otcxr_jax.models.attention import multi_head_attention
from otcxr_jax.models.initializers import Dtype
from otcxr_jax.models.layers import Mlp, layer_norm, linear


class CVSIM(nnx.Module):
  """Pre-norm cross-attention block with a residual MLP.

  Attributes:
    dim: token width ``D``.
    num_heads: attention heads.
  """

  def __init__(
      self,
      dim: int,
      *,
      num_heads: int = 4,
      mlp_ratio: float = 2.0,
      dtype: Dtype = jnp.float32,
      param_dtype: Dtype = jnp.float32,
      rngs: nnx.Rngs,
  ):
    """Builds the block.

    Args:
      dim: token width; must be divisible by ``num_heads``.
      num_heads: attention heads.
      mlp_ratio: MLP hidden width relative to ``dim``.
      dtype: computation dtype; the attention softmax is always float32.
      param_dtype: parameter dtype.
      rngs: random generators for initialisation.
    """
    if dim < 1 or num_heads < 1:
      raise ValueError(f"dim and num_heads must be >= 1, got dim={dim}, num_heads={num_heads}")
    if dim % num_heads:
      raise ValueError(f"num_heads={num_heads} must divide dim={dim}")
    if not mlp_ratio > 0:
      raise ValueError(f"mlp_ratio must be positive, got {mlp_ratio}")
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.dim = dim
    self.num_heads = num_heads
    self.norm_q = layer_norm(dim, **kw)
    self.norm_kv = layer_norm(dim, **kw)
    self.q = linear(dim, dim, **kw)
    self.k = linear(dim, dim, **kw)
    self.v = linear(dim, dim, **kw)
    self.out = linear(dim, dim, **kw)
    self.norm_mlp = layer_norm(dim, **kw)
    self.mlp = Mlp(dim, int(dim * mlp_ratio), **kw)

  def __call__(
      self, x: jax.Array, context: jax.Array, *, return_attention: bool = False
  ) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Infuses ``context`` into ``x``.

    Args:
      x: ``(B, N, D)`` query tokens.
      context: ``(B, M, D)`` key/value tokens of the other view.
      return_attention: also return the attention maps.

    Returns:
      ``y`` ``(B, N, D)`` in ``x``'s dtype, and with ``return_attention`` also the float32
      attention ``(B, num_heads, N, M)``, each row a distribution over the context tokens.
    """
    if x.ndim != 3 or context.ndim != 3:
      raise ValueError(
          f"x and context must be (B, N, D) tokens, got shapes {x.shape} and {context.shape}")
    if x.shape[-1] != self.dim or context.shape[-1] != self.dim:
      raise ValueError(f"x and context must have D={self.dim} features, got shapes "
                       f"{x.shape} and {context.shape}")
    if x.shape[0] != context.shape[0]:
      raise ValueError(f"x and context batch sizes differ: {x.shape[0]} vs {context.shape[0]}")
    xn = self.norm_q(x)
    cn = self.norm_kv(context)
    attended, attention = multi_head_attention(self.q(xn), self.k(cn), self.v(cn),
                                               self.num_heads)
    y = x + self.out(attended).astype(x.dtype)
    y = y + self.mlp(self.norm_mlp(y)).astype(x.dtype)
    return (y, attention) if return_attention else y
