"""U-Net style segmentation decoder over an encoder's multi-scale maps, and the segmentation model.

The decoder (Ronneberger et al., "U-Net", MICCAI 2015, with the pretrained-encoder layout of
segmentation_models_pytorch's ``Unet``) starts from the encoder's deepest map and, level by level,
upsamples bilinearly to the next finer resolution, concatenates the encoder map of that
resolution (the skip connection, when there is one) and applies two 3x3 convolution-BatchNorm-ReLU
layers; after the level of stride 1 a 1x1 convolution gives one logit per pixel.

*Multi-scale encoders* (ResNet): the levels are the encoder's distinct strides below the deepest
one, then stride 1 if no stage has it. Where several stages share a stride (the 'small' stem and
``stage1``), the deepest of them is the skip. ImageNet stem: bottleneck ``stage4`` (stride 32),
levels 16, 8, 4, 2 (skips ``stage3``, ``stage2``, ``stage1``, ``stem``) and 1 (no skip).

*Single-scale encoders* (a plain ViT: every stage at the patch stride ``p``): the token grids are
turned into a pyramid as in UNETR (Hatamizadeh et al., WACV 2022) with SETR-PUP's progressive
upsampling (Zheng et al., CVPR 2021) in place of transposed convolutions. The deepest returned
block is the bottleneck at stride ``p``; the levels are ``p/2, p/4, ..., 1``, and the level of
stride ``p/2^k`` takes as skip the ``k``-th block counted back from the deepest, brought to that
resolution by ``k`` steps of (2x bilinear upsampling, 3x3 convolution-BatchNorm-ReLU). With
ViT-B/16 (blocks 3, 6, 9, 12): bottleneck block 12, skips block 9 at stride 8, block 6 at 4,
block 3 at 2, no skip at 1.

Each upsampling goes to the exact size of the finer level, ``ceil(input / stride)`` as the encoder
computes it, so the logits have the input's height and width for any input size the encoder
accepts.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from otcxr_jax.models.common import Encoder
from otcxr_jax.models.initializers import Dtype, kaiming_normal_fan_out


def _is_single_scale(stage_strides: Mapping[str, int]) -> bool:
  return len(set(stage_strides.values())) == 1


def decoder_strides(stage_strides: Mapping[str, int]) -> tuple[int, ...]:
  """Strides of the decoder's levels, deepest first (one entry per ``channels`` entry).

  Args:
    stage_strides: the encoder's ``stage_strides`` (stage name -> stride, in the encoder's order,
      shallow to deep).

  Raises:
    ValueError: no stage, or a single-scale encoder whose stride is not a power of two.
  """
  if not stage_strides:
    raise ValueError("the encoder returns no stages to decode")
  strides = sorted(set(stage_strides.values()), reverse=True)
  if len(strides) == 1:
    p = strides[0]
    if p & (p - 1):
      raise ValueError(f"a single-scale encoder needs a power-of-two stride to be upsampled by "
                       f"factors of 2, got stride {p}")
    return tuple(p >> k for k in range(1, int(math.log2(p)) + 1))
  return tuple(strides[1:]) + ((1,) if strides[-1] > 1 else ())


def _deepest_per_stride(stage_strides: Mapping[str, int]) -> dict[int, str]:
  """stride -> the last (deepest) stage of that stride, in the encoder's stage order."""
  out = {}
  for name, stride in stage_strides.items():
    out[stride] = name
  return out


def _upsample(x: jax.Array, hw: tuple[int, int]) -> jax.Array:
  """Bilinear resize of ``(B, h, w, C)`` to ``(B, *hw, C)`` (half-pixel centres)."""
  if x.shape[1:3] == tuple(hw):
    return x
  return jax.image.resize(x, (x.shape[0], *hw, x.shape[3]), method="bilinear")


