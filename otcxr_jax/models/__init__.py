"""Encoders that return dense feature maps, CV-SIM, and heads."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
from flax import nnx

from otcxr_jax.models.common import Encoder, EncoderOutput, match_channels
from otcxr_jax.models.cvsim import CVSIM
from otcxr_jax.models.decoder import (SegmentationModel, UNetDecoder,
                                     build_segmentation_model, decoder_strides)
from otcxr_jax.models.heads import DenseProjector, LinearClassifier
from otcxr_jax.models.otcxr import OTCXRModel, OTCXROutput
from otcxr_jax.models.resnet import ResNet
from otcxr_jax.models.vit import ViT, vit_b16, vit_s16

ENCODERS: dict[str, Callable[..., Encoder]] = {
    "resnet18": functools.partial(ResNet, 18),
    "resnet34": functools.partial(ResNet, 34),
    "resnet50": functools.partial(ResNet, 50),
    "resnet101": functools.partial(ResNet, 101),
    "vit_s16": vit_s16,
    "vit_b16": vit_b16,
}


def build_encoder(name: str, **kwargs) -> Encoder:
  """Builds the encoder ``name`` (a key of ``ENCODERS``); ``kwargs`` go to its constructor.

  Example: ``build_encoder('resnet50', stem='small', rngs=nnx.Rngs(0))``.
  """
  if name not in ENCODERS:
    raise ValueError(f"unknown encoder {name!r}; expected one of {sorted(ENCODERS)}")
  return ENCODERS[name](**kwargs)


def count_params(module: nnx.Module) -> int:
  """Number of trainable scalars (``nnx.Param`` leaves; BatchNorm statistics excluded).

  Works on abstract modules from ``nnx.eval_shape`` as well.
  """
  return sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


__all__ = [
    "CVSIM",
    "DenseProjector",
    "ENCODERS",
    "Encoder",
    "EncoderOutput",
    "LinearClassifier",
    "OTCXRModel",
    "OTCXROutput",
    "ResNet",
    "SegmentationModel",
    "UNetDecoder",
    "ViT",
    "build_encoder",
    "build_segmentation_model",
    "count_params",
    "decoder_strides",
    "match_channels",
    "vit_b16",
    "vit_s16",
]
