"""ResNet: torchvision parameter counts, stage shapes and strides, channels, BatchNorm modes."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from otcxr_jax.models import ResNet, build_encoder, count_params, match_channels
from otcxr_jax.models.resnet import BasicBlock, Bottleneck, Norm


@pytest.mark.parametrize("name,expected", [
    # sum(p.numel() for p in torchvision.models.resnetXX().parameters())
    ("resnet18", 11_689_512),
    ("resnet34", 21_797_672),
    ("resnet50", 25_557_032),
    ("resnet101", 44_549_160),
])
def test_parameter_count_matches_torchvision(name, expected):
  model = nnx.eval_shape(
      lambda: build_encoder(name, in_channels=3, num_classes=1000, rngs=nnx.Rngs(0)))
  assert count_params(model) == expected


_MODELS = {}
_SHAPE = (2, 36, 28, 1)  # not powers of two: strided layers round up, as torch's padding does


def _model(depth: int, stem: str, stem_stride: int = 1) -> ResNet:
  """Tiny (width 1/8) models with a 3-class head, built once per configuration."""
  key = (depth, stem, stem_stride)
  if key not in _MODELS:
    _MODELS[key] = ResNet(depth, width=0.125, stem=stem, stem_stride=stem_stride, num_classes=3,
                          rngs=nnx.Rngs(0))
  return _MODELS[key]


@nnx.jit
def _forward(model: ResNet, images: jax.Array):
  """One compiled forward pass per configuration (faster than op-by-op dispatch)."""
  return model(images)


def _images(shape=_SHAPE, seed=0) -> np.ndarray:
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


@pytest.mark.parametrize("depth,stem,stem_stride,strides", [
    (18, "imagenet", 1, (2, 4, 8, 16, 32)),
    (18, "small", 1, (1, 1, 2, 4, 8)),
    (50, "imagenet", 1, (2, 4, 8, 16, 32)),
    (50, "small", 2, (2, 2, 4, 8, 16)),
])
def test_stage_shapes_strides_and_head(depth, stem, stem_stride, strides):
  model = _model(depth, stem, stem_stride)
  model.eval()
  expansion = 1 if depth == 18 else 4
  # width 1/8: stem 8 channels, stage i has max(8, 64 * 2**i / 8) planes times the expansion.
  channels = (8, 8 * expansion, 16 * expansion, 32 * expansion, 64 * expansion)
  names = ("stem", "stage1", "stage2", "stage3", "stage4")
  assert model.stage_strides == dict(zip(names, strides))
  assert model.stage_channels == dict(zip(names, channels))
  assert model.num_features == channels[-1]

  b, h, w, _ = _SHAPE
  out = _forward(model, _images())
  assert set(out.stages) == set(names)
  for name, stride, ch in zip(names, strides, channels):
    assert out.stages[name].shape == (b, math.ceil(h / stride), math.ceil(w / stride), ch)
    assert out.stages[name].dtype == jnp.float32
  np.testing.assert_array_equal(out.dense, out.stages["stage4"])
  np.testing.assert_allclose(out.pooled, out.dense.mean(axis=(1, 2)), rtol=1e-5, atol=1e-7)
  kernel, bias = np.asarray(model.head.kernel[...]), np.asarray(model.head.bias[...])
  np.testing.assert_allclose(out.logits, np.asarray(out.pooled) @ kernel + bias, rtol=1e-5,
                             atol=1e-6)
  # torch.nn.Linear's default initialisation: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
  assert kernel.shape == (channels[-1], 3)
  assert np.abs(kernel).max() <= channels[-1]**-0.5


def test_channel_adaptation():
  x = np.random.default_rng(0).normal(size=(2, 4, 4, 3)).astype(np.float32)
  np.testing.assert_allclose(match_channels(x, 1), x.mean(-1, keepdims=True), rtol=1e-6)
  np.testing.assert_array_equal(match_channels(x[..., :1], 3), np.repeat(x[..., :1], 3, -1))
  np.testing.assert_array_equal(match_channels(x, 3), x)
  with pytest.raises(ValueError, match="2 channels.*in_channels=1"):
    match_channels(x[..., :2], 1)
  with pytest.raises(ValueError, match="4 channels.*in_channels=3"):
    match_channels(np.zeros((1, 4, 4, 4)), 3)
  with pytest.raises(ValueError, match=r"\(B, H, W, C\)"):
    match_channels(x[0], 3)


def test_grey_model_accepts_rgb_images():
  grey = _model(18, "imagenet")
  grey.eval()
  rgb = _images(_SHAPE[:3] + (3,))
  np.testing.assert_allclose(_forward(grey, rgb).dense,
                             _forward(grey, rgb.mean(-1, keepdims=True)).dense,
                             rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="2 channels.*in_channels=1"):
    grey(_images(_SHAPE[:3] + (2,)))


def test_batchnorm_uses_batch_statistics_in_train_and_running_ones_in_eval():
  model = ResNet(18, width=0.125, stem="small", num_classes=3, rngs=nnx.Rngs(1))
  x = _images()
  conv = np.asarray(model.stem.conv(x), np.float64)

  model.train()
  out = _forward(model, x)
  # torch momentum 0.1: running <- 0.9 running + 0.1 batch (running mean 0, variance 1 at init).
  np.testing.assert_allclose(model.stem.bn.mean[...], 0.1 * conv.mean((0, 1, 2)), rtol=1e-4,
                             atol=1e-6)
  np.testing.assert_allclose(model.stem.bn.var[...], 0.9 + 0.1 * conv.var((0, 1, 2)),
                             rtol=1e-4)
  # Batch statistics couple the samples: changing sample 1 changes sample 0's features.
  x_changed = x.copy()
  x_changed[1] = _images(_SHAPE[1:], seed=5)
  assert not np.allclose(_forward(model, x_changed).dense[0], out.dense[0], atol=1e-4)

  model.eval()
  stats = jax.tree.map(np.asarray, nnx.state(model, nnx.BatchStat))
  first = _forward(model, x).dense
  np.testing.assert_array_equal(_forward(model, x).dense, first)
  # Running statistics: each sample's features depend on that sample alone.
  np.testing.assert_allclose(_forward(model, x_changed).dense[0], first[0], rtol=1e-5, atol=1e-6)
  jax.tree.map(np.testing.assert_array_equal, nnx.state(model, nnx.BatchStat), stats)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_groupnorm_keeps_the_parameter_count(name):
  # Shapes only (as the torchvision counts above): initialising 25M parameters adds nothing.
  bn = nnx.eval_shape(
      lambda: build_encoder(name, in_channels=3, num_classes=1000, rngs=nnx.Rngs(0)))
  gn = nnx.eval_shape(lambda: build_encoder(name, in_channels=3, num_classes=1000, norm="group",
                                            rngs=nnx.Rngs(0)))
  assert jax.tree.leaves(nnx.state(bn, nnx.BatchStat))  # the check below can fail
  assert count_params(gn) == count_params(bn)
  assert not jax.tree.leaves(nnx.state(gn, nnx.BatchStat))


def test_groupnorm_matches_numpy_and_is_the_same_in_train_and_eval():
  model = ResNet(18, width=0.375, stem="small", norm="group", norm_groups=32, rngs=nnx.Rngs(2))
  # 64 * 0.375 = 24 stem channels: gcd(32, 24) = 8 groups of 3 channels.
  assert model.stem.bn.num_groups == 8
  x = _images()
  conv = np.asarray(model.stem.conv(x), np.float64)
  g = conv.reshape(*conv.shape[:3], 8, 3)
  mean = g.mean(axis=(1, 2, 4), keepdims=True)
  var = g.var(axis=(1, 2, 4), keepdims=True)
  expected = np.maximum((g - mean) / np.sqrt(var + 1e-5), 0).reshape(conv.shape)
  np.testing.assert_allclose(model.stem(x), expected, rtol=1e-4, atol=1e-5)
  model.train()
  train = _forward(model, x).dense
  model.eval()
  np.testing.assert_allclose(_forward(model, x).dense, train, rtol=1e-6, atol=1e-6)
  # Per-image normalisation: changing sample 1 leaves sample 0's features unchanged.
  x_changed = x.copy()
  x_changed[1] = _images(_SHAPE[1:], seed=5)
  np.testing.assert_allclose(_forward(model, x_changed).dense[0], train[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("block", [BasicBlock, Bottleneck])
def test_zero_init_residual_makes_blocks_start_as_identity(block):
  m = block(16, 4, 2, zero_init_residual=True, norm=Norm(), dtype=jnp.float32,
            param_dtype=jnp.float32, rngs=nnx.Rngs(0))
  m.eval()
  y, shortcut = nnx.jit(lambda m, x: (m(x), nnx.relu(m.shortcut(x))))(m, _images((2, 8, 8, 16)))
  np.testing.assert_allclose(y, shortcut, rtol=1e-6)


def test_convolutions_use_kaiming_normal_fan_out():
  m = BasicBlock(64, 64, 1, zero_init_residual=False, norm=Norm(), dtype=jnp.float32,
                 param_dtype=jnp.float32, rngs=nnx.Rngs(0))
  kernel = np.asarray(m.conv1.kernel[...])
  assert kernel.shape == (3, 3, 64, 64)
  assert m.conv1.bias is None
  np.testing.assert_allclose(kernel.std(), math.sqrt(2 / (3 * 3 * 64)), rtol=0.03)
  assert abs(kernel.mean()) < 0.03 * kernel.std()


def test_bfloat16_compute_with_float32_params_and_outputs():
  m32 = _model(18, "small")
  m16 = ResNet(18, width=0.125, stem="small", num_classes=3, dtype=jnp.bfloat16,
               rngs=nnx.Rngs(0))
  m32.eval()
  m16.eval()
  x = _images()
  out16, out32 = _forward(m16, x), _forward(m32, x)
  assert {p.dtype for p in jax.tree.leaves(nnx.state(m16, nnx.Param))} == {jnp.dtype("float32")}
  assert out16.dense.dtype == out16.pooled.dtype == jnp.float32
  scale = np.abs(np.asarray(out32.dense)).max()
  np.testing.assert_allclose(out16.dense, out32.dense, atol=0.05 * scale)


def test_invalid_arguments():
  with pytest.raises(ValueError, match="norm must be one of"):
    ResNet(18, norm="layer", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="depth must be one of"):
    ResNet(20, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="stem must be"):
    ResNet(18, stem="cifar", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="stem_stride"):
    ResNet(18, stem="imagenet", stem_stride=2, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="width"):
    ResNet(18, width=0.0, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="unknown encoder"):
    build_encoder("resnet152", rngs=nnx.Rngs(0))


@pytest.mark.parametrize("num_stages", [1, 2, 3])
def test_fewer_stages_end_at_a_finer_map(num_stages):
  full = _model(18, "imagenet", 1)
  model = ResNet(18, width=0.125, stem="imagenet", num_stages=num_stages, num_classes=3,
                 rngs=nnx.Rngs(0))
  names = ("stem", "stage1", "stage2", "stage3")[:num_stages + 1]
  last = names[-1]
  assert tuple(model.stage_strides) == names
  assert model.num_features == full.stage_channels[last]
  # The same initialisation stream: the built stages hold the full network's weights.
  for name in names:
    jax.tree.map(np.testing.assert_array_equal, nnx.state(getattr(model, name), nnx.Param),
                 nnx.state(getattr(full, name), nnx.Param))
  assert not hasattr(model, "stage4")
  model.eval()
  full.eval()
  out, ref = _forward(model, _images()), _forward(full, _images())
  assert set(out.stages) == set(names)
  np.testing.assert_array_equal(out.dense, ref.stages[last])
  np.testing.assert_allclose(out.pooled, ref.stages[last].mean(axis=(1, 2)), rtol=1e-5,
                             atol=1e-7)
  assert out.logits.shape == (_SHAPE[0], 3)


@pytest.mark.parametrize("num_stages", [0, 5, True])
def test_num_stages_out_of_range(num_stages):
  with pytest.raises(ValueError, match="num_stages must be 1, 2, 3 or 4"):
    build_encoder("resnet18", num_stages=num_stages, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("num_stages", [2, 4])
def test_last_stride_one_keeps_the_last_map_as_fine_as_the_one_before(num_stages):
  kw = dict(width=0.125, stem="imagenet", num_stages=num_stages)
  strided, fine = ResNet(18, rngs=nnx.Rngs(0), **kw), ResNet(18, last_stride=1, rngs=nnx.Rngs(0),
                                                             **kw)
  last, before = f"stage{num_stages}", f"stage{num_stages - 1}"
  assert fine.stage_strides[last] == fine.stage_strides[before] == strided.stage_strides[before]
  assert strided.stage_strides[last] == 2 * strided.stage_strides[before]
  # The same weights (a stride has none), so the first strided convolution's output is the
  # unstrided one at even positions, and the earlier stages are unchanged.
  jax.tree.map(np.testing.assert_array_equal, nnx.state(fine, nnx.Param),
               nnx.state(strided, nnx.Param))
  fine.eval()
  strided.eval()
  images = _images()
  a, b = _forward(fine, images), _forward(strided, images)
  np.testing.assert_array_equal(a.stages[before], b.stages[before])
  block = getattr(fine, last)[0]
  x = jnp.asarray(a.stages[before])
  np.testing.assert_allclose(block.conv1(x)[:, ::2, ::2],
                             getattr(strided, last)[0].conv1(x), rtol=1e-5, atol=1e-5)
  h, w = a.stages[before].shape[1:3]
  assert a.dense.shape[1:3] == (h, w) and b.dense.shape[1:3] == (-(-h // 2), -(-w // 2))


@pytest.mark.parametrize("last_stride", [0, 3, True])
def test_last_stride_out_of_range(last_stride):
  with pytest.raises(ValueError, match="last_stride must be 1 or 2"):
    build_encoder("resnet18", last_stride=last_stride, rngs=nnx.Rngs(0))
