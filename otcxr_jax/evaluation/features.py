"""Frozen-encoder features: one sharded, jitted pass over a split (multi-host safe)."""

from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from otcxr_jax import config_lib
from otcxr_jax.data import pipeline
from otcxr_jax.training import sharding
from otcxr_jax.training.distributed import print0
from otcxr_jax.training.progress import PassProgress


def encoder_fn(encoder: nnx.Module, image_size: int, select: Callable[[Any], Any], mesh=None
               ) -> Callable[[jax.Array], Any]:
  """``images uint8 (B,H,W,C) -> select(encoder output)``, the encoder in eval mode, jitted.

  Images of another size are resized (bilinear) to ``image_size``; ``select`` maps the encoder's
  output (``.dense``, ``.pooled``) to a pytree of ``(B, ...)`` float32 arrays. The encoder's state
  is replicated over ``mesh`` (default: all devices) to meet sharded batches.
  """
  encoder.eval()
  graphdef, state = nnx.split(encoder)
  state = sharding.replicate(state, mesh or sharding.make_mesh())

  @jax.jit
  def fn(state, images):
    x = images.astype(jnp.float32) / 255.0
    if x.shape[1:3] != (image_size, image_size):
      x = jax.image.resize(x, (x.shape[0], image_size, image_size, x.shape[3]), "bilinear")
    return jax.tree.map(lambda y: y.astype(jnp.float32), select(nnx.merge(graphdef, state,
                                                                          copy=True)(x)))

  return lambda images: fn(state, images)


def feature_fn(encoder: nnx.Module, image_size: int, readout: str = "pooled", mesh=None
               ) -> Callable[[jax.Array], jax.Array]:
  """``images uint8 (B,H,W,C) -> features float32 (B,F)`` (:func:`encoder_fn`).

  ``readout`` (one of ``config_lib.PROBE_READOUTS``): ``'pooled'``, the global average pool
  (``F = C``); ``'map'``, the dense map (the one the pretraining loss reads) flattened
  (``F = h * w * C``), a linear readout that keeps where things are.
  """
  if readout not in config_lib.PROBE_READOUTS:
    raise ValueError(f"readout must be one of {config_lib.PROBE_READOUTS}, got {readout!r}")
  if readout == "map":
    return encoder_fn(encoder, image_size, lambda out: out.dense.reshape(out.dense.shape[0], -1),
                      mesh)
  return encoder_fn(encoder, image_size, lambda out: out.pooled, mesh)


def pooled_feature_fn(encoder: nnx.Module, image_size: int, mesh=None
                      ) -> Callable[[jax.Array], jax.Array]:
  """``images uint8 (B,H,W,C) -> pooled float32 (B,C)``: :func:`feature_fn`'s ``'pooled'``."""
  return feature_fn(encoder, image_size, "pooled", mesh)


