"""Shared pieces of the baseline objectives: hyperparameter and input checks, L2 normalisation."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

# Floor on a vector's L2 norm before dividing by it (as torch.nn.functional.normalize): a zero
# vector normalises to zero with a finite (zero) gradient instead of NaN.
NORM_EPS = 1e-12


def _is_real(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_number(owner: str, name: str, value, *, low: float = -math.inf,
                 high: float = math.inf, low_open: bool = False) -> None:
  """Raises ValueError unless ``value`` is a finite Python number in ``[low, high]``.

  ``low_open`` excludes ``low``. Hyperparameters are static: a traced value is rejected too.
  """
  ok = _is_real(value) and (value > low if low_open else value >= low) and value <= high
  if not ok:
    bound = f"{low} {'<' if low_open else '<='} x <= {high}"
    raise ValueError(f"{owner}.{name} must be a finite number x with {bound}, got {value!r}.")


def check_match_counts(owner: str, name: str, value, *, allow_none: bool = False) -> None:
  """Raises ValueError unless ``value`` is a pair of positive ints (or None if allowed)."""
  if allow_none and value is None:
    return
  ok = (isinstance(value, tuple) and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value))
  if not ok:
    extra = " or None" if allow_none else ""
    raise ValueError(f"{owner}.{name} must be a pair of positive ints{extra}, got {value!r}.")


def check_pair(a: jax.Array, b: jax.Array, names: tuple[str, str], *, min_batch: int) -> None:
  """Raises ValueError unless ``a`` and ``b`` are ``(B, D)`` arrays of one shape, B >= min_batch."""
  a_shape, b_shape = jnp.shape(a), jnp.shape(b)
  if len(a_shape) != 2 or a_shape != b_shape:
    raise ValueError(f"{names[0]} and {names[1]} must be (B, D) arrays of the same shape, got "
                     f"{a_shape} and {b_shape}.")
  if a_shape[0] < min_batch:
    raise ValueError(f"{names[0]} and {names[1]} need a batch of at least {min_batch}, got "
                     f"B = {a_shape[0]}.")


def l2_normalize(x: jax.Array, axis: int = -1) -> jax.Array:
  """``x / max(||x||₂, NORM_EPS)`` along ``axis``; finite value and gradient at ``x = 0``."""
  sq = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(sq, NORM_EPS**2))
