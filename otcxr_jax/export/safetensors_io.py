"""Encoder weights in a safetensors file with PyTorch names, and back into JAX.

The file holds :func:`state_dict.to_state_dict`'s arrays (torchvision / timm names and layouts),
so in PyTorch, for a run of torchvision's architecture (ImageNet stem, width 1, BatchNorm;
README.md, "Export", has the snippet that ``tests/test_export_pytorch.py`` runs)::

    state = load_file("encoder.safetensors")  # safetensors.torch
    model = torchvision.models.resnet50()
    model.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)  # one input channel
    # a classifier export holds fc: sized from the file; an encoder export has none
    model.fc = (torch.nn.Linear(state["fc.weight"].shape[1], state["fc.weight"].shape[0])
                if "fc.weight" in state else torch.nn.Identity())
    model.load_state_dict(state)  # strict

and its header metadata (strings) says how to rebuild the same model in JAX:

* ``format``: ``'otcxr_jax.encoder/1'``;
* ``architecture``: ``'torchvision.resnet'`` or ``'timm.vision_transformer'``;
* ``model``: JSON of the run's ``config.model`` fields plus ``image_size`` and ``compute_dtype``
  (what ``models.factory.build_encoder`` reads);
* ``class_names``: JSON list, when a classifier head is included.

Files are read and written through ``etils.epath``, so ``gs://`` paths work.
"""

from __future__ import annotations

import json
import struct
from typing import Any, Mapping, NamedTuple, Sequence

import ml_collections
import numpy as np
from etils import epath
from flax import nnx
from safetensors import numpy as st_numpy

from otcxr_jax import config_lib
from otcxr_jax.export import state_dict as sd
from otcxr_jax.models import LinearClassifier, ResNet, factory

FORMAT = "otcxr_jax.encoder/1"
_ARCHITECTURES = {"resnet": "torchvision.resnet", "vit": "timm.vision_transformer"}


class Loaded(NamedTuple):
  """An encoder (evaluation mode), its classifier head or None, and the file's metadata."""
  encoder: nnx.Module
  head: LinearClassifier | None
  metadata: dict[str, str]


def model_metadata(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The fields that rebuild a run's encoder: ``config.model``, image size and compute dtype."""
  return {**config.model.to_dict(), "image_size": config.data.image_size,
          "compute_dtype": config.train.compute_dtype}


def save(path: str | epath.PathLike, encoder: nnx.Module, head: LinearClassifier | None = None,
         *, model: Mapping[str, Any], class_names: Sequence[str] | None = None) -> epath.Path:
  """Writes ``encoder`` (and ``head``) to ``path`` as a safetensors file; returns the path.

  Args:
    path: the file to write (local or ``gs://...``); parent folders are created.
    encoder: a ResNet or ViT of ``otcxr_jax.models``.
    head: optional classifier on the pooled features (``fc`` / ``head`` in the file).
    model: :func:`model_metadata` of the run's config (stored to rebuild the encoder).
    class_names: the head's label order (stored when given).

  Raises:
    ValueError: ``class_names`` is given without a head or does not match its outputs.
  """
  tensors = sd.to_state_dict(encoder, head)
  if class_names is not None:
    if head is None or len(class_names) != head.linear.kernel.shape[1]:
      raise ValueError(f"class_names ({len(class_names)}) must name the outputs of the head "
                       f"({'no head' if head is None else head.linear.kernel.shape[1]})")
  family = "resnet" if isinstance(encoder, ResNet) else "vit"
  metadata = {"format": FORMAT, "architecture": _ARCHITECTURES[family],
              "model": json.dumps(dict(model), sort_keys=True)}
  if class_names is not None:
    metadata["class_names"] = json.dumps(list(class_names))
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(st_numpy.save(tensors, metadata=metadata))
  return path


def read(path: str | epath.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
  """``(tensors, metadata)`` of a safetensors file (local or ``gs://...``)."""
  data = epath.Path(path).read_bytes()
  (header_size,) = struct.unpack("<Q", data[:8])  # the format: u64 size, then a JSON header
  header = json.loads(data[8:8 + header_size])
  return st_numpy.load(data), dict(header.get("__metadata__") or {})


def build_encoder(model: Mapping[str, Any]) -> nnx.Module:
  """An abstract (``nnx.eval_shape``) encoder of the stored ``model`` metadata."""
  config = config_lib.base_config()
  fields = dict(model)
  config.data.image_size = fields.pop("image_size")
  config.train.compute_dtype = fields.pop("compute_dtype")
  config.model.update({k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
  return nnx.eval_shape(lambda: factory.build_encoder(config, nnx.Rngs(0)))


def load(path: str | epath.PathLike, encoder: nnx.Module | None = None,
         head: LinearClassifier | None = None) -> Loaded:
  """Reads a file of :func:`save` (or any state dict of the same names) into JAX modules.

  Args:
    path: the safetensors file.
    encoder: the module to fill (concrete or ``nnx.eval_shape``); None rebuilds it from the
      file's ``model`` metadata.
    head: the classifier to fill; None builds one when the file holds a head (``fc.weight`` /
      ``head.weight``) and the encoder has no head of its own.

  Raises:
    ValueError: the file lacks the metadata needed to rebuild the encoder, or its arrays do not
      match the model (missing/unexpected keys or shapes, named).
  """
  tensors, metadata = read(path)
  if encoder is None:
    if metadata.get("format") != FORMAT:
      raise ValueError(f"{path} has no '{FORMAT}' metadata (format={metadata.get('format')!r});"
                       " pass the encoder to fill")
    encoder = build_encoder(json.loads(metadata["model"]))
  head_name = "fc" if isinstance(encoder, ResNet) else "head"
  if (head is None and f"{head_name}.weight" in tensors
      and getattr(encoder, "head", None) is None):
    num_classes, features = tensors[f"{head_name}.weight"].shape
    head = nnx.eval_shape(lambda: LinearClassifier(features, num_classes, rngs=nnx.Rngs(0)))
  sd.load_state_dict(tensors, encoder, head)
  encoder.eval()
  return Loaded(encoder, head, metadata)
