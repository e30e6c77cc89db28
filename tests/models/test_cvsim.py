"""CV-SIM against a plain-numpy pre-norm multi-head cross-attention block."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy.special import erf

from otcxr_jax.models import CVSIM


def _randomize_params(module: nnx.Module, seed: int) -> None:
  """Replaces every parameter by N(0, 0.3^2) noise so LayerNorm affine terms and biases matter."""
  rng = np.random.default_rng(seed)
  nnx.update(module, jax.tree.map(lambda p: 0.3 * rng.normal(size=p.shape).astype(np.float32),
                                  nnx.state(module, nnx.Param)))


def _np(p) -> np.ndarray:
  return np.asarray(p[...], dtype=np.float64)


def _layer_norm(x, norm):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + 1e-6) * _np(norm.scale) + _np(norm.bias)


def _linear(x, layer):
  return x @ _np(layer.kernel) + _np(layer.bias)


def _reference(m: CVSIM, x: np.ndarray, c: np.ndarray):
  """y = x + Wo MHA(LN_q x, LN_kv c); y + MLP(LN y), one head at a time in float64."""
  xn, cn = _layer_norm(x, m.norm_q), _layer_norm(c, m.norm_kv)
  q, k, v = _linear(xn, m.q), _linear(cn, m.k), _linear(cn, m.v)
  d = m.dim // m.num_heads
  heads, maps = [], []
  for h in range(m.num_heads):
    sl = slice(h * d, (h + 1) * d)
    s = np.einsum("bnd,bmd->bnm", q[..., sl], k[..., sl]) / np.sqrt(d)
    a = np.exp(s - s.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    maps.append(a)
    heads.append(a @ v[..., sl])
  y = x + _linear(np.concatenate(heads, -1), m.out)
  hidden = _linear(_layer_norm(y, m.norm_mlp), m.mlp.fc1)
  hidden = 0.5 * hidden * (1 + erf(hidden / np.sqrt(2)))
  return y + _linear(hidden, m.mlp.fc2), np.stack(maps, 1)


@nnx.jit
def _apply(m: CVSIM, x, c):
  return m(x, c, return_attention=True)


@pytest.fixture(scope="module")
def cvsim_and_tokens():
  m = CVSIM(16, num_heads=4, mlp_ratio=2.0, rngs=nnx.Rngs(0))
  _randomize_params(m, 1)
  rng = np.random.default_rng(2)
  x = rng.normal(size=(3, 5, 16)).astype(np.float32)
  c = rng.normal(size=(3, 7, 16)).astype(np.float32)
  return m, x, c


def test_matches_numpy_cross_attention_both_ways(cvsim_and_tokens):
  m, x, c = cvsim_and_tokens
  # The same weights serve both directions: x over c (N=5 queries, M=7 keys) and c over x.
  for query, context in ((x, c), (c, x)):
    y, attention = _apply(m, query, context)
    y_ref, attention_ref = _reference(m, np.asarray(query, np.float64),
                                      np.asarray(context, np.float64))
    assert y.shape == query.shape
    assert attention.shape == (3, 4, query.shape[1], context.shape[1])
    np.testing.assert_allclose(attention, attention_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(y, y_ref, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(nnx.jit(lambda m, x, c: m(x, c))(m, c, x), y)


def test_attention_rows_are_distributions(cvsim_and_tokens):
  m, x, c = cvsim_and_tokens
  _, attention = _apply(m, x, c)
  assert attention.dtype == jnp.float32
  assert np.all(np.asarray(attention) >= 0)
  np.testing.assert_allclose(attention.sum(-1), 1.0, rtol=1e-5)


def test_bfloat16_compute_keeps_float32_softmax(cvsim_and_tokens):
  _, x, c = cvsim_and_tokens
  m32 = CVSIM(16, num_heads=4, rngs=nnx.Rngs(0))
  m16 = CVSIM(16, num_heads=4, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
  (y16, a16), (y32, a32) = _apply(m16, x, c), _apply(m32, x, c)
  assert a16.dtype == jnp.float32
  assert {p.dtype for p in jax.tree.leaves(nnx.state(m16, nnx.Param))} == {jnp.dtype("float32")}
  np.testing.assert_allclose(a16.sum(-1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(a16, a32, atol=2e-2)
  np.testing.assert_allclose(y16, y32, atol=5e-2)


def test_invalid_inputs_are_rejected(cvsim_and_tokens):
  m, x, c = cvsim_and_tokens
  with pytest.raises(ValueError, match="num_heads=3 must divide dim=16"):
    CVSIM(16, num_heads=3, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="D=16"):
    m(x, c[..., :8])
  with pytest.raises(ValueError, match="batch sizes differ"):
    m(x, c[:2])
  with pytest.raises(ValueError, match=r"\(B, N, D\)"):
    m(x[0], c[0])
