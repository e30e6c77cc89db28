"""The image classifier of fine-tuning: encoder -> pooled features -> linear head.

Building it, scoring a split with it, and loading a fine-tuning run's selected classifier for later
use (prediction, heatmaps)::

    from otcxr_jax.data import datasets
    from otcxr_jax.evaluation import classifier

    config, encoder, head = classifier.load_classifier("workdirs/finetune_synthetic")
    source = datasets.split_source(config, config.data.test_split)
    scores, labels = classifier.predict(classifier.Classifier(encoder, head), source,
                                        image_size=config.data.image_size, batch_size=64)

A fine-tuning run (``modes/finetune.py``) writes ``<workdir>/config.json`` and keeps the state of
best validation mean AUC in ``<workdir>/checkpoints/finetune_best``; :func:`load_classifier`
rebuilds the model from the former and reads the latter. ``encoder(x)`` returns the
:class:`~otcxr_jax.models.EncoderOutput` (``dense`` last-stage map, ``stages``, ``pooled``) and
``head`` maps pooled features to logits. The head standardises the pooled features with fixed
statistics of the fine-tuning split (its ``feature_mean`` and ``feature_std``, computed with the
encoder fine-tuning started from, :func:`feature_statistics`) before its linear map, so its
weights act on standardised features; ``head.affine()`` gives the same head as one affine map
``(kernel (C, K), bias (K,))`` of the raw pooled features, which is what class-activation heatmaps
and export need. With a ResNet (``pooled`` is the mean of ``dense`` over its ``h x w``
positions), class ``k``'s activation map is ``CAM = dense @ kernel[:, k]`` and
``logit_k = bias[k] + mean(CAM)`` (Zhou et al., CVPR 2016), and Grad-CAM of logit ``k`` at
``dense`` is ``relu(CAM) / (h w)`` (Selvaraju et al., ICCV 2017, Sec. 3.1); a ViT pools its CLS
token instead.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath
from flax import nnx

from otcxr_jax.data import augment, datasets
from otcxr_jax.evaluation import features
from otcxr_jax.models import LinearClassifier
from otcxr_jax.models import factory
from otcxr_jax.training import checkpoint as ckpt_lib
from otcxr_jax.training import sharding
from otcxr_jax.training import workdir as workdir_lib

RUN_NAME = "finetune"  # the fine-tuning run's name: checkpoints/finetune, checkpoints/finetune_best


class Classifier(nnx.Module):
  """Multi-label classifier: ``head(encoder(images).pooled)``.

  Attributes:
    encoder: an encoder of ``models.ENCODERS`` (returns an ``EncoderOutput``).
    head: a :class:`~otcxr_jax.models.LinearClassifier` on the pooled features, which it
      standardises with its fixed feature statistics (:func:`build_classifier`).
  """

  def __init__(self, encoder: nnx.Module, head: LinearClassifier):
    self.encoder = encoder
    self.head = head

  def __call__(self, images: jax.Array) -> jax.Array:
    """Maps ``(B, H, W, C)`` float images in [0, 1] to ``(B, K)`` float32 logits."""
    return self.head(self.encoder(images).pooled)


def build_classifier(config: ml_collections.ConfigDict, num_classes: int,
                     encoder: nnx.Module | None = None) -> Classifier:
  """The classifier of ``config.model`` with ``num_classes`` outputs.

  Args:
    config: the run config (``model``, ``data.image_size``, ``train.compute_dtype``, ``seed``).
    num_classes: number of labels.
    encoder: the encoder to start from; None builds the one pretraining starts from (random
      initialisation of seed ``config.seed``).

  The head standardises its input (identity statistics until ``head.set_standardization``;
  in training mode centred on the batch's mean, which it tracks, with
  ``config.finetune.track_feature_mean``), projects it with a fixed matrix with
  ``config.finetune.whitened_head`` (identity until ``head.set_projection``); its weights start
  at N(0, 0.01²) (seed ``config.seed + 1``) and its biases at zero.
  """
  if encoder is None:
    encoder = factory.build_encoder(config, nnx.Rngs(config.seed))
  head = LinearClassifier(encoder.num_features, num_classes, standardize=True,
                          track_mean=config.finetune.track_feature_mean,
                          whiten=config.finetune.whitened_head,
                          rngs=nnx.Rngs(config.seed + 1))
  return Classifier(encoder, head)


def _pooled(graphdef, state, images: jax.Array, *, image_size: int) -> jax.Array:
  x = augment.center_view(images.astype(jnp.float32) / 255.0, image_size)
  return nnx.merge(graphdef, state, copy=True)(x).pooled.astype(jnp.float32)


def pooled_features(encoder: nnx.Module, source, *, image_size: int, batch_size: int, mesh=None
                    ) -> tuple[np.ndarray, np.ndarray]:
  """``(pooled features (N, C), labels (N, K))`` of every example of ``source``, in order.

  The encoder in evaluation mode sees the views :class:`Scorer` gives the classifier (the whole
  image resized by ``augment.center_view``), so a head trained on these features computes on
  them exactly what it computes inside :class:`Classifier`.
  """
  encoder.eval()
  mesh = mesh or sharding.make_mesh()
  graphdef, state = nnx.split(encoder)
  state = sharding.replicate(state, mesh)
  fn = jax.jit(functools.partial(_pooled, graphdef, image_size=image_size))
  return features.extract(lambda images: fn(state, images), source, batch_size=batch_size,
                          mesh=mesh)


def feature_statistics(pooled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per-feature mean and (population) standard deviation of ``(N, C)`` features, in float64
  and returned as float32: the statistics :class:`~otcxr_jax.models.LinearClassifier`
  standardises with."""
  x = np.asarray(pooled, np.float64)
  if x.ndim != 2 or not len(x):
    raise ValueError(f"pooled features must be a non-empty (N, C) array, got shape {x.shape}")
  return x.mean(0).astype(np.float32), x.std(0).astype(np.float32)


