"""Encoder variables as PyTorch ``state_dict`` s: torchvision's ResNet names, timm's ViT names.

Names and layouts are those of ``torchvision.models.resnet{18,34,50,101}().state_dict()`` and of
timm's ``VisionTransformer.state_dict()``, so PyTorch code can ``load_state_dict`` them (after
``torch.from_numpy``):

* convolution kernels ``(kh, kw, in, out)`` (Flax, HWIO) become ``weight`` ``(out, in, kh, kw)``
  (OIHW); linear kernels ``(in, out)`` become ``weight`` ``(out, in)``;
* BatchNorm ``scale, bias, mean, var`` become ``weight, bias, running_mean, running_var``, plus
  torch's ``num_batches_tracked`` (int64 0: torch reads it only when ``momentum=None``, and
  torchvision's BatchNorm has ``momentum=0.1``); LayerNorm ``scale`` becomes ``weight``;
* ResNet modules: ``stem.conv/bn`` -> ``conv1/bn1``, ``stage<i>.<j>`` -> ``layer<i>.<j>``, the
  projection ``shortcut.conv/bn`` -> ``downsample.0/1``, the linear head -> ``fc``;
* ViT modules: ``patch_embed`` -> ``patch_embed.proj``; ``cls_token``, ``pos_embed``,
  ``blocks.<i>.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``, ``norm`` and ``head`` keep
  their names (the fused qkv projection has timm's layout: outputs ordered q, k, v, then heads).

The running variance is exported as Flax tracks it, the biased batch variance (torch tracks the
unbiased one; a factor n/(n-1), n = batch x positions): the exported network computes exactly
what the JAX model computes in evaluation mode.

A classifier head (``models.LinearClassifier`` on the pooled features) is written under the name
of the architecture's own head (``fc`` / ``head``) as one affine map of the raw pooled features
(``LinearClassifier.affine``): a head that standardises its features (fine-tuning's) has its fixed
feature statistics folded into that weight and bias, so the exported network computes the same
logits with a plain linear layer. Read back into such a head, the file's map sets its weight and
bias and identity statistics (mean 0, standard deviation 1).
"""

from __future__ import annotations

from typing import Callable, Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from otcxr_jax.models import LinearClassifier, ResNet, ViT

Path = tuple[str | int, ...]
_BN_LEAVES = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}
_NORM_LEAVES = {"scale": "weight", "bias": "bias"}


def _weight(x: np.ndarray) -> np.ndarray:
  """Flax kernel -> torch weight: HWIO -> OIHW (convolutions), (in, out) -> (out, in) (linear)."""
  return np.transpose(x, (3, 2, 0, 1)) if x.ndim == 4 else np.transpose(x)


def _kernel(w: np.ndarray) -> np.ndarray:
  """torch weight -> Flax kernel (the inverse of :func:`_weight`)."""
  return np.transpose(w, (2, 3, 1, 0)) if w.ndim == 4 else np.transpose(w)


def _leaf(module_name: str, leaf: str, leaves: Mapping[str, str]) -> tuple[str, bool]:
  """(torch name, transposed?) of a parameter leaf of the module ``module_name``."""
  if leaf == "kernel":
    return f"{module_name}.weight", True
  if leaf not in leaves:
    raise KeyError(leaf)
  return f"{module_name}.{leaves[leaf]}", False


def _resnet_name(path: Path) -> tuple[str, bool]:
  head, *rest = path
  if head == "stem":
    module, leaf = rest
    return _leaf({"conv": "conv1", "bn": "bn1"}[module], leaf, _BN_LEAVES)
  if head == "head":
    return _leaf("fc", rest[0], _NORM_LEAVES)
  if isinstance(head, str) and head.startswith("stage"):
    block, *module, leaf = rest
    if module[0] == "shortcut":
      module = ["downsample", {"conv": "0", "bn": "1"}[module[1]]]
    name = ".".join([f"layer{head[len('stage'):]}", str(block), *module])
    return _leaf(name, leaf, _BN_LEAVES)
  raise KeyError(head)


def _vit_name(path: Path) -> tuple[str, bool]:
  head, *rest = path
  if head in ("cls_token", "pos_embed") and not rest:
    return head, False
  if head == "patch_embed":
    return _leaf("patch_embed.proj", rest[0], _NORM_LEAVES)
  *module, leaf = path
  return _leaf(".".join(map(str, module)), leaf, _NORM_LEAVES)