def map_split(fn: Callable[[dict[str, jax.Array]], Any], source, *, batch_size: int,
              keys: Sequence[str], host_keys: Sequence[str] = (), mesh=None,
              field: str = "probe.batch_size", progress: str | None = None
              ) -> tuple[Any, dict[str, np.ndarray]]:
  """Runs ``fn`` once over every example of ``source``; results in source order, on every process.

  Each global batch of ``batch_size`` examples is split over the processes (process ``p`` of
  ``n`` reads examples ``p, p + n, ...`` of the split, ``batch_size / n`` at a time,
  ``pipeline.eval_batches``) and sharded over the data axis of ``mesh`` (default: all devices).
  Every process runs the same number of batches (one short of examples pads with repeats), and
  the results are read back with ``sharding.to_host``, so with several processes every process
  gets the whole split. Padding is dropped.

  Args:
    fn: maps the global batch ``{k: (B, ...) jax.Array for k in keys}`` to a pytree of
      ``(B, ...)`` arrays, one row per example.
    source: a random-access source of records (dicts).
    batch_size: examples per global batch, divisible by the numbers of devices and processes.
    keys: numeric record fields given to ``fn``.
    host_keys: record fields returned as read, not given to ``fn`` (labels, text ids).
    mesh: the ``('data',)`` mesh (default: every device of every process).
    field: the config field ``batch_size`` comes from, for the error message.
    progress: what the pass is, the start of its progress lines (``<progress>: done/total
      images | img/s | ETA``, from process 0, every ``PASS_EVERY_S`` seconds of a long pass,
      ``training/progress.py``); None: silent.

  Returns:
    ``(outputs, fields)``: ``fn``'s pytree with ``(N, ...)`` numpy leaves, and
    ``{k: (N, ...) numpy array for k in host_keys}``, row ``i`` from example ``i``.

  Raises:
    ValueError: ``source`` is empty, or ``batch_size`` does not split over devices and processes.
  """
  mesh = mesh or sharding.make_mesh()
  sharding.check_batch_size(batch_size, mesh, field=field)
  total, n = len(source), jax.process_count()
  if not total:
    raise ValueError("source is empty: map_split needs at least one example.")
  local = batch_size // n
  most = -(-total // n)  # examples of process 0, which reads the most
  steps = -(-most // local)
  keys, host_keys = tuple(keys), tuple(host_keys)
  parts = []
  shown = PassProgress(progress, total) if progress else None
  for batch in _process_batches(source, local=local, steps=steps,
                                transform=pipeline.select_keys(keys + host_keys)):
    out = fn(sharding.to_global({k: batch[k] for k in keys}, mesh))
    parts.append((sharding.to_host(out), {k: _gather_host(batch[k]) for k in host_keys}))
    if shown and (line := shown.update(min(len(parts) * batch_size, total))):
      print0(line)

  def in_order(*chunks: np.ndarray) -> np.ndarray:
    # Row j of process p's part of global batch s holds example (s * local + j) * n + p.
    x = np.stack(chunks)
    x = x.reshape(steps, n, local, *x.shape[2:]).swapaxes(1, 2)
    return x.reshape(steps * local * n, *x.shape[3:])[:total]

  return jax.tree.map(in_order, *parts)


def _process_batches(source, *, local: int, steps: int, transform: pipeline.Transform
                     ) -> Iterator[dict[str, np.ndarray]]:
  """This process's ``steps`` batches of ``local`` examples (padding repeats a read example)."""
  last = None
  for last, _ in pipeline.eval_batches(source, batch_size=local, transform=transform,
                                       process_index=jax.process_index(),
                                       process_count=jax.process_count()):
    steps -= 1
    yield last
  if steps > 0 and last is None:  # fewer examples than processes: this one has none
    last = {k: np.stack([v] * local) for k, v in transform(source[0]).items()}
  for _ in range(steps):
    yield last


def _gather_host(x: np.ndarray) -> np.ndarray:
  """Every process's rows of a host field, concatenated in process order (``sharding.to_host``).

  Text (numpy ``S`` or ``U`` arrays, kept so) travels as UTF-8 bytes padded to the longest entry
  of any process.
  """
  if jax.process_count() == 1 or x.dtype.kind not in "SU":
    return sharding.to_host(x)
  encoded = np.char.encode(x, "utf-8") if x.dtype.kind == "U" else x
  width = int(sharding.to_host(np.asarray([encoded.itemsize], np.int32)).max())
  codes = encoded.astype(f"S{width}").view(np.uint8).reshape(len(x), width)
  text = sharding.to_host(codes).view(f"S{width}").reshape(-1)
  return np.char.decode(text, "utf-8") if x.dtype.kind == "U" else text


def extract(fn: Callable[[jax.Array], jax.Array], source, *, batch_size: int,
            label_key: str = "labels", mesh=None, image_key: str = "image",
            progress: str | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Runs ``fn`` over every example of ``source`` once; returns ``(features, labels)`` in order.

  ``batch_size`` is the global batch, sharded over the data axis of ``mesh`` (default: all
  devices); with several processes each reads its share and every process gets the whole
  result (:func:`map_split`; ``progress`` names its progress lines, None: silent).
  """
  feats, labels = extract_many({"features": fn}, source, batch_size=batch_size,
                               label_key=label_key, mesh=mesh, image_key=image_key,
                               progress=progress)
  return feats["features"], labels


def extract_many(fns: Mapping[str, Callable[[jax.Array], jax.Array]], source, *,
                 batch_size: int, label_key: str = "labels", mesh=None,
                 image_key: str = "image", progress: str | None = None
                 ) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """:func:`extract` for several feature functions in one read of ``source``: each image is
  read and decoded once, and every function gets the same batches.

  Returns ``({name: features}, labels)``, rows in source order.
  """
  fns = dict(fns)
  feats, fields = map_split(lambda batch: {k: f(batch[image_key]) for k, f in fns.items()},
                            source, batch_size=batch_size, keys=(image_key,),
                            host_keys=(label_key,), mesh=mesh, progress=progress)
  return ({k: feats[k].astype(np.float32) for k in fns},
          fields[label_key].astype(np.float32))


def pixel_fn(size: int) -> Callable[[jax.Array], jax.Array]:
  """``images uint8 (B,H,W,C) -> (B, size*size*C)``: the raw-pixel floor's features, images
  downsampled to ``size x size`` (antialiased bilinear) and flattened, jitted."""
  def fn(images):
    x = images.astype(jnp.float32) / 255.0
    x = jax.image.resize(x, (x.shape[0], size, size, x.shape[3]), "linear", antialias=True)
    return x.reshape(x.shape[0], -1)
  return jax.jit(fn)


def downsampled_pixels(source, *, size: int, batch_size: int = 256,
                       label_key: str = "labels", progress: str | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
  """The raw-pixel floor's features (:func:`pixel_fn`) of every example of ``source``."""
  return extract(pixel_fn(size), source, batch_size=batch_size, label_key=label_key,
                 progress=progress)


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