def _probabilities(graphdef, state, images: jax.Array, *, image_size: int) -> jax.Array:
  x = augment.center_view(images.astype(jnp.float32) / 255.0, image_size)
  return jax.nn.sigmoid(nnx.merge(graphdef, state, copy=True)(x))


class Scorer:
  """Scores splits with models of one structure (successive states of a run), compiled once.

  ``scorer(model, source) -> (probabilities (N, K), labels (N, K))`` for every example of
  ``source`` in order, ``model`` in evaluation mode. Images are resized to ``image_size`` with the
  training views' bilinear sampler (``augment.center_view`` of the whole image); batches are
  sharded over ``mesh`` (default: all devices) and the model's state replicated on it.
  """

  def __init__(self, *, image_size: int, batch_size: int, mesh=None):
    self._image_size, self._batch_size = image_size, batch_size
    self._mesh = mesh or sharding.make_mesh()
    self._graphdef = None
    self._fn: Callable | None = None

  def __call__(self, model: nnx.Module, source) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    graphdef, state = nnx.split(model)
    if self._fn is None:
      self._graphdef = graphdef
      self._fn = jax.jit(functools.partial(_probabilities, graphdef,
                                           image_size=self._image_size))
    elif graphdef != self._graphdef:
      raise ValueError("Scorer compiled for another model structure; make one Scorer per model.")
    state = sharding.replicate(state, self._mesh)
    return features.extract(lambda images: self._fn(state, images), source,
                            batch_size=self._batch_size, mesh=self._mesh)


def predict(model: nnx.Module, source, *, image_size: int, batch_size: int, mesh=None
            ) -> tuple[np.ndarray, np.ndarray]:
  """``(probabilities (N, K), labels (N, K))`` of every example of ``source``, in order (one
  :class:`Scorer` call)."""
  return Scorer(image_size=image_size, batch_size=batch_size, mesh=mesh)(model, source)


def best_checkpoint_dir(workdir: str | epath.PathLike) -> epath.Path:
  """``<workdir>/checkpoints/finetune_best``: the selected state of a fine-tuning run."""
  return epath.Path(workdir) / "checkpoints" / ckpt_lib.MODEL_CHECKPOINTS[RUN_NAME]


class LoadedClassifier(NamedTuple):
  """A fine-tuning run's config (locked) and its selected encoder and head, in eval mode."""
  config: ml_collections.ConfigDict
  encoder: nnx.Module
  head: LinearClassifier


def load_classifier(workdir: str | epath.PathLike) -> LoadedClassifier:
  """Loads the classifier a fine-tuning run selected on validation.

  Rebuilds the model from ``<workdir>/config.json`` and reads its variables (parameters,
  BatchNorm statistics and the head's feature statistics) from the checkpoint in
  ``<workdir>/checkpoints/finetune_best``.

  Returns:
    ``(config, encoder, head)``; ``Classifier(encoder, head)`` is the whole model.

  Raises:
    FileNotFoundError: no ``config.json`` or no selected checkpoint in ``workdir``.
    ValueError: ``workdir`` is not a fine-tuning run's, or its checkpoint does not match its
      config (the message names the first differing parameter).
  """
  config = workdir_lib.load_config(workdir)
  if config.mode != RUN_NAME:
    raise ValueError(f"{epath.Path(workdir) / 'config.json'} is a {config.mode!r} run's config; "
                     f"load_classifier needs a '{RUN_NAME}' run's workdir.")
  num_classes = len(datasets.class_names(config))
  abstract = nnx.eval_shape(lambda: build_classifier(config, num_classes))
  model, _ = ckpt_lib.restore_module(
      abstract, best_checkpoint_dir(workdir),
      source=f"the selected state of the fine-tuning run in {workdir}",
      hint="Set config.model to the values of the run that wrote it (see its config.json); a "
           "classifier without the head's feature_mean and feature_std was written before "
           "fine-tuning standardised its features: run the fine-tuning again.")
  return LoadedClassifier(config, model.encoder, model.head)
