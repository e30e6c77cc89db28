"""Export: torchvision/timm state dicts, safetensors round trips, ONNX against JAX, the CLI."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from flax import nnx
from safetensors.numpy import load_file
from scipy import special

from otcxr_jax import methods
from otcxr_jax.data import datasets
from otcxr_jax.evaluation import classifier
from otcxr_jax.export import __main__ as cli
from otcxr_jax.export import onnx_resnet, safetensors_io
from otcxr_jax.export import state_dict as sd
from otcxr_jax.models import LinearClassifier, ResNet, ViT
from otcxr_jax.models import factory
from otcxr_jax.modes import pretrain
from otcxr_jax.training import checkpoint as ckpt_lib
from otcxr_jax.training import optim
from otcxr_jax.training import state as state_lib
from tests.tiny import tiny_config


def _randomise(*modules: nnx.Module, seed: int = 0) -> None:
  """Every variable (BatchNorm statistics included) set to random values, variances positive."""
  rs = np.random.RandomState(seed)
  for module in modules:
    for path, var in nnx.to_flat_state(nnx.state(module)):
      shape = var.get_value().shape
      value = rs.normal(0.0, 0.3, shape)
      if path[-1] == "var":
        value = rs.uniform(0.5, 2.0, shape)
      var.set_value(jnp.asarray(value, jnp.float32))


def _random(make, seed: int = 0) -> nnx.Module:
  """``_randomise(make())`` without running ``make``'s initialisers, whose values it replaces
  (op by op, a ResNet-50's initialisation alone took seconds)."""
  module = _zeros(make)
  _randomise(module, seed=seed)
  return module


def _zeros(make):
  """The module ``make()`` builds, with every variable zero: its layout without the cost of a
  random initialisation (11.7M parameters for torchvision's ResNet-18)."""
  graphdef, state = nnx.split(nnx.eval_shape(make))
  return nnx.merge(graphdef, jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), state))


@nnx.jit
def _apply(module: nnx.Module, images: jax.Array):
  """``module(images)`` as one compiled program (run op by op, a ResNet-50 took seconds)."""
  return module(images)


def _flat(*modules: nnx.Module) -> dict[str, np.ndarray]:
  return {f"{i}/" + "/".join(map(str, p)): np.asarray(v.get_value())
          for i, m in enumerate(modules) for p, v in nnx.to_flat_state(nnx.state(m))}


# --- torchvision's ResNet state_dict, enumerated from its architecture definition -------------
# torchvision.models.resnet: conv1 7x7/2 (64), bn1, layer1..4 of BasicBlock (expansion 1: conv1
# 3x3, conv2 3x3) or Bottleneck (expansion 4: conv1 1x1, conv2 3x3, conv3 1x1), planes 64, 128,
# 256, 512, stride 2 in layers 2-4, downsample (1x1 conv, bn) in a layer's first block when the
# stride or the channel count changes; fc. Every BatchNorm has weight, bias, running_mean,
# running_var (float32) and num_batches_tracked (int64 scalar).

def _torchvision_resnet(bottleneck: bool, layers, num_classes, in_channels=3, width=1.0):
  ch = lambda c: max(8, int(round(c * width)))  # width multiplier (1.0: torchvision itself)
  out = {}

  def bn(name, c):
    out.update({f"{name}.{k}": ((c,), "float32")
                for k in ("weight", "bias", "running_mean", "running_var")})
    out[f"{name}.num_batches_tracked"] = ((), "int64")

  out["conv1.weight"] = ((ch(64), in_channels, 7, 7), "float32")
  bn("bn1", ch(64))
  inplanes, expansion = ch(64), (4 if bottleneck else 1)
  for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers), start=1):
    planes = ch(planes)
    for j in range(blocks):
      stride = 2 if (i > 1 and j == 0) else 1
      kernels = ([(planes, inplanes, 1), (planes, planes, 3), (planes * 4, planes, 1)]
                 if bottleneck else [(planes, inplanes, 3), (planes, planes, 3)])
      for k, (o, c, size) in enumerate(kernels, start=1):
        out[f"layer{i}.{j}.conv{k}.weight"] = ((o, c, size, size), "float32")
        bn(f"layer{i}.{j}.bn{k}", o)
      if j == 0 and (stride != 1 or inplanes != planes * expansion):
        out[f"layer{i}.{j}.downsample.0.weight"] = ((planes * expansion, inplanes, 1, 1),
                                                    "float32")
        bn(f"layer{i}.{j}.downsample.1", planes * expansion)
      inplanes = planes * expansion
  out["fc.weight"] = ((num_classes, inplanes), "float32")
  out["fc.bias"] = ((num_classes,), "float32")
  return out