def _size_at(image_hw: tuple[int, int], stride: int) -> tuple[int, int]:
  return (-(-image_hw[0] // stride), -(-image_hw[1] // stride))


class ConvBNReLU(nnx.Module):
  """3x3 convolution (no bias, 'SAME' padding), BatchNorm (momentum 0.9, eps 1e-5), ReLU."""

  def __init__(self, in_ch: int, out_ch: int, *, dtype: Dtype, param_dtype: Dtype,
               rngs: nnx.Rngs):
    self.conv = nnx.Conv(in_ch, out_ch, (3, 3), padding="SAME", use_bias=False,
                         kernel_init=kaiming_normal_fan_out, dtype=dtype, param_dtype=param_dtype,
                         rngs=rngs)
    self.bn = nnx.BatchNorm(out_ch, momentum=0.9, epsilon=1e-5, dtype=dtype,
                            param_dtype=param_dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return nnx.relu(self.bn(self.conv(x)))


class DecoderBlock(nnx.Module):
  """Upsample to the level's size, concatenate the skip (if any), two :class:`ConvBNReLU`."""

  def __init__(self, in_ch: int, skip_ch: int, out_ch: int, *, dtype: Dtype,
               param_dtype: Dtype, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.conv1 = ConvBNReLU(in_ch + skip_ch, out_ch, **kw)
    self.conv2 = ConvBNReLU(out_ch, out_ch, **kw)

  def __call__(self, x: jax.Array, skip: jax.Array | None, hw: tuple[int, int]) -> jax.Array:
    x = _upsample(x, hw)
    if skip is not None:
      x = jnp.concatenate([x, skip.astype(x.dtype)], axis=-1)
    return self.conv2(self.conv1(x))


class ProgressiveUpsample(nnx.Module):
  """``steps`` times: 2x bilinear upsampling then :class:`ConvBNReLU` (SETR-PUP's stage)."""

  def __init__(self, in_ch: int, out_ch: int, steps: int, *, dtype: Dtype, param_dtype: Dtype,
               rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.convs = nnx.List([ConvBNReLU(in_ch if i == 0 else out_ch, out_ch, **kw)
                           for i in range(steps)])

  def __call__(self, x: jax.Array) -> jax.Array:
    for conv in self.convs:
      x = conv(_upsample(x, (2 * x.shape[1], 2 * x.shape[2])))
    return x


class UNetDecoder(nnx.Module):
  """Decoder from an encoder's ``stages`` to ``(B, H, W, 1)`` logits (see the module docstring).

  Attributes:
    strides: the levels' strides, deepest first (:func:`decoder_strides`).
    bottleneck_name: the stage the decoder starts from (the deepest).
    skip_names: per level, the stage concatenated there (``None``: no skip at that level).
    single_scale: whether the stages were turned into a pyramid first (plain ViT).
  """

  def __init__(self, stage_channels: Mapping[str, int], stage_strides: Mapping[str, int], *,
               channels: Sequence[int], dtype: Dtype = jnp.float32,
               param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
    """Builds the decoder for an encoder's stage layout.

    Args:
      stage_channels: the encoder's ``stage_channels``.
      stage_strides: the encoder's ``stage_strides``, in its stage order (shallow to deep).
      channels: output channels of each level, deepest first; as many as
        ``decoder_strides(stage_strides)`` has entries.
      dtype: computation dtype; logits are float32.
      param_dtype: parameter dtype.
      rngs: random generators for initialisation.
    """
    self.strides = decoder_strides(stage_strides)
    channels = tuple(int(c) for c in channels)
    if len(channels) != len(self.strides) or min(channels, default=0) < 1:
      raise ValueError(
          f"decoder_channels={channels}: expected {len(self.strides)} positive ints, one per "
          f"decoder level of strides {self.strides} for this encoder (stage strides "
          f"{dict(stage_strides)})")
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    names = list(stage_strides)
    self.single_scale = _is_single_scale(stage_strides)
    if self.single_scale:
      # names[-1] is the bottleneck; names[-1-k] feeds level k (k = 1..), while blocks remain.
      self.bottleneck_name = names[-1]
      self.skip_names = tuple(names[-1 - k] if k < len(names) else None
                              for k in range(1, len(self.strides) + 1))
      self.pyramid = nnx.List([
          ProgressiveUpsample(stage_channels[name], c, k, **kw)
          for k, (name, c) in enumerate(zip(self.skip_names, channels), start=1)
          if name is not None])
      skip_channels = [c if name is not None else 0
                       for name, c in zip(self.skip_names, channels)]
    else:
      by_stride = _deepest_per_stride(stage_strides)
      self.bottleneck_name = by_stride[max(by_stride)]
      self.skip_names = tuple(by_stride.get(s) for s in self.strides)
      self.pyramid = nnx.List([])
      skip_channels = [stage_channels[n] if n is not None else 0 for n in self.skip_names]
    in_channels = [stage_channels[self.bottleneck_name], *channels[:-1]]
    self.blocks = nnx.List([DecoderBlock(i, s, o, **kw)
                            for i, s, o in zip(in_channels, skip_channels, channels)])
    self.head = nnx.Conv(channels[-1], 1, (1, 1), **kw)  # LeCun-normal kernel, zero bias

  def _skips(self, stages: Mapping[str, jax.Array]) -> list[jax.Array | None]:
    if not self.single_scale:
      return [None if n is None else stages[n] for n in self.skip_names]
    upsampled = iter(self.pyramid)
    return [None if n is None else next(upsampled)(stages[n]) for n in self.skip_names]

  def __call__(self, stages: Mapping[str, jax.Array], image_hw: tuple[int, int]) -> jax.Array:
    """Decodes an encoder's ``stages`` for an input of size ``image_hw``.

    Returns:
      ``(B, H, W, 1)`` float32 logits, ``(H, W) = image_hw``.
    """
    missing = [n for n in (self.bottleneck_name, *self.skip_names)
               if n is not None and n not in stages]
    if missing:
      raise ValueError(f"stages lack {missing}; got {sorted(stages)}")
    x = stages[self.bottleneck_name]
    for block, skip, stride in zip(self.blocks, self._skips(stages), self.strides):
      x = block(x, skip, _size_at(image_hw, stride))
    return self.head(x).astype(jnp.float32)


class SegmentationModel(nnx.Module):
  """``encoder`` then :class:`UNetDecoder`: images ``(B, H, W, C)`` -> logits ``(B, H, W, 1)``."""

  def __init__(self, encoder: Encoder, decoder: UNetDecoder):
    self.encoder = encoder
    self.decoder = decoder

  def __call__(self, images: jax.Array) -> jax.Array:
    out = self.encoder(images)
    return self.decoder(out.stages, images.shape[1:3])


def build_segmentation_model(encoder: Encoder, channels: Sequence[int], *,
                             dtype: Dtype = jnp.float32, rngs: nnx.Rngs) -> SegmentationModel:
  """A :class:`SegmentationModel` with a decoder laid out for ``encoder``'s stages."""
  decoder = UNetDecoder(encoder.stage_channels, encoder.stage_strides, channels=channels,
                        dtype=dtype, rngs=rngs)
  return SegmentationModel(encoder, decoder)
