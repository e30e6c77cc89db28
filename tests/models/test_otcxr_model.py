"""OTCXRModel, DenseProjector and LinearClassifier."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from otcxr_jax.models import (CVSIM, DenseProjector, LinearClassifier, OTCXRModel, ResNet, ViT,
                              count_params)
from otcxr_jax.models.target import TargetParam

B = 3


def _images(seed: int, shape=(B, 16, 16, 1)) -> np.ndarray:
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _randomize_params(module: nnx.Module, seed: int) -> None:
  rng = np.random.default_rng(seed)
  nnx.update(module, jax.tree.map(lambda p: 0.3 * rng.normal(size=p.shape).astype(np.float32),
                                  nnx.state(module, nnx.Param)))


@pytest.fixture
def parts():
  """ResNet-18 at width 1/8 with a small stem: 16x16 images give a 2x2 grid of 64 channels."""
  encoder = ResNet(18, width=0.125, stem="small", rngs=nnx.Rngs(0))
  projector = DenseProjector(64, 32, 16, rngs=nnx.Rngs(1))
  cvsim = CVSIM(16, num_heads=2, rngs=nnx.Rngs(2))
  return encoder, projector, cvsim


@nnx.jit
def _run(model: OTCXRModel, s, t):
  return model(s, t, return_attention=model.cvsim is not None)


def test_output_shapes_with_and_without_cvsim(parts):
  encoder, projector, cvsim = parts
  s, t = _images(0), _images(1)
  out = _run(OTCXRModel(encoder, projector, cvsim), s, t)
  assert out.grid == (2, 2)
  assert out.q_s.shape == out.q_t.shape == (B, 4, 16)
  assert out.pooled_s.shape == out.pooled_t.shape == (B, 64)
  assert out.attention_s.shape == out.attention_t.shape == (B, 2, 4, 4)
  assert out.q_s.dtype == out.q_t.dtype == jnp.float32

  plain = OTCXRModel(encoder, projector, None)
  out = _run(plain, s, t)
  assert out.q_s.shape == out.q_t.shape == (B, 4, 16)
  assert out.attention_s is None and out.attention_t is None
  with pytest.raises(ValueError, match="needs a model built with a CV-SIM"):
    plain(s, t, return_attention=True)
  with pytest.raises(ValueError, match="same shape"):
    plain(s, t[:2])


def test_output_is_the_composition_of_its_parts(parts):
  encoder, projector, cvsim = parts
  model = OTCXRModel(encoder, projector, cvsim)
  model.eval()  # running statistics: each view can then be encoded on its own
  s, t = _images(0), _images(1)

  @nnx.jit
  def by_hand(encoder, projector, cvsim, s, t):
    ps, pt = (projector(encoder(v).dense.reshape(B, 4, 64)) for v in (s, t))
    ys, attention_s = cvsim(ps, pt, return_attention=True)
    yt, attention_t = cvsim(pt, ps, return_attention=True)
    return ps, pt, ys, yt, attention_s, attention_t, encoder(s).pooled

  ps, pt, ys, yt, attention_s, attention_t, pooled_s = by_hand(encoder, projector, cvsim, s, t)
  out = _run(model, s, t)
  tol = dict(rtol=1e-5, atol=1e-5)
  # One CV-SIM both ways: q_s' = CVSIM(q_s, q_t) and q_t' = CVSIM(q_t, q_s).
  np.testing.assert_allclose(out.q_s, ys, **tol)
  np.testing.assert_allclose(out.q_t, yt, **tol)
  np.testing.assert_allclose(out.attention_s, attention_s, **tol)
  np.testing.assert_allclose(out.attention_t, attention_t, **tol)
  np.testing.assert_allclose(out.pooled_s, pooled_s, **tol)
  plain = _run(OTCXRModel(encoder, projector, None), s, t)
  np.testing.assert_allclose(plain.q_s, ps, **tol)
  np.testing.assert_allclose(plain.q_t, pt, **tol)


def test_both_views_share_one_batchnorm_pass_in_training(parts):
  encoder, projector, _ = parts
  model = OTCXRModel(encoder, projector, None)
  model.train()
  s, t = _images(0), _images(1)
  conv = np.asarray(encoder.stem.conv(np.concatenate([s, t])), np.float64)
  q_s = _run(model, s, t).q_s
  # Running mean after one step: 0.1 x the mean over the 2B images of both views.
  np.testing.assert_allclose(encoder.stem.bn.mean[...], 0.1 * conv.mean((0, 1, 2)), rtol=1e-4,
                             atol=1e-6)
  # Without CV-SIM, view s's tokens depend on view t only through the shared batch statistics.
  assert not np.allclose(_run(model, s, _images(2)).q_s, q_s, atol=1e-4)


def test_gradients_reach_encoder_projector_and_cvsim(parts):
  model = OTCXRModel(*parts)
  model.train()

  @nnx.jit
  def grads(model, s, t):
    def loss(model):
      out = model(s, t)
      return jnp.mean(out.q_s * out.q_t) + jnp.mean(out.q_s**2)

    return nnx.grad(loss)(model)

  g = grads(model, _images(0), _images(1))
  for name in ("encoder", "projector", "cvsim"):
    leaves = jax.tree_util.tree_leaves_with_path(g[name])
    assert leaves
    for path, leaf in leaves:
      assert np.all(np.isfinite(leaf)), (name, path)
      assert np.any(leaf != 0), f"no gradient reaches {name}{jax.tree_util.keystr(path)}"


def test_intermediate_dense_stage_and_vit_encoder():
  encoder = ResNet(18, width=0.125, stem="small", rngs=nnx.Rngs(0))
  model = OTCXRModel(encoder, DenseProjector(32, 16, 8, rngs=nnx.Rngs(1)), None,
                     dense_stage="stage3")
  out = _run(model, _images(0), _images(1))
  assert out.grid == (4, 4)  # stage3 has stride 4 with a stride-1 small stem
  assert out.q_s.shape == (B, 16, 8)

  vit = ViT(patch_size=4, dim=16, depth=2, num_heads=2, image_size=16, rngs=nnx.Rngs(0))
  model = OTCXRModel(vit, DenseProjector(16, 16, 8, rngs=nnx.Rngs(1)),
                     CVSIM(8, num_heads=2, rngs=nnx.Rngs(2)), dense_stage="block1")
  out = _run(model, _images(0), _images(1))
  assert out.grid == (4, 4)
  assert out.q_s.shape == (B, 16, 8)
  assert out.attention_s.shape == (B, 2, 16, 16)


def test_teacher_projects_the_pooled_features_with_ema_copies_without_gradient(parts):
  """With the image-level branch the model holds EMA copies of the encoder and the global
  projector: at creation the teacher's projection is the online one, p is the predictor of it,
  and once the copies differ the teacher's projection follows them, with no gradient."""
  encoder, projector, cvsim = parts
  branch = dict(global_projector=DenseProjector(64, 32, 8, rngs=nnx.Rngs(3)),
                predictor=DenseProjector(8, 32, 8, rngs=nnx.Rngs(4)))
  model = OTCXRModel(encoder, projector, cvsim, **branch)
  model.eval()
  assert set(model.target.names) == {"encoder", "global_projector"}
  assert not nnx.state(model.target, nnx.Param)  # the copies hold TargetParams, not trained
  s, t = _images(0), _images(1)
  out = _run(model, s, t)
  plain = _run(OTCXRModel(encoder, projector, cvsim), s, t)
  tol = dict(rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out.q_s, plain.q_s, **tol)  # the dense branch is unchanged
  z = nnx.jit(lambda g, x: g(x))(branch["global_projector"], out.pooled_s)
  np.testing.assert_allclose(out.z_s_target, z, **tol)
  np.testing.assert_allclose(out.p_s, nnx.jit(lambda p, x: p(x))(branch["predictor"], z), **tol)
  assert out.p_s.shape == out.z_t_target.shape == (B, 8)
  rng = np.random.default_rng(9)
  nnx.update(model.target.global_projector, jax.tree.map(
      lambda p: 0.3 * rng.normal(size=p.shape).astype(np.float32),
      nnx.state(model.target.global_projector, TargetParam)))
  moved = _run(model, s, t)
  np.testing.assert_allclose(moved.p_s, out.p_s, **tol)
  assert np.abs(np.asarray(moved.z_s_target) - np.asarray(out.z_s_target)).max() > 1e-2
  graphdef, teacher, rest = nnx.split(model, TargetParam, ...)
  z_of = lambda teacher: nnx.merge(graphdef, teacher, rest, copy=True)(s, t).z_s_target
  g = jax.jit(jax.grad(lambda teacher: jnp.sum(z_of(teacher) ** 2)))(teacher)
  assert jax.tree.leaves(g) and all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(g))
  assert plain.p_s is None and OTCXRModel(encoder, projector, cvsim).target is None


