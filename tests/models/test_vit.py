"""ViT: timm parameter counts, token grids and stages, a block against numpy, position resizing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy.special import erf

from otcxr_jax.models import ViT, build_encoder, count_params, vit_s16
from otcxr_jax.models.vit import Block, stage_blocks


@pytest.mark.parametrize("name,expected", [
    # sum(p.numel() for p in timm.create_model('vit_{small,base}_patch16_224').parameters())
    ("vit_s16", 22_050_664),
    ("vit_b16", 86_567_656),
])
def test_parameter_count_matches_timm(name, expected):
  model = nnx.eval_shape(
      lambda: build_encoder(name, in_channels=3, num_classes=1000, rngs=nnx.Rngs(0)))
  assert count_params(model) == expected


@nnx.jit
def _forward(model: ViT, images: jax.Array):
  return model(images)


def _images(shape, seed=0) -> np.ndarray:
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _layer_norm(x, norm):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + 1e-6) * np.asarray(norm.scale[...]) + np.asarray(
      norm.bias[...])


def _linear(x, layer):
  return x @ np.asarray(layer.kernel[...], np.float64) + np.asarray(layer.bias[...], np.float64)


@pytest.fixture(scope="module")
def tiny():
  """Patch 4, width 32, 4 blocks, 4 heads, laid out for 16x16 images (4x4 grid)."""
  return ViT(patch_size=4, dim=32, depth=4, num_heads=4, image_size=16, rngs=nnx.Rngs(0))


def test_vit_s16_on_small_images():
  # Random values from numpy in the factory's network: the checks below hold for any values, and
  # JAX's initialisers, run op by op on 22M parameters, take seconds (they are checked on `tiny`).
  graphdef, state = nnx.split(nnx.eval_shape(
      lambda: vit_s16(image_size=32, num_classes=3, rngs=nnx.Rngs(0))))
  rng = np.random.default_rng(1)
  model = nnx.merge(graphdef, jax.tree.map(
      lambda x: (0.05 * rng.normal(size=x.shape)).astype(x.dtype), state))
  out = _forward(model, _images((2, 32, 32, 1)))
  names = {"block3", "block6", "block9", "block12"}
  assert model.num_features == 384
  assert model.stage_strides == {n: 16 for n in names}
  assert model.stage_channels == {n: 384 for n in names}
  assert out.dense.shape == (2, 2, 2, 384) and out.dense.dtype == jnp.float32
  assert out.pooled.shape == (2, 384)
  assert set(out.stages) == names
  assert all(s.shape == (2, 2, 2, 384) for s in out.stages.values())
  # dense is the last block's patch tokens after the final LayerNorm.
  np.testing.assert_allclose(
      out.dense, _layer_norm(np.asarray(out.stages["block12"], np.float64), model.norm),
      rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(out.logits, _linear(np.asarray(out.pooled), model.head), rtol=1e-4,
                             atol=1e-5)


def test_stage_blocks_are_evenly_spaced():
  assert stage_blocks(12) == (3, 6, 9, 12)
  assert stage_blocks(6) == (2, 3, 5, 6)
  assert stage_blocks(2) == (1, 2)
  assert stage_blocks(1) == (1,)


def test_block_matches_numpy_pre_norm_transformer():
  block = Block(16, 2, 2.0, dtype=jnp.float32, param_dtype=jnp.float32, rngs=nnx.Rngs(0))
  # Random values everywhere, so LayerNorm affine terms and biases matter.
  rng = np.random.default_rng(1)
  nnx.update(block, jax.tree.map(lambda p: 0.3 * rng.normal(size=p.shape).astype(np.float32),
                                 nnx.state(block, nnx.Param)))
  x = _images((2, 5, 16)).astype(np.float64)

  # timm's Attention: qkv columns are [q | k | v], each split into heads of 8 channels.
  qkv = _linear(_layer_norm(x, block.norm1), block.attn.qkv)
  q, k, v = np.split(qkv, 3, axis=-1)
  heads = []
  for h in range(2):
    sl = slice(8 * h, 8 * h + 8)
    s = q[..., sl] @ k[..., sl].transpose(0, 2, 1) / np.sqrt(8)
    a = np.exp(s - s.max(-1, keepdims=True))
    heads.append((a / a.sum(-1, keepdims=True)) @ v[..., sl])
  y = x + _linear(np.concatenate(heads, -1), block.attn.proj)
  hidden = _linear(_layer_norm(y, block.norm2), block.mlp.fc1)
  y = y + _linear(0.5 * hidden * (1 + erf(hidden / np.sqrt(2))), block.mlp.fc2)

  np.testing.assert_allclose(nnx.jit(lambda b, x: b(x))(block, x.astype(np.float32)), y,
                             rtol=1e-4, atol=1e-4)


def _bilinear_numpy(grid: np.ndarray, out_shape: tuple[int, int]) -> np.ndarray:
  """Half-pixel-centred bilinear upsampling of an (h, w, d) array, edges clamped."""
  for axis, n_out in enumerate(out_shape):
    n_in = grid.shape[axis]
    src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    t = (src - lo).reshape([-1 if i == axis else 1 for i in range(grid.ndim)])
    grid = np.take(grid, lo, axis) * (1 - t) + np.take(grid, hi, axis) * t
  return grid


def test_position_embedding_is_resized_for_other_image_sizes(tiny):
  pos = np.asarray(tiny.pos_embed[...])
  assert pos.shape == (1, 17, 32)
  np.testing.assert_array_equal(tiny.position_embedding((4, 4)), pos)

  resized = np.asarray(tiny.position_embedding((6, 8)))
  assert resized.shape == (1, 49, 32)
  np.testing.assert_array_equal(resized[:, 0], pos[:, 0])  # the class token's is kept
  expected = _bilinear_numpy(pos[0, 1:].reshape(4, 4, 32), (6, 8))
  np.testing.assert_allclose(resized[0, 1:].reshape(6, 8, 32), expected, rtol=1e-5, atol=1e-6)

  out = _forward(tiny, _images((2, 24, 32, 1)))
  assert out.dense.shape == (2, 6, 8, 32)
  assert all(s.shape == (2, 6, 8, 32) for s in out.stages.values())
  with pytest.raises(ValueError, match="multiple of patch_size=4"):
    tiny(_images((2, 18, 16, 1)))


def test_rgb_input_to_grey_model_is_averaged(tiny):
  rgb = _images((2, 16, 16, 3))
  np.testing.assert_allclose(_forward(tiny, rgb).dense,
                             _forward(tiny, rgb.mean(-1, keepdims=True)).dense, rtol=1e-5,
                             atol=1e-5)
  with pytest.raises(ValueError, match="2 channels"):
    tiny(_images((2, 16, 16, 2)))


def test_bfloat16_compute_with_float32_params_and_outputs(tiny):
  m16 = ViT(patch_size=4, dim=32, depth=4, num_heads=4, image_size=16, dtype=jnp.bfloat16,
            rngs=nnx.Rngs(0))
  x = _images((2, 16, 16, 1))
  out16, out32 = _forward(m16, x), _forward(tiny, x)
  assert {p.dtype for p in jax.tree.leaves(nnx.state(m16, nnx.Param))} == {jnp.dtype("float32")}
  assert out16.dense.dtype == out16.pooled.dtype == jnp.float32
  np.testing.assert_allclose(out16.dense, out32.dense, atol=0.1)


def test_invalid_arguments():
  with pytest.raises(ValueError, match="num_heads=5 must divide dim=32"):
    ViT(patch_size=4, dim=32, depth=1, num_heads=5, image_size=16, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="multiple of patch_size=16"):
    ViT(patch_size=16, dim=32, depth=1, num_heads=4, image_size=40, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="depth must be >= 1"):
    ViT(patch_size=4, dim=32, depth=0, num_heads=4, image_size=16, rngs=nnx.Rngs(0))
