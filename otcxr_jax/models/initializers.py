"""Parameter initialisers matching the PyTorch reference models (torchvision, timm).

Each draws its samples as a flat vector and reshapes them, inside one jitted function per
shape. The distribution is the same as a draw of the full shape; the point is speed: XLA
compiles the partitionable threefry draw of a multi-dimensional shape up to ten times more slowly
than that of a vector, and building a model eagerly compiles one draw per parameter shape.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

Dtype = jnp.dtype | type
Initializer = Callable[..., jax.Array]


@functools.partial(jax.jit, static_argnums=(1, 2))
def kaiming_normal_fan_out(
    key: jax.Array, shape: tuple[int, ...], dtype: Dtype = jnp.float32
) -> jax.Array:
  """torch's ``kaiming_normal_(mode="fan_out", nonlinearity="relu")`` for a conv kernel.

  N(0, 2 / fan_out) with ``fan_out = kh * kw * out_channels`` for a ``(kh, kw, in, out)`` kernel.
  """
  fan_out = math.prod(shape[:-2]) * shape[-1]
  flat = jax.random.normal(key, (math.prod(shape),), dtype)
  return (flat * math.sqrt(2.0 / fan_out)).reshape(shape)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _uniform(key: jax.Array, shape: tuple[int, ...], dtype: Dtype, bound: float) -> jax.Array:
  flat = jax.random.uniform(key, (math.prod(shape),), dtype, -bound, bound)
  return flat.reshape(shape)


def torch_default_uniform(fan_in: int) -> Initializer:
  """torch's default for ``nn.Linear``/``nn.Conv2d`` weight and bias: U(±1/sqrt(fan_in))."""
  bound = fan_in**-0.5

  def init(key: jax.Array, shape: tuple[int, ...], dtype: Dtype = jnp.float32) -> jax.Array:
    return _uniform(key, tuple(shape), dtype, bound)

  return init


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _truncated_normal(
    key: jax.Array, shape: tuple[int, ...], dtype: Dtype, std: float, bound: float
) -> jax.Array:
  flat = jax.random.truncated_normal(key, -bound / std, bound / std, (math.prod(shape),), dtype)
  return (flat * std).reshape(shape)


def truncated_normal(std: float, bound: float = 2.0) -> Initializer:
  """timm's ``trunc_normal_(std=std, a=-bound, b=bound)``: N(0, std^2) restricted to ±bound.

  The bound is absolute, as in timm: with std 0.02 and bound 2 this is a plain N(0, 0.02^2).
  """

  def init(key: jax.Array, shape: tuple[int, ...], dtype: Dtype = jnp.float32) -> jax.Array:
    return _truncated_normal(key, tuple(shape), dtype, std, bound)

  return init


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _normal(key: jax.Array, shape: tuple[int, ...], dtype: Dtype, std: float) -> jax.Array:
  return (jax.random.normal(key, (math.prod(shape),), dtype) * std).reshape(shape)


def normal(std: float) -> Initializer:
  """N(0, std^2)."""

  def init(key: jax.Array, shape: tuple[int, ...], dtype: Dtype = jnp.float32) -> jax.Array:
    return _normal(key, tuple(shape), dtype, std)

  return init