def test_inconsistent_parts_are_rejected(parts):
  encoder, projector, cvsim = parts
  with pytest.raises(ValueError, match="dense_stage must be 'dense' or one of"):
    OTCXRModel(encoder, projector, cvsim, dense_stage="stage5")
  with pytest.raises(ValueError, match="projector.in_dim=64 does not match the 32 channels"):
    OTCXRModel(encoder, projector, cvsim, dense_stage="stage3")
  with pytest.raises(ValueError, match="cvsim.dim=8 does not match projector.out_dim=16"):
    OTCXRModel(encoder, projector, CVSIM(8, num_heads=2, rngs=nnx.Rngs(0)))
  mlp = lambda i, o: DenseProjector(i, 16, o, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="global_projector and predictor come together"):
    OTCXRModel(encoder, projector, cvsim, predictor=mlp(8, 8))
  with pytest.raises(ValueError, match="global_projector.in_dim=32 does not match the encoder's "
                                       "64 pooled features"):
    OTCXRModel(encoder, projector, cvsim, global_projector=mlp(32, 8), predictor=mlp(8, 8))
  with pytest.raises(ValueError, match="predictor must map 8 to 8 features, got 8 -> 4"):
    OTCXRModel(encoder, projector, cvsim, global_projector=mlp(64, 8), predictor=mlp(8, 4))


