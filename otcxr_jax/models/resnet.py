"""ResNet encoders (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016).

The architecture is torchvision's ``resnet18/34/50/101`` layer for layer (ResNet v1.5: the
Bottleneck block strides on its 3x3 convolution): convolutions without bias, each followed by
BatchNorm (torch momentum 0.1, i.e. running = 0.9 running + 0.1 batch; eps 1e-5), Kaiming-normal
fan-out initialisation of convolutions, 1x1 convolution + BatchNorm shortcuts where the shape
changes. With ``in_channels=3, num_classes=1000`` the trainable parameters number 11,689,512
(ResNet-18) and 25,557,032 (ResNet-50), as in torchvision. One difference: Flax tracks the biased
batch variance in the running statistics, torch the unbiased one (a factor n/(n-1), n = B*H*W).

BatchNorm follows the NNX convention: ``model.train()`` normalises with batch statistics and
updates the running averages, ``model.eval()`` uses the running averages. Under ``jax.jit`` with
a batch-sharded input the batch statistics are those of the global batch. ``norm='group'``
replaces every BatchNorm by GroupNorm (Wu & He 2018; as in BiT, Kolesnikov et al. 2020): same
parameters, no batch statistics, so a network behaves identically in training and evaluation
(including at random initialisation) and does not depend on the per-device batch size.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from otcxr_jax.models.common import EncoderOutput, match_channels
from otcxr_jax.models.initializers import Dtype, kaiming_normal_fan_out, torch_default_uniform

STAGE_NAMES = ("stage1", "stage2", "stage3", "stage4")


def _conv(
    in_ch: int, out_ch: int, kernel: int, stride: int, *, dtype: Dtype, param_dtype: Dtype,
    rngs: nnx.Rngs
) -> nnx.Conv:
  """Bias-free convolution padded by ``kernel // 2`` on each side, as torch's ResNet."""
  pad = kernel // 2
  return nnx.Conv(
      in_ch, out_ch, (kernel, kernel), strides=stride, padding=((pad, pad), (pad, pad)),
      use_bias=False, kernel_init=kaiming_normal_fan_out, dtype=dtype, param_dtype=param_dtype,
      rngs=rngs
  )


NORMS = ("batch", "group")
# The stems: "imagenet" (7x7/2 conv + 3x3/2 max-pool) or "small" (3x3 conv, no pool).
STEMS = ("imagenet", "small")


@dataclasses.dataclass(frozen=True)
class Norm:
  """Normalisation after each convolution.

  ``'batch'``: BatchNorm with torch's defaults (momentum 0.1 in torch's convention, eps 1e-5).
  ``'group'``: GroupNorm (Wu & He, ECCV 2018) with ``gcd(groups, channels)`` groups, eps 1e-5. It
  has no batch statistics, so training and evaluation compute the same function of each image
  (no running averages to estimate, no dependence on the per-device batch). Both have a scale and
  a bias per channel, so the parameter count does not depend on the choice.
  """
  kind: str = "batch"
  groups: int = 32

  def __post_init__(self):
    if self.kind not in NORMS:
      raise ValueError(f"norm must be one of {NORMS}, got {self.kind!r}")
    if self.groups < 1:
      raise ValueError(f"norm_groups must be >= 1, got {self.groups}")


def _norm(
    channels: int, *, norm: Norm, zero_scale: bool = False, dtype: Dtype, param_dtype: Dtype,
    rngs: nnx.Rngs
) -> nnx.BatchNorm | nnx.GroupNorm:
  """The :class:`Norm` layer for ``channels``; ``zero_scale`` starts its scale at zero."""
  scale_init = nnx.initializers.zeros_init() if zero_scale else nnx.initializers.ones_init()
  if norm.kind == "group":
    return nnx.GroupNorm(channels, num_groups=math.gcd(norm.groups, channels), epsilon=1e-5,
                         dtype=dtype, param_dtype=param_dtype, scale_init=scale_init, rngs=rngs)
  return nnx.BatchNorm(channels, momentum=0.9, epsilon=1e-5, dtype=dtype,
                       param_dtype=param_dtype, scale_init=scale_init, rngs=rngs)


