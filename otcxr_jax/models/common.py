"""Pieces shared by every encoder: the output type and input-channel handling."""

from __future__ import annotations

from typing import Protocol

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class EncoderOutput:
  """What an encoder returns for a batch of images; all arrays are float32.

  Attributes:
    dense: ``(B, H, W, C)`` last-stage dense feature map (``C = encoder.num_features``).
    pooled: ``(B, C)`` image-level vector (global average pool for CNNs, CLS token for ViTs).
    stages: name -> ``(B, h, w, c)`` intermediate maps with ``c = encoder.stage_channels[name]``
      and ``h = ceil(H_in / encoder.stage_strides[name])``; what a U-Net style decoder consumes
      (order them by stride: a dict passed through ``jax.jit`` comes back with sorted keys).
    logits: ``(B, num_classes)`` from the encoder's linear head, or ``None`` without one.
  """

  dense: jax.Array
  pooled: jax.Array
  stages: dict[str, jax.Array]
  logits: jax.Array | None = None


class Encoder(Protocol):
  """What the pretraining and transfer models need from an encoder (ResNet, ViT)."""

  num_features: int
  stage_channels: dict[str, int]
  stage_strides: dict[str, int]

  def __call__(self, images: jax.Array) -> EncoderOutput:
    ...


def dense_channels(encoder: Encoder, dense_stage: str) -> int:
  """Channels of the map a dense head reads: the encoder's output (``'dense'``) or a stage's.

  Raises:
    ValueError: if ``dense_stage`` is neither ``'dense'`` nor one of the encoder's stages.
  """
  if dense_stage == "dense":
    return encoder.num_features
  if dense_stage in encoder.stage_channels:
    return encoder.stage_channels[dense_stage]
  raise ValueError(f"dense_stage must be 'dense' or one of {list(encoder.stage_channels)}, "
                   f"got {dense_stage!r}")


def match_channels(images: jax.Array, in_channels: int) -> jax.Array:
  """Checks an NHWC image batch and adapts its channel count to ``in_channels``.

  Encoders are built for grey-scale chest X-rays (``in_channels=1``) but also accept RGB
  input and vice versa: 1 -> 3 repeats the single channel (what loading a grey image as RGB
  does), 3 -> 1 averages the three channels. Any other mismatch is an error.

  Args:
    images: ``(B, H, W, C)`` batch.
    in_channels: channel count the encoder's first layer expects.

  Returns:
    ``(B, H, W, in_channels)`` batch.

  Raises:
    ValueError: if ``images`` is not 4-D or its channels cannot be mapped to ``in_channels``.
  """
  if images.ndim != 4:
    raise ValueError(f"images must be a (B, H, W, C) batch, got shape {images.shape}")
  channels = images.shape[-1]
  if channels == in_channels:
    return images
  if channels == 1 and in_channels == 3:
    return jnp.repeat(images, 3, axis=-1)
  if channels == 3 and in_channels == 1:
    return jnp.mean(images, axis=-1, keepdims=True)
  raise ValueError(
      f"images have {channels} channels but the encoder takes in_channels={in_channels}; "
      "only equal counts, 1 -> 3 (repeat) and 3 -> 1 (mean) are supported"
  )
