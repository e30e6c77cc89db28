"""Stand-ins for the few ``torch``/``torchvision``/``safetensors.torch`` names the README's PyTorch
snippet uses, for test environments without PyTorch: a torchvision ResNet is its ``state_dict``'s
names, shapes and dtypes (recorded from torchvision in ``tests/data``), and ``load_state_dict``
checks a state dict the way ``torch.nn.Module.load_state_dict(strict=True)`` does (missing and
unexpected keys, then shapes), with torch's messages."""

from __future__ import annotations

import json
import types
from pathlib import Path

from safetensors import numpy as st_numpy

RECORDED = json.loads((Path(__file__).parent / "fixtures" /
                       "torchvision_resnet_state_dicts.json").read_text())["models"]


class _Leaf:
  """A parameter-holding module: its parameters' ``{name: (shape, dtype)}``."""

  def __init__(self, params: dict):
    self.params = params


def Conv2d(in_ch, out_ch, kernel, stride=1, padding=0, bias=True):  # noqa: N802 (torch's name)
  del stride, padding
  return _Leaf({"weight": ((out_ch, in_ch, kernel, kernel), "float32"),
                **({"bias": ((out_ch,), "float32")} if bias else {})})


def Linear(in_features, out_features, bias=True):  # noqa: N802
  return _Leaf({"weight": ((out_features, in_features), "float32"),
                **({"bias": ((out_features,), "float32")} if bias else {})})


def Identity():  # noqa: N802
  return _Leaf({})


class ResNet:
  """A torchvision ResNet as its state dict; assigning a module to a child replaces its keys."""

  def __init__(self, name: str):
    object.__setattr__(self, "shapes", {k: (tuple(s), d) for k, s, d in RECORDED[name]})

  def __setattr__(self, child: str, module: _Leaf):
    kept = {k: v for k, v in self.shapes.items() if not k.startswith(f"{child}.")}
    kept.update({f"{child}.{k}": v for k, v in module.params.items()})
    object.__setattr__(self, "shapes", kept)

  def load_state_dict(self, state, strict: bool = True):
    missing = [k for k in self.shapes if k not in state]
    unexpected = [k for k in state if k not in self.shapes]
    errors = []
    if strict and unexpected:
      errors.append("Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected))
    if strict and missing:
      errors.append("Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing))
    for k, (shape, dtype) in self.shapes.items():
      if k in state and (tuple(state[k].shape), str(state[k].dtype)) != (shape, dtype):
        errors.append(f"size mismatch for {k}: copying a param with shape "
                      f"{tuple(state[k].shape)} ({state[k].dtype}), the shape in current model "
                      f"is {shape} ({dtype})")
    if errors:
      raise RuntimeError("Error(s) in loading state_dict for ResNet:\n\t" + "\n\t".join(errors))
    return types.SimpleNamespace(missing_keys=missing, unexpected_keys=unexpected)

  def eval(self):
    return self


def modules() -> dict[str, types.ModuleType]:
  """``sys.modules`` entries for ``torch``, ``torchvision`` and ``safetensors.torch``."""
  torch = types.ModuleType("torch")
  torch.nn = types.SimpleNamespace(Conv2d=Conv2d, Linear=Linear, Identity=Identity)
  torchvision = types.ModuleType("torchvision")
  torchvision.models = types.SimpleNamespace(**{n: (lambda n=n: ResNet(n)) for n in RECORDED})
  safetensors_torch = types.ModuleType("safetensors.torch")
  safetensors_torch.load_file = st_numpy.load_file
  return {"torch": torch, "torchvision": torchvision, "safetensors.torch": safetensors_torch}