class Shortcut(nnx.Module):
  """Projection shortcut: 1x1 convolution with the block's stride, then BatchNorm."""

  def __init__(
      self, in_ch: int, out_ch: int, stride: int, *, norm: Norm, dtype: Dtype,
      param_dtype: Dtype, rngs: nnx.Rngs
  ):
    self.conv = _conv(in_ch, out_ch, 1, stride, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.bn = _norm(out_ch, norm=norm, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.bn(self.conv(x))


class BasicBlock(nnx.Module):
  """Two 3x3 convolutions with a residual connection (ResNet-18/34)."""

  expansion = 1

  def __init__(
      self, in_ch: int, planes: int, stride: int, *, zero_init_residual: bool, norm: Norm,
      dtype: Dtype, param_dtype: Dtype, rngs: nnx.Rngs
  ):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    out_ch = planes * self.expansion
    self.conv1 = _conv(in_ch, planes, 3, stride, **kw)
    self.bn1 = _norm(planes, norm=norm, **kw)
    self.conv2 = _conv(planes, out_ch, 3, 1, **kw)
    self.bn2 = _norm(out_ch, zero_scale=zero_init_residual, norm=norm, **kw)
    needs_projection = stride != 1 or in_ch != out_ch
    self.shortcut = Shortcut(in_ch, out_ch, stride, norm=norm, **kw) if needs_projection else None

  def __call__(self, x: jax.Array) -> jax.Array:
    y = nnx.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    identity = x if self.shortcut is None else self.shortcut(x)
    return nnx.relu(y + identity)


class Bottleneck(nnx.Module):
  """1x1 reduce, 3x3 (strided, v1.5), 1x1 expand by 4, residual connection (ResNet-50/101)."""

  expansion = 4

  def __init__(
      self, in_ch: int, planes: int, stride: int, *, zero_init_residual: bool, norm: Norm,
      dtype: Dtype, param_dtype: Dtype, rngs: nnx.Rngs
  ):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    out_ch = planes * self.expansion
    self.conv1 = _conv(in_ch, planes, 1, 1, **kw)
    self.bn1 = _norm(planes, norm=norm, **kw)
    self.conv2 = _conv(planes, planes, 3, stride, **kw)
    self.bn2 = _norm(planes, norm=norm, **kw)
    self.conv3 = _conv(planes, out_ch, 1, 1, **kw)
    self.bn3 = _norm(out_ch, zero_scale=zero_init_residual, norm=norm, **kw)
    needs_projection = stride != 1 or in_ch != out_ch
    self.shortcut = Shortcut(in_ch, out_ch, stride, norm=norm, **kw) if needs_projection else None

  def __call__(self, x: jax.Array) -> jax.Array:
    y = nnx.relu(self.bn1(self.conv1(x)))
    y = nnx.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    identity = x if self.shortcut is None else self.shortcut(x)
    return nnx.relu(y + identity)


Block = type[BasicBlock] | type[Bottleneck]

# depth -> (block type, blocks per stage), torchvision's table.
ARCHITECTURES: dict[int, tuple[Block, tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
}


def scale_channels(channels: int, width: float) -> int:
  """Channel count under a width multiplier: ``max(8, round(channels * width))``."""
  return max(8, int(round(channels * width)))


class Stem(nnx.Module):
  """Convolution, normalisation, ReLU: 7x7 stride 2 ('imagenet') or 3x3 of any stride ('small')."""

  def __init__(
      self, in_ch: int, out_ch: int, kernel: int, stride: int, *, norm: Norm, dtype: Dtype,
      param_dtype: Dtype, rngs: nnx.Rngs
  ):
    self.conv = _conv(in_ch, out_ch, kernel, stride, dtype=dtype, param_dtype=param_dtype,
                      rngs=rngs)
    self.bn = _norm(out_ch, norm=norm, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return nnx.relu(self.bn(self.conv(x)))


class ResNet(nnx.Module):
  """torchvision ResNet returning dense maps of every stage.

  Stages and their strides (input size / map size, rounded up) for the 'imagenet' stem:
  ``stem`` 2 (after conv-BN-ReLU, before max-pool), ``stage1`` 4, ``stage2`` 8, ``stage3`` 16,
  ``stage4`` 32. The 'small' stem (for small images) is one 3x3 convolution of stride
  ``stem_stride`` and no max-pool, so the strides are s, s, 2s, 4s, 8s.

  Attributes:
    num_features: channels of ``dense`` and ``pooled`` (512*width*expansion).
    stage_channels: stage name -> channels.
    stage_strides: stage name -> stride relative to the input.
  """

  def __init__(
      self,
      depth: int,
      *,
      width: float = 1.0,
      in_channels: int = 1,
      num_classes: int | None = None,
      stem: Literal["imagenet", "small"] = "imagenet",
      stem_stride: int = 1,
      num_stages: int = 4,
      last_stride: int = 2,
      zero_init_residual: bool = False,
      norm: str = "batch",
      norm_groups: int = 32,
      dtype: Dtype = jnp.float32,
      param_dtype: Dtype = jnp.float32,
      rngs: nnx.Rngs,
  ):
    """Builds the network.

    Args:
      depth: 18, 34 (BasicBlock) or 50, 101 (Bottleneck).
      width: multiplier of every channel count (rounded, at least 8).
      in_channels: channels of the first convolution; inputs with 1 or 3 channels are adapted
        (see ``match_channels``).
      num_classes: size of the linear head on the pooled features; ``None`` for no head.
      stem: 'imagenet' (7x7/2 convolution + 3x3/2 max-pool) or 'small' (3x3 convolution).
      stem_stride: stride of the 'small' stem's convolution.
      num_stages: how many of the four stages to build (1-4). Fewer stages end the network at a
        finer map: ``dense`` and ``pooled`` are then those of the last built stage (e.g. 3: a
        4x4 map at 64x64 with the 'imagenet' stem, every layer under the loss of a dense
        objective, where a full network's unused ``stage4`` would stay at its initialisation).
      last_stride: stride of the last built stage (2, torchvision's; or 1: the "last stride"
        of re-identification networks, Luo et al. 2019), whose map is then as fine as the
        stage before it (a 4x4 map at 64x64 with the 'imagenet' stem and four stages). Not
        applied to ``stage1``, which never strides.
      zero_init_residual: start each block's last normalisation scale at zero (Goyal et al. 2017).
      norm: 'batch' (BatchNorm, torchvision's) or 'group' (GroupNorm; see :class:`Norm`).
      norm_groups: GroupNorm's groups (``gcd(norm_groups, channels)`` in each layer).
      dtype: computation dtype (e.g. ``jnp.bfloat16``); outputs are float32.
      param_dtype: parameter dtype.
      rngs: random generators for initialisation.
    """
    if depth not in ARCHITECTURES:
      raise ValueError(f"depth must be one of {sorted(ARCHITECTURES)}, got {depth}")
    if not width > 0:
      raise ValueError(f"width must be positive, got {width}")
    if in_channels < 1:
      raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    if num_classes is not None and num_classes < 1:
      raise ValueError(f"num_classes must be >= 1 or None, got {num_classes}")
    if stem not in STEMS:
      raise ValueError(f"stem must be 'imagenet' or 'small', got {stem!r}")
    if stem_stride < 1:
      raise ValueError(f"stem_stride must be >= 1, got {stem_stride}")
    if isinstance(num_stages, bool) or num_stages not in (1, 2, 3, 4):
      raise ValueError(f"num_stages must be 1, 2, 3 or 4, got {num_stages!r}")
    if isinstance(last_stride, bool) or last_stride not in (1, 2):
      raise ValueError(f"last_stride must be 1 or 2, got {last_stride!r}")
    if stem == "imagenet" and stem_stride != 1:
      raise ValueError("stem_stride applies to stem='small' only; the imagenet stem is fixed")
    block, counts = ARCHITECTURES[depth]
    kw = dict(norm=Norm(norm, norm_groups), dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    self.depth = depth
    self.in_channels = in_channels
    self.stem_type = stem
    stem_ch = scale_channels(64, width)
    if stem == "imagenet":
      self.stem = Stem(in_channels, stem_ch, 7, 2, **kw)
      stride = 4  # after the max-pool
    else:
      self.stem = Stem(in_channels, stem_ch, 3, stem_stride, **kw)
      stride = stem_stride
    channels = {"stem": stem_ch}
    strides = {"stem": 2 if stem == "imagenet" else stem_stride}

    in_ch = stem_ch
    self.stage_names = STAGE_NAMES[:num_stages]
    for i, (name, n_blocks) in enumerate(zip(self.stage_names, counts)):
      planes = scale_channels(64 * 2**i, width)
      first_stride = 1 if i == 0 else last_stride if i == num_stages - 1 else 2
      stride *= first_stride
      blocks = []
      for j in range(n_blocks):
        blocks.append(block(in_ch, planes, first_stride if j == 0 else 1,
                            zero_init_residual=zero_init_residual, **kw))
        in_ch = planes * block.expansion
      setattr(self, name, nnx.List(blocks))
      channels[name] = in_ch
      strides[name] = stride

    self.num_features = in_ch
    self.stage_channels = channels
    self.stage_strides = strides
    self.head = (
        nnx.Linear(in_ch, num_classes, kernel_init=torch_default_uniform(in_ch),
                   bias_init=torch_default_uniform(in_ch), dtype=dtype, param_dtype=param_dtype,
                   rngs=rngs)
        if num_classes is not None else None
    )

  def __call__(self, images: jax.Array) -> EncoderOutput:
    """Encodes ``(B, H, W, C)`` images; see the class docstring for the returned maps."""
    x = match_channels(images, self.in_channels)
    x = self.stem(x)
    stages = {"stem": x}
    if self.stem_type == "imagenet":
      x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for name in self.stage_names:
      for block in getattr(self, name):
        x = block(x)
      stages[name] = x
    pooled = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    logits = None if self.head is None else self.head(pooled).astype(jnp.float32)
    return EncoderOutput(
        dense=x.astype(jnp.float32),
        pooled=pooled,
        stages={k: v.astype(jnp.float32) for k, v in stages.items()},
        logits=logits,
    )
