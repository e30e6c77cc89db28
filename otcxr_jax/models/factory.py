"""Networks from a run's config: the one place an encoder or a pretraining network is built.

Pretraining, every evaluation that restores a pretraining checkpoint, the config's validation
(:func:`dense_grid`) and the exports build their networks with these (a pretraining network
through ``methods.build_model``, which picks the method's builder here), so a checkpoint of any
method is read back into the structure that wrote it. The functions read ``config.model``,
``config.data.image_size`` and ``config.train.compute_dtype``; they know nothing of training or
data.

Every pretraining network starts with the same encoder: ``methods.build_model`` builds it first,
from the same ``rngs``, whatever ``config.method`` is, so all methods start from the same encoder
weights; the builders here take it.
"""

from __future__ import annotations

import functools
import math

import jax.numpy as jnp
import ml_collections
from flax import nnx

from otcxr_jax import models
from otcxr_jax.models.common import Encoder, dense_channels
from otcxr_jax.models.cvsim import CVSIM
from otcxr_jax.models.heads import DenseProjector
from otcxr_jax.models.otcxr import OTCXRModel
from otcxr_jax.models.siamese import SiameseModel


# train.compute_dtype -> the activations' dtype (parameters stay float32).
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(config: ml_collections.ConfigDict):
  """``train.compute_dtype``: the activations' dtype (parameters stay float32)."""
  return COMPUTE_DTYPES[config.train.compute_dtype]


def stem_stride(model: ml_collections.ConfigDict) -> int:
  """The ResNet ``stem_stride`` argument of ``config.model``: ``model.stem_stride`` is the 'small'
  stem's stride; the 'imagenet' stem (7x7/2 conv + max-pool) has a fixed stride and does not read
  it, so changing ``model.stem`` alone switches a config between the two (a stride given on the
  command line for the 'imagenet' stem is refused by ``config_lib.check_overrides``)."""
  return model.stem_stride if model.stem == "small" else 1


def build_encoder(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> Encoder:
  """The encoder the config describes (shared by pretraining and every evaluation)."""
  m = config.model
  kwargs = dict(in_channels=m.in_channels, dtype=compute_dtype(config), rngs=rngs)
  if m.encoder.startswith("resnet"):
    kwargs.update(width=m.width, stem=m.stem, stem_stride=stem_stride(m),
                  num_stages=m.num_stages, last_stride=m.last_stride, norm=m.norm,
                  norm_groups=m.norm_groups)
  else:
    kwargs.update(image_size=config.data.image_size)
  return models.build_encoder(m.encoder, **kwargs)


def otcxr_model(config: ml_collections.ConfigDict, encoder: Encoder,
                rngs: nnx.Rngs) -> OTCXRModel:
  """OTCXR's network around ``encoder``: dense projector -> CV-SIM (unless ``model.cvsim`` is
  off); with ``objective.teacher_tau > 0`` also BYOL's image-level branch, its MLPs of the
  projector's sizes, and the teacher (``models/otcxr.py``)."""
  m = config.model
  dtype = compute_dtype(config)
  projector = DenseProjector(dense_channels(encoder, m.dense_stage), m.projector_hidden,
                             m.projector_dim, num_layers=m.projector_layers, dtype=dtype,
                             rngs=rngs)
  cvsim = (CVSIM(m.projector_dim, num_heads=m.cvsim_heads, mlp_ratio=m.cvsim_mlp_ratio,
                 dtype=dtype, rngs=rngs) if m.cvsim else None)
  branch = {}
  if config.objective.teacher_tau:
    mlp = functools.partial(DenseProjector, hidden_dim=m.projector_hidden,
                            out_dim=m.projector_dim, num_layers=m.projector_layers, dtype=dtype,
                            rngs=rngs)
    branch = dict(global_projector=mlp(encoder.num_features), predictor=mlp(m.projector_dim))
  return OTCXRModel(encoder, projector, cvsim, dense_stage=m.dense_stage, **branch)


def siamese_model(config: ml_collections.ConfigDict, encoder: Encoder, rngs: nnx.Rngs, *,
                  predictor: bool = False, ema_target: bool = False,
                  local_projector: bool = False) -> SiameseModel:
  """A two-view network around ``encoder``: pooled features -> projector; with ``predictor`` a
  predictor after it and with ``ema_target`` an EMA target (BYOL), with ``local_projector`` a
  position-wise projector of the dense map (VICRegL). The MLPs are built in that order from
  ``rngs``, all with the projector's sizes (``config.model.projector_*``)."""
  m = config.model
  mlp = functools.partial(DenseProjector, hidden_dim=m.projector_hidden,
                          out_dim=m.projector_dim, num_layers=m.projector_layers,
                          dtype=compute_dtype(config), rngs=rngs)
  projector = mlp(encoder.num_features)
  predictor_mlp = mlp(m.projector_dim) if predictor else None
  local = mlp(dense_channels(encoder, m.dense_stage)) if local_projector else None
  return SiameseModel(encoder, projector, predictor=predictor_mlp, ema_target=ema_target,
                      local_projector=local, dense_stage=m.dense_stage)


def dense_grid(config: ml_collections.ConfigDict) -> tuple[int, int]:
  """``(h, w)`` of the dense map ``model.dense_stage`` at ``data.image_size`` (no allocation)."""
  encoder = nnx.eval_shape(lambda: build_encoder(config, nnx.Rngs(0)))
  stage = config.model.dense_stage
  stride = (max(encoder.stage_strides.values()) if stage == "dense"
            else encoder.stage_strides[stage])
  side = math.ceil(config.data.image_size / stride)
  return side, side
