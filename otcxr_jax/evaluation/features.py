"""Frozen-encoder features: one sharded, jitted pass over a split."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from otcxr_jax.data import pipeline
from otcxr_jax.training import sharding


def pooled_feature_fn(encoder: nnx.Module, image_size: int, mesh=None
                      ) -> Callable[[jax.Array], jax.Array]:
  """``images uint8 (B,H,W,C) -> pooled float32 (B,C)``, the encoder in eval mode, jitted.

  The encoder's state is replicated over ``mesh`` (default: all devices) to meet sharded batches.
  """
  encoder.eval()
  graphdef, state = nnx.split(encoder)
  state = sharding.replicate(state, mesh or sharding.make_mesh())

  @jax.jit
  def fn(state, images):
    x = images.astype(jnp.float32) / 255.0
    if x.shape[1:3] != (image_size, image_size):
      x = jax.image.resize(x, (x.shape[0], image_size, image_size, x.shape[3]), "bilinear")
    model = nnx.merge(graphdef, state, copy=True)
    return model(x).pooled.astype(jnp.float32)

  return lambda images: fn(state, images)


def extract(fn: Callable[[jax.Array], jax.Array], source, *, batch_size: int,
            label_key: str = "labels", mesh=None, image_key: str = "image"
            ) -> tuple[np.ndarray, np.ndarray]:
  """Runs ``fn`` over every example of ``source`` once; returns ``(features, labels)`` in order.

  Batches are sharded over the data axis of ``mesh`` (default: all devices).
  """
  mesh = mesh or sharding.make_mesh()
  sharding.check_batch_size(batch_size, mesh, field="probe.batch_size")
  feats, labels = [], []
  transform = pipeline.select_keys([image_key, label_key])
  for batch, mask in pipeline.eval_batches(source, batch_size=batch_size, transform=transform,
                                           process_index=jax.process_index(),
                                           process_count=jax.process_count()):
    images = sharding.to_global(batch[image_key], mesh)
    out = np.asarray(jax.device_get(fn(images)))
    feats.append(out[: len(mask)][mask])
    labels.append(batch[label_key][mask])
  return np.concatenate(feats).astype(np.float32), np.concatenate(labels).astype(np.float32)


def downsampled_pixels(source, *, size: int, batch_size: int = 256,
                       label_key: str = "labels") -> tuple[np.ndarray, np.ndarray]:
  """The raw-pixel floor's features: images area-downsampled to ``size x size``, flattened."""
  def fn(images):
    x = images.astype(jnp.float32) / 255.0
    x = jax.image.resize(x, (x.shape[0], size, size, x.shape[3]), "linear", antialias=True)
    return x.reshape(x.shape[0], -1)
  return extract(jax.jit(fn), source, batch_size=batch_size, label_key=label_key)


def recalibrate_batch_stats(encoder: nnx.Module, source, *, image_size: int, batch_size: int,
                            num_batches: int = 50) -> nnx.Module:
  """Re-estimates an encoder's BatchNorm running statistics on ``source`` (weights unchanged).

  ``num_batches`` train-mode forward passes update the running means and variances by their
  exponential moving average (momentum 0.9: after 50 batches the initial values weigh 0.5%).
  Used for the "random init, data BatchNorm statistics" floor: a freshly initialised encoder in
  eval mode normalises with mean 0 and variance 1, which is not what the same encoder computes
  once its statistics come from data, as a pretrained encoder's do.
  """
  graphdef, params, stats = nnx.split(encoder, nnx.Param, ...)

  @jax.jit
  def update(stats, images):
    x = images.astype(jnp.float32) / 255.0
    if x.shape[1:3] != (image_size, image_size):
      x = jax.image.resize(x, (x.shape[0], image_size, image_size, x.shape[3]), "bilinear")
    model = nnx.merge(graphdef, params, stats, copy=True)
    model.train()
    model(x)
    return nnx.split(model, nnx.Param, ...)[2]

  transform = pipeline.select_keys(["image"])
  for i, (batch, mask) in enumerate(pipeline.eval_batches(source, batch_size=batch_size,
                                                          transform=transform)):
    if i == num_batches:
      break
    if mask.all():
      stats = update(stats, batch["image"])
  model = nnx.merge(graphdef, params, stats)
  model.eval()
  return model