def _layout(state_dict):
  return {k: (tuple(v.shape), str(v.dtype)) for k, v in state_dict.items()}


def test_resnet18_state_dict_is_torchvision_resnet18():
  encoder = _zeros(lambda: ResNet(18, in_channels=3, num_classes=1000, rngs=nnx.Rngs(0)))
  assert _layout(sd.to_state_dict(encoder)) == _torchvision_resnet(False, (2, 2, 2, 2), 1000)


def test_resnet50_state_dict_has_torchvision_bottleneck_names_with_a_classifier_head():
  encoder = _zeros(lambda: ResNet(50, width=0.125, in_channels=1, rngs=nnx.Rngs(0)))
  head = LinearClassifier(encoder.num_features, 4, rngs=nnx.Rngs(1))
  expected = _torchvision_resnet(True, (3, 4, 6, 3), 4, in_channels=1, width=0.125)
  assert _layout(sd.to_state_dict(encoder, head)) == expected


# --- timm's VisionTransformer, its state_dict and its forward pass in numpy --------------------

def _timm_vit_layout(dim, depth, patch, channels, tokens, hidden, num_classes):
  out = {"cls_token": (1, 1, dim), "pos_embed": (1, tokens, dim),
         "patch_embed.proj.weight": (dim, channels, patch, patch), "patch_embed.proj.bias": (dim,),
         "norm.weight": (dim,), "norm.bias": (dim,), "head.weight": (num_classes, dim),
         "head.bias": (num_classes,)}
  for i in range(depth):
    b = f"blocks.{i}."
    out.update({b + "norm1.weight": (dim,), b + "norm1.bias": (dim,),
                b + "attn.qkv.weight": (3 * dim, dim), b + "attn.qkv.bias": (3 * dim,),
                b + "attn.proj.weight": (dim, dim), b + "attn.proj.bias": (dim,),
                b + "norm2.weight": (dim,), b + "norm2.bias": (dim,),
                b + "mlp.fc1.weight": (hidden, dim), b + "mlp.fc1.bias": (hidden,),
                b + "mlp.fc2.weight": (dim, hidden), b + "mlp.fc2.bias": (dim,)})
  return {k: (v, "float32") for k, v in out.items()}