def _projector_numpy(p: DenseProjector, x: np.ndarray) -> np.ndarray:
  """Linear -> BatchNorm over every row (batch statistics, biased variance) -> ReLU -> Linear."""
  h = x.reshape(-1, x.shape[-1]).astype(np.float64)
  for layer, norm in zip(p.hidden, p.norms):
    h = h @ np.asarray(layer.kernel[...])
    h = (h - h.mean(0)) / np.sqrt(h.var(0) + 1e-5)
    h = np.maximum(h * np.asarray(norm.scale[...]) + np.asarray(norm.bias[...]), 0)
  h = h @ np.asarray(p.out.kernel[...]) + np.asarray(p.out.bias[...])
  return h.reshape(*x.shape[:-1], -1)


def test_projector_normalises_over_batch_and_positions():
  p = DenseProjector(8, 6, 4, num_layers=3, rngs=nnx.Rngs(0))
  assert len(p.hidden) == len(p.norms) == 2
  assert p.hidden[0].bias is None and p.out.bias is not None
  # 8*6 + 6*6 weights, 2 x (6 + 6) BatchNorm affine terms, 6*4 + 4 output layer.
  assert count_params(p) == 48 + 36 + 24 + 28
  _randomize_params(p, 1)
  x = np.random.default_rng(2).normal(size=(3, 5, 8)).astype(np.float32)
  p.train()
  y = nnx.jit(lambda p, x: p(x))(p, x)
  assert y.shape == (3, 5, 4)
  np.testing.assert_allclose(y, _projector_numpy(p, x), rtol=1e-4, atol=1e-4)

  single = DenseProjector(8, 6, 4, num_layers=1, rngs=nnx.Rngs(0))
  assert len(single.hidden) == 0
  np.testing.assert_allclose(single(x), _projector_numpy(single, x), rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match=r"\(\.\.\., 8\)"):
    p(x[..., :4])


def test_projector_batch_statistics_are_global_under_sharded_jit():
  p = DenseProjector(8, 6, 4, rngs=nnx.Rngs(0))
  _randomize_params(p, 1)
  p.train()
  graphdef, params, stats = nnx.split(p, nnx.Param, nnx.BatchStat)
  x = np.random.default_rng(3).normal(size=(8, 5, 8)).astype(np.float32)

  @jax.jit
  def forward(params, stats, x):
    m = nnx.merge(graphdef, params, stats)
    return m(x), nnx.state(m, nnx.BatchStat)

  mesh = Mesh(np.array(jax.devices()[:4]), ("data",))
  x_sharded = jax.device_put(x, NamedSharding(mesh, PartitionSpec("data")))
  assert len(x_sharded.sharding.device_set) == 4
  y, new_stats = forward(params, stats, x_sharded)
  # Each device holds 2 of the 8 images; the statistics must still cover all 40 rows.
  np.testing.assert_allclose(y, _projector_numpy(nnx.merge(graphdef, params, stats), x),
                             rtol=1e-4, atol=1e-4)
  h = x.reshape(40, 8).astype(np.float64) @ np.asarray(params["hidden"][0]["kernel"][...])
  np.testing.assert_allclose(new_stats["norms"][0]["mean"][...], 0.1 * h.mean(0), rtol=1e-4,
                             atol=1e-6)


def test_linear_classifier():
  clf = LinearClassifier(64, 5, rngs=nnx.Rngs(0))
  kernel = np.asarray(clf.linear.kernel[...])
  np.testing.assert_allclose(kernel.std(), 0.01, rtol=0.15)
  np.testing.assert_array_equal(clf.linear.bias[...], 0)
  _randomize_params(clf, 1)
  x = np.random.default_rng(2).normal(size=(3, 64)).astype(np.float32)
  expected = x @ np.asarray(clf.linear.kernel[...]) + np.asarray(clf.linear.bias[...])
  np.testing.assert_allclose(clf(x), expected, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match=r"\(B, 64\)"):
    clf(x[:, :32])
