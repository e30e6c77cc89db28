"""Export a run's model from its workdir: the encoder of a pretraining run, or the classifier
(encoder + linear head) a fine-tuning run selected on validation.

The run's ``config.json`` says what it is and rebuilds the model; the variables come from its
checkpoints (``checkpoints/pretrain`` for ``pretrain``/``demo`` runs, only the encoder read;
``checkpoints/finetune_best`` for ``finetune`` runs). Workdirs may be local or ``gs://...``.
"""

from __future__ import annotations

from typing import NamedTuple

import ml_collections
from etils import epath
from flax import nnx

from otcxr_jax.data import datasets
from otcxr_jax.evaluation import classifier
from otcxr_jax.export import onnx_resnet, safetensors_io
from otcxr_jax.models import LinearClassifier
from otcxr_jax.training import checkpoint as ckpt_lib
from otcxr_jax.training import workdir as workdir_lib

FORMATS = ("safetensors", "onnx")
PRETRAINING_MODES = ckpt_lib.PRETRAINING_MODES


class RunModel(NamedTuple):
  """A run's config, its encoder (evaluation mode) and its classifier head and labels (or None)."""
  config: ml_collections.ConfigDict
  encoder: nnx.Module
  head: LinearClassifier | None
  class_names: tuple[str, ...] | None


def load_run(workdir: str | epath.PathLike) -> RunModel:
  """The model of the run in ``workdir`` (see the module docstring).

  Raises:
    FileNotFoundError: no ``config.json`` or no checkpoint in ``workdir``.
    ValueError: the run is of a mode without an exportable model, or its checkpoint does not
      match its config.
  """
  config = workdir_lib.load_config(workdir)
  if config.mode == classifier.RUN_NAME:
    loaded = classifier.load_classifier(workdir)
    return RunModel(config, loaded.encoder, loaded.head, datasets.class_names(config))
  if config.mode in PRETRAINING_MODES:
    restored = ckpt_lib.restore_network(workdir, config, source=f"the pretraining run {workdir}")
    return RunModel(config, restored.module, None, None)
  raise ValueError(f"{workdir} holds a {config.mode!r} run; export reads the workdir of a "
                   f"pretraining ({', '.join(PRETRAINING_MODES)}) or a fine-tuning "
                   f"('{classifier.RUN_NAME}') run.")


def export(workdir: str | epath.PathLike, fmt: str, out: str | epath.PathLike) -> epath.Path:
  """Writes the run's model to ``out`` as ``fmt`` (one of :data:`FORMATS`); returns the path.

  ``'safetensors'``: the encoder (and head) under torchvision/timm names
  (:mod:`~otcxr_jax.export.safetensors_io`); ``'onnx'``: the ResNet inference graph images ->
  features (-> logits -> probabilities) (:mod:`~otcxr_jax.export.onnx_resnet`).

  Raises:
    ValueError: an unknown ``fmt``, or ``'onnx'`` for a ViT encoder; see also :func:`load_run`.
  """
  if fmt not in FORMATS:
    raise ValueError(f"format {fmt!r}: expected one of {FORMATS}")
  run = load_run(workdir)
  if fmt == "safetensors":
    return safetensors_io.save(out, run.encoder, run.head,
                               model=safetensors_io.model_metadata(run.config),
                               class_names=run.class_names)
  model = onnx_resnet.resnet_to_onnx(run.encoder, run.head, class_names=run.class_names)
  out = epath.Path(out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_bytes(model.SerializeToString())
  return out