def _timm_forward(w, images_nchw, num_heads, depth):
  """timm's VisionTransformer.forward (class-token pooling) written in numpy from a state dict."""
  def ln(x, name):
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-6) * w[name + ".weight"] + w[name + ".bias"]

  def linear(x, name):
    return x @ w[name + ".weight"].T + w[name + ".bias"]

  proj = w["patch_embed.proj.weight"]
  dim, channels, p, _ = proj.shape
  b, _, h, wd = images_nchw.shape
  patches = images_nchw.reshape(b, channels, h // p, p, wd // p, p).transpose(0, 2, 4, 1, 3, 5)
  tokens = patches.reshape(b, -1, channels * p * p) @ proj.reshape(dim, -1).T
  tokens = tokens + w["patch_embed.proj.bias"]
  cls = np.broadcast_to(w["cls_token"], (b, 1, dim))
  x = np.concatenate([cls, tokens], axis=1) + w["pos_embed"]
  n, hd = x.shape[1], dim // num_heads
  for i in range(depth):
    qkv = linear(ln(x, f"blocks.{i}.norm1"), f"blocks.{i}.attn.qkv")
    q, k, v = qkv.reshape(b, n, 3, num_heads, hd).transpose(2, 0, 3, 1, 4)
    scores = q @ k.transpose(0, 1, 3, 2) * hd**-0.5
    att = np.exp(scores - scores.max(-1, keepdims=True))
    att /= att.sum(-1, keepdims=True)
    x = x + linear((att @ v).transpose(0, 2, 1, 3).reshape(b, n, dim), f"blocks.{i}.attn.proj")
    hidden = linear(ln(x, f"blocks.{i}.norm2"), f"blocks.{i}.mlp.fc1")
    hidden = 0.5 * hidden * (1 + special.erf(hidden / np.sqrt(2)))
    x = x + linear(hidden, f"blocks.{i}.mlp.fc2")
  pooled = ln(x, "norm")[:, 0]
  return pooled, linear(pooled, "head")


def test_vit_state_dict_is_timm_and_computes_timm_forward():
  vit = _random(lambda: ViT(patch_size=8, dim=32, depth=2, num_heads=4, mlp_ratio=2.0,
                            image_size=32, in_channels=3, num_classes=5, rngs=nnx.Rngs(0)))
  state = sd.to_state_dict(vit)
  assert _layout(state) == _timm_vit_layout(32, 2, 8, 3, 1 + 16, 64, 5)
  images = np.random.RandomState(1).rand(2, 32, 32, 3).astype(np.float32)
  out = _apply(vit, images)
  weights = {k: v.astype(np.float64) for k, v in state.items()}
  pooled, logits = _timm_forward(weights, images.transpose(0, 3, 1, 2).astype(np.float64),
                                 num_heads=4, depth=2)
  np.testing.assert_allclose(out.pooled, pooled, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(out.logits, logits, rtol=1e-4, atol=1e-4)


# --- safetensors round trips -----------------------------------------------------------------

def test_safetensors_round_trip_rebuilds_the_configured_encoder_and_head(tmp_path):
  config = tiny_config(tmp_path)
  encoder = _zeros(lambda: factory.build_encoder(config, nnx.Rngs(0)))
  head = _zeros(lambda: LinearClassifier(encoder.num_features, 3, rngs=nnx.Rngs(1)))
  _randomise(encoder, head)
  path = safetensors_io.save(tmp_path / "out" / "enc.safetensors", encoder, head,
                             model=safetensors_io.model_metadata(config),
                             class_names=["a", "b", "c"])
  # What PyTorch's safetensors loader sees: exactly the torchvision-named arrays.
  raw = load_file(str(path))
  expected = sd.to_state_dict(encoder, head)
  assert raw.keys() == expected.keys()
  for key in expected:
    np.testing.assert_array_equal(raw[key], expected[key])
  loaded = safetensors_io.load(path)  # the encoder rebuilt from the file's metadata
  assert isinstance(loaded.encoder, ResNet) and loaded.encoder.stem_type == "small"
  assert json.loads(loaded.metadata["class_names"]) == ["a", "b", "c"]
  original, restored = _flat(encoder, head), _flat(loaded.encoder, loaded.head)
  assert original.keys() == restored.keys()
  for key in original:
    np.testing.assert_array_equal(original[key], restored[key], err_msg=key)
  images = jnp.asarray(np.random.RandomState(2).rand(2, 32, 32, 1), jnp.float32)
  encoder.eval()
  np.testing.assert_array_equal(loaded.head(_apply(loaded.encoder, images).pooled),
                                head(_apply(encoder, images).pooled))


def test_safetensors_round_trip_of_a_vit_into_a_given_module(tmp_path):
  make = lambda seed: ViT(patch_size=8, dim=16, depth=1, num_heads=2, image_size=16,
                          rngs=nnx.Rngs(seed))
  vit = _random(lambda: make(0))
  path = safetensors_io.save(tmp_path / "vit.safetensors", vit, model={"note": "test"})
  loaded = safetensors_io.load(path, encoder=nnx.eval_shape(lambda: make(1)))
  assert loaded.head is None and loaded.metadata["architecture"] == "timm.vision_transformer"
  original, restored = _flat(vit), _flat(loaded.encoder)
  for key in original:
    np.testing.assert_array_equal(original[key], restored[key], err_msg=key)


def test_loading_refuses_state_dicts_of_another_model():
  encoder = _zeros(lambda: ResNet(18, width=0.125, in_channels=1, rngs=nnx.Rngs(0)))
  state = sd.to_state_dict(encoder)
  missing = {k: v for k, v in state.items() if k != "layer2.0.downsample.0.weight"}
  with pytest.raises(ValueError, match=r"missing keys \['layer2.0.downsample.0.weight'\]"):
    sd.load_state_dict(missing, encoder)
  with pytest.raises(ValueError, match=r"unexpected keys \['fc.bias', 'fc.weight'\]"):
    sd.load_state_dict({**state, "fc.weight": np.zeros((2, 64)), "fc.bias": np.zeros(2)},
                       encoder)
  wrong = {**state, "layer1.1.conv2.weight": np.zeros((8, 8, 1, 1), np.float32)}
  with pytest.raises(ValueError, match=r"'layer1.1.conv2.weight' has shape \(8, 8, 1, 1\); "
                                       r"the model expects \(8, 8, 3, 3\)"):
    sd.load_state_dict(wrong, encoder)
  with pytest.raises(ValueError, match="own linear head"):
    sd.to_state_dict(_zeros(lambda: ResNet(18, width=0.125, num_classes=2, rngs=nnx.Rngs(0))),
                     _zeros(lambda: LinearClassifier(64, 2, rngs=nnx.Rngs(0))))


# --- ONNX against JAX ------------------------------------------------------------------------

def _onnx_outputs(model, images_nhwc):
  session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
  names = [o.name for o in session.get_outputs()]
  values = session.run(None, {"images": images_nhwc.transpose(0, 3, 1, 2)})
  return dict(zip(names, values))


@pytest.mark.parametrize("depth, kwargs, own_head", [
    (18, dict(in_channels=1), False),                                   # ImageNet stem, probe head
    (50, dict(in_channels=3, stem="small", stem_stride=2), True),       # Bottleneck, own head
    (18, dict(in_channels=1, norm="group", norm_groups=4), False),      # GroupNorm variant
    (18, dict(in_channels=1, last_stride=1), False),                    # last stage unstrided
])
def test_onnx_inference_model_matches_jax(depth, kwargs, own_head):
  encoder = _zeros(lambda: ResNet(depth, width=0.125, num_classes=3 if own_head else None,
                                  rngs=nnx.Rngs(0), **kwargs))
  head = None if own_head else _zeros(
      lambda: LinearClassifier(encoder.num_features, 3, rngs=nnx.Rngs(1)))
  _randomise(encoder, *([head] if head else []))
  encoder.eval()
  model = onnx_resnet.resnet_to_onnx(encoder, head, class_names=["x", "y", "z"])
  assert {i.name for i in model.graph.initializer} <= sd.to_state_dict(encoder, head).keys()
  images = np.random.RandomState(3).rand(3, 40, 36, encoder.in_channels).astype(np.float32)
  out = _apply(encoder, images)
  logits = out.logits if own_head else head(out.pooled)
  got = _onnx_outputs(model, images)
  np.testing.assert_allclose(got["features"], out.pooled, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(got["logits"], logits, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(got["probabilities"], jax.nn.sigmoid(logits), rtol=1e-4, atol=1e-6)


def test_onnx_export_refuses_a_vit():
  vit = _zeros(lambda: ViT(patch_size=8, dim=16, depth=1, num_heads=2, image_size=16,
                           rngs=nnx.Rngs(0)))
  with pytest.raises(ValueError, match="ONNX export supports the ResNet encoders; got ViT"):
    onnx_resnet.resnet_to_onnx(vit)


# --- the command line on run workdirs ---------------------------------------------------------

def _save_run(config, workdir, model, run_dir):
  """A workdir as a run leaves it: config.json and one checkpoint of the whole train state."""
  pretrain.save_config(config, workdir)
  tx, _ = optim.pretraining_optimizer(config)
  _, state = state_lib.create_train_state(model, tx, jax.random.key_data(jax.random.key(0)))
  checkpointer = ckpt_lib.Checkpointer(workdir / "checkpoints" / run_dir, save_every=0)
  checkpointer.maybe_save(1, state, force=True)
  checkpointer.close()


def test_cli_exports_a_pretraining_run(tmp_path, capsys):
  config = tiny_config(tmp_path / "tfds")
  model = _zeros(lambda: methods.build_model(config, nnx.Rngs(0)))
  _randomise(model.encoder)
  _save_run(config, tmp_path / "run", model, "pretrain")
  out = tmp_path / "export" / "encoder.safetensors"
  assert cli.main(["--workdir", str(tmp_path / "run"), "--format", "safetensors",
                   "--out", str(out)]) == 0
  assert f"wrote {out}" in capsys.readouterr().out
  tensors = load_file(str(out))
  assert "fc.weight" not in tensors
  for key, value in sd.to_state_dict(model.encoder).items():
    np.testing.assert_array_equal(tensors[key], value, err_msg=key)
  assert cli.main(["--workdir", str(tmp_path / "run"), "--format", "onnx",
                   "--out", str(tmp_path / "encoder.onnx")]) == 0
  images = np.random.RandomState(4).rand(2, 32, 32, 1).astype(np.float32)
  model.encoder.eval()
  got = _onnx_outputs(onnx.load(str(tmp_path / "encoder.onnx")), images)
  assert set(got) == {"features"}
  np.testing.assert_allclose(got["features"], _apply(model.encoder, images).pooled,
                             rtol=1e-4, atol=1e-5)


def test_cli_exports_a_finetuning_run_with_its_classifier(tmp_path):
  config = tiny_config(tmp_path / "tfds", mode="finetune")
  names = datasets.class_names(config)
  model = _random(lambda: classifier.build_classifier(config, len(names)))
  _save_run(config, tmp_path / "run", model, "finetune_best")
  out = tmp_path / "clf.onnx"
  assert cli.main(["--workdir", str(tmp_path / "run"), "--format", "onnx", "--out",
                   str(out)]) == 0
  onnx_model = onnx.load(str(out))
  assert {p.key: p.value for p in onnx_model.metadata_props} == {"class_names": ",".join(names)}
  images = np.random.RandomState(5).rand(2, 32, 32, 1).astype(np.float32)
  model.eval()
  logits = _apply(model, images)
  np.testing.assert_allclose(_onnx_outputs(onnx_model, images)["probabilities"],
                             jax.nn.sigmoid(logits), rtol=1e-4, atol=1e-6)
  assert cli.main(["--workdir", str(tmp_path / "run"), "--format", "safetensors", "--out",
                   str(tmp_path / "clf.safetensors")]) == 0
  loaded = safetensors_io.load(tmp_path / "clf.safetensors")
  assert tuple(json.loads(loaded.metadata["class_names"])) == names
  # The file's head is the classifier's standardising head folded into one affine map of the raw
  # pooled features: the same logits up to float rounding.
  np.testing.assert_allclose(loaded.head(_apply(loaded.encoder, images).pooled), logits,
                             rtol=1e-5, atol=1e-5)


def test_cli_names_what_is_wrong_with_a_workdir(tmp_path, capsys):
  assert cli.main(["--workdir", str(tmp_path / "none"), "--format", "onnx",
                   "--out", str(tmp_path / "x.onnx")]) == 2
  assert "config.json does not exist" in capsys.readouterr().err
  config = tiny_config(tmp_path / "tfds", mode="knn")
  pretrain.save_config(config, tmp_path / "knn")
  assert cli.main(["--workdir", str(tmp_path / "knn"), "--format", "onnx",
                   "--out", str(tmp_path / "x.onnx")]) == 2
  assert "holds a 'knn' run" in capsys.readouterr().err