def _namer(encoder: nnx.Module) -> tuple[Callable[[Path], tuple[str, bool]], str]:
  """The path -> torch-name function of ``encoder``'s architecture, and its head's name."""
  if isinstance(encoder, ResNet):
    return _resnet_name, "fc"
  if isinstance(encoder, ViT):
    return _vit_name, "head"
  raise ValueError(f"encoder must be a models.ResNet or models.ViT, got {type(encoder).__name__}")


def _entries(encoder: nnx.Module, head: LinearClassifier | None
             ) -> dict[str, tuple[nnx.Variable, bool]]:
  """``{torch name: (variable, transposed?)}`` of the encoder's and the head's variables."""
  namer, head_name = _namer(encoder)
  if head is not None and getattr(encoder, "head", None) is not None:
    raise ValueError("the encoder has its own linear head; pass head=None or an encoder built "
                     "with num_classes=None")
  entries = {}
  for path, var in nnx.to_flat_state(nnx.state(encoder)):
    try:
      name, transposed = namer(tuple(path))
    except (KeyError, ValueError, IndexError):
      raise ValueError(f"no PyTorch name for encoder variable {'/'.join(map(str, path))}"
                       ) from None
    entries[name] = (var, transposed)
  if head is not None:
    entries[f"{head_name}.weight"] = (head.linear.kernel, True)
    entries[f"{head_name}.bias"] = (head.linear.bias, False)
  return entries


def _tracked(name: str) -> str | None:
  """``'<bn>.num_batches_tracked'`` for a BatchNorm's running mean, else None."""
  return name[:-len("running_mean")] + "num_batches_tracked" if name.endswith(
      ".running_mean") else None


def to_state_dict(encoder: nnx.Module, head: LinearClassifier | None = None
                  ) -> dict[str, np.ndarray]:
  """The encoder's (and head's) variables under PyTorch names and layouts (numpy, contiguous).

  Args:
    encoder: a :class:`~otcxr_jax.models.ResNet` or :class:`~otcxr_jax.models.ViT`.
    head: an optional classifier on the pooled features, exported as ``fc`` (ResNet) or
      ``head`` (ViT).

  Raises:
    ValueError: ``encoder`` is of another type, or has a head of its own while ``head`` is given.
  """
  out = {}
  folded = {}
  if head is not None:  # the head on the raw pooled features (its standardisation folded in)
    _, head_name = _namer(encoder)
    kernel, bias = head.affine()
    folded = {f"{head_name}.weight": kernel, f"{head_name}.bias": bias}
  for name, (var, transposed) in _entries(encoder, head).items():
    value = np.asarray(folded[name] if name in folded else var.get_value())
    out[name] = np.ascontiguousarray(_weight(value) if transposed else value)
    if (tracked := _tracked(name)) is not None:
      out[tracked] = np.zeros((), np.int64)
  return out


def load_state_dict(state_dict: Mapping[str, np.ndarray], encoder: nnx.Module,
                    head: LinearClassifier | None = None) -> None:
  """Sets ``encoder`` (and ``head``) from a state dict of :func:`to_state_dict`'s names, in place.

  The key sets must match exactly (``num_batches_tracked`` entries are optional and ignored),
  and every array must have the shape the module expects.

  Raises:
    ValueError: naming the missing or unexpected keys, or the first array of another shape.
  """
  entries = _entries(encoder, head)
  given = {k for k in state_dict if not k.endswith(".num_batches_tracked")}
  missing, unexpected = sorted(entries.keys() - given), sorted(given - entries.keys())
  if missing or unexpected:
    raise ValueError(f"state dict does not match the model: missing keys {missing[:8]}"
                     f"{'...' if len(missing) > 8 else ''}, unexpected keys {unexpected[:8]}"
                     f"{'...' if len(unexpected) > 8 else ''}")
  for name, (var, transposed) in entries.items():
    given = np.asarray(state_dict[name])
    current = var.get_value()  # an array, or a jax.ShapeDtypeStruct of an abstract module
    expected = _weight(np.empty(current.shape, np.bool_)).shape if transposed else current.shape
    if given.shape != tuple(expected):
      raise ValueError(f"state dict entry {name!r} has shape {given.shape}; the model expects "
                       f"{tuple(expected)}")
    var.set_value(jnp.asarray(_kernel(given) if transposed else given, current.dtype))
  if head is not None and head.standardize:  # the file's map is on the raw features
    head.feature_mean.set_value(jnp.zeros((head.in_dim,), jnp.float32))
    head.feature_std.set_value(jnp.ones((head.in_dim,), jnp.float32))
    if head.whiten:
      head.feature_projection.set_value(jnp.eye(head.in_dim, dtype=jnp.float32))
