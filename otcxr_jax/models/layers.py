"""Transformer building blocks shared by the ViT and CV-SIM."""

from __future__ import annotations

import jax
from flax import nnx

from otcxr_jax.models.initializers import Dtype, truncated_normal

# timm's ViT initialisation of linear layers: N(0, 0.02^2) (truncated at ±2); zero bias.
dense_init = truncated_normal(0.02)


def layer_norm(dim: int, *, dtype: Dtype, param_dtype: Dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
  """LayerNorm with eps 1e-6, as timm's ViT (statistics are computed in float32)."""
  return nnx.LayerNorm(dim, epsilon=1e-6, dtype=dtype, param_dtype=param_dtype, rngs=rngs)


def linear(
    din: int, dout: int, *, dtype: Dtype, param_dtype: Dtype, rngs: nnx.Rngs
) -> nnx.Linear:
  """Linear layer with bias and timm's ViT initialisation."""
  return nnx.Linear(din, dout, kernel_init=dense_init, bias_init=nnx.initializers.zeros_init(),
                    dtype=dtype, param_dtype=param_dtype, rngs=rngs)


class Mlp(nnx.Module):
  """Token-wise MLP ``fc2(GELU(fc1(x)))`` with the exact (erf) GELU, as timm's ``Mlp``."""

  def __init__(
      self, dim: int, hidden_dim: int, *, dtype: Dtype, param_dtype: Dtype, rngs: nnx.Rngs
  ):
    self.fc1 = linear(dim, hidden_dim, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.fc2 = linear(hidden_dim, dim, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))
