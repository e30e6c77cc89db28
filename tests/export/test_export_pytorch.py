"""PyTorch users: the exported names and shapes are torchvision's ResNet-18/50 ``state_dict``'s
(recorded from torchvision in ``tests/fixtures/torchvision_resnet_state_dicts.json``), and README's
loading snippet runs as written, with ``strict=True``, for an encoder and a classifier export
(with PyTorch when it is installed, else against the recorded names and shapes)."""

import importlib.util
import re
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from otcxr_jax.export import safetensors_io
from otcxr_jax.export import state_dict as sd
from otcxr_jax.models import LinearClassifier, ResNet
from tests import torch_standin

README = Path(__file__).resolve().parents[2] / "README.md"
HAVE_TORCH = all(importlib.util.find_spec(m) for m in ("torch", "torchvision"))
_MODELS = {}


def _zeros(make):
  """The module ``make()`` builds, with every variable zero: names, shapes and dtypes are what
  these tests read, and a random initialisation of 25M parameters costs seconds."""
  graphdef, state = nnx.split(nnx.eval_shape(make))
  return nnx.merge(graphdef, jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), state))


def _model(depth: int, in_channels: int, num_classes: int | None):
  key = (depth, in_channels, num_classes)
  if key not in _MODELS:
    encoder = _zeros(lambda: ResNet(depth, in_channels=in_channels, rngs=nnx.Rngs(0)))
    head = None if num_classes is None else LinearClassifier(encoder.num_features, num_classes,
                                                             rngs=nnx.Rngs(1))
    _MODELS[key] = (encoder, head)
  return _MODELS[key]


def _snippet() -> str:
  [code] = [c for c in re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
            if "load_state_dict" in c]
  return code


@pytest.mark.parametrize("depth", [18, 50])
@pytest.mark.parametrize("num_classes", [None, 1000])
def test_exported_names_shapes_and_dtypes_are_torchvisions(depth, num_classes):
  recorded = {k: (tuple(s), d) for k, s, d in torch_standin.RECORDED[f"resnet{depth}"]}
  if num_classes is None:  # an encoder export: torchvision's model with fc = nn.Identity()
    recorded = {k: v for k, v in recorded.items() if not k.startswith("fc.")}
  exported = sd.to_state_dict(*_model(depth, 3, num_classes))
  assert sorted(exported) == sorted(recorded)  # the same names (load_state_dict ignores order)
  assert {k: (v.shape, str(v.dtype)) for k, v in exported.items()} == recorded


def _run_snippet(code: str, monkeypatch) -> dict:
  if not HAVE_TORCH:
    for name, module in torch_standin.modules().items():
      monkeypatch.setitem(sys.modules, name, module)
  namespace = {}
  exec(compile(code, str(README), "exec"), namespace)  # pylint: disable=exec-used
  return namespace


@pytest.mark.parametrize("depth", [18, 50])
@pytest.mark.parametrize("num_classes", [None, 3])
def test_readme_snippet_loads_encoder_and_classifier_exports_strictly(
    depth, num_classes, tmp_path, monkeypatch):
  encoder, head = _model(depth, 1, num_classes)
  safetensors_io.save(tmp_path / "encoder.safetensors", encoder, head, model={})
  monkeypatch.chdir(tmp_path)
  code = _snippet()
  if depth == 18:  # what its comment says to change for model.encoder=resnet18
    code = code.replace("torchvision.models.resnet50()", "torchvision.models.resnet18()")
  model = _run_snippet(code, monkeypatch)["model"]
  if HAVE_TORCH:
    import torch
    with torch.no_grad():
      out = model(torch.zeros(1, 1, 64, 64))
    assert tuple(out.shape) == (1, num_classes or encoder.num_features)


def test_torchvisions_own_fc_is_what_an_encoder_export_lacks(tmp_path, monkeypatch):
  """The snippet without its ``fc`` line fails exactly as torch reports it (the check can fail)."""
  encoder, _ = _model(50, 1, None)
  safetensors_io.save(tmp_path / "encoder.safetensors", encoder, model={})
  monkeypatch.chdir(tmp_path)
  code = re.sub(r"if \"fc.weight\" in state:.*?nn.Identity\(\)\n", "", _snippet(), flags=re.S)
  assert "fc" not in code.replace("fc.weight", "")
  with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "fc.weight", "fc.bias"'):
    _run_snippet(code, monkeypatch)
