"""The ResNet inference model as an ONNX graph: images -> pooled features -> logits -> sigmoid.

The graph is written node by node from the known architecture (``models/resnet.py``), in
evaluation mode: convolution, BatchNormalization with the running statistics (or
GroupNormalization for ``norm='group'`` networks, opset 21), ReLU, max-pool
(ImageNet stem), residual additions, global average pooling, and the linear classifier (the
encoder's own head or a :class:`~otcxr_jax.models.LinearClassifier`). Its initialisers carry the
PyTorch names of :mod:`otcxr_jax.export.state_dict` (``conv1.weight``, ``layer1.0.bn1.running_mean``,
``fc.weight``, ...).

Graph signature (ONNX's NCHW convention, batch, height and width dynamic):

* input ``images``: float32 ``(batch, in_channels, height, width)`` in [0, 1] (the JAX model's
  input transposed; the 1 <-> 3 channel adaptation of ``models.match_channels`` is not part of
  the graph);
* outputs ``features`` ``(batch, C)`` (the pooled features), and with a head ``logits``
  ``(batch, K)`` and ``probabilities`` = sigmoid(logits) (multi-label).

It computes in float32 (a model trained with bfloat16 activations is exported with its float32
parameters).
"""

from __future__ import annotations

from typing import Sequence

import onnx
from flax import nnx
from onnx import TensorProto, helper, numpy_helper

from otcxr_jax.export import state_dict as sd
from otcxr_jax.models import LinearClassifier, ResNet
from otcxr_jax.models.resnet import STAGE_NAMES, Bottleneck

OPSET = 17           # BatchNorm networks
GROUP_NORM_OPSET = 21  # GroupNormalization with a per-channel scale and bias
INPUT, FEATURES, LOGITS, PROBABILITIES = "images", "features", "logits", "probabilities"


def _pair(value) -> tuple[int, int]:
  return (value, value) if isinstance(value, int) else tuple(value)


class _Graph:
  """Accumulates nodes and the names of the state-dict entries they read (the initialisers)."""

  def __init__(self):
    self.nodes: list[onnx.NodeProto] = []
    self.used: list[str] = []
    self.group_norm = False

  def param(self, name: str) -> str:
    self.used.append(name)
    return name

  def node(self, op: str, inputs: Sequence[str], output: str, **attrs) -> str:
    self.nodes.append(helper.make_node(op, list(inputs), [output], name=output, **attrs))
    return output

  def conv(self, x: str, conv: nnx.Conv, name: str) -> str:
    (top, bottom), (left, right) = conv.padding
    return self.node("Conv", [x, self.param(f"{name}.weight")], f"{name}/out",
                     kernel_shape=list(conv.kernel_size), strides=list(_pair(conv.strides)),
                     pads=[top, left, bottom, right])

  def norm(self, x: str, norm: nnx.BatchNorm | nnx.GroupNorm, name: str) -> str:
    """BatchNorm with its running statistics, or GroupNorm (opset 21: per-channel affine)."""
    if isinstance(norm, nnx.GroupNorm):
      self.group_norm = True
      return self.node("GroupNormalization",
                       [x, self.param(f"{name}.weight"), self.param(f"{name}.bias")],
                       f"{name}/out", epsilon=float(norm.epsilon), num_groups=norm.num_groups)
    inputs = [x] + [self.param(f"{name}.{k}")
                    for k in ("weight", "bias", "running_mean", "running_var")]
    return self.node("BatchNormalization", inputs, f"{name}/out", epsilon=float(norm.epsilon))

  def relu(self, x: str) -> str:
    return self.node("Relu", [x], f"{x}/relu")


def _block(g: _Graph, x: str, block, name: str) -> str:
  convs = ("conv1", "conv2", "conv3") if isinstance(block, Bottleneck) else ("conv1", "conv2")
  y = x
  for i, conv in enumerate(convs, start=1):
    y = g.norm(g.conv(y, getattr(block, conv), f"{name}.{conv}"), getattr(block, f"bn{i}"),
             f"{name}.bn{i}")
    if i < len(convs):
      y = g.relu(y)
  identity = x
  if block.shortcut is not None:
    identity = g.norm(g.conv(x, block.shortcut.conv, f"{name}.downsample.0"), block.shortcut.bn,
                    f"{name}.downsample.1")
  return g.relu(g.node("Add", [y, identity], f"{name}/add"))


def resnet_to_onnx(encoder: ResNet, head: LinearClassifier | None = None, *,
                   class_names: Sequence[str] | None = None) -> onnx.ModelProto:
  """The ONNX model of ``encoder`` (evaluation mode) with its head or ``head``; checked.

  Args:
    encoder: a concrete :class:`~otcxr_jax.models.ResNet`.
    head: a classifier on the pooled features (when the encoder has no head of its own).
    class_names: the head's label order, stored in the model's metadata (``class_names``,
      comma-separated).

  Raises:
    ValueError: ``encoder`` is not a ResNet (ViT export to ONNX is not provided), or both the
      encoder and ``head`` have a head.
  """
  if not isinstance(encoder, ResNet):
    raise ValueError(f"ONNX export supports the ResNet encoders; got {type(encoder).__name__} "
                     "(export a ViT's weights with --format safetensors)")
  tensors = sd.to_state_dict(encoder, head)
  g = _Graph()
  x = g.relu(g.norm(g.conv(INPUT, encoder.stem.conv, "conv1"), encoder.stem.bn, "bn1"))
  if encoder.stem_type == "imagenet":
    x = g.node("MaxPool", [x], "maxpool/out", kernel_shape=[3, 3], strides=[2, 2],
               pads=[1, 1, 1, 1])
  for i, stage in enumerate(getattr(encoder, "stage_names", STAGE_NAMES), start=1):
    for j, block in enumerate(getattr(encoder, stage)):
      x = _block(g, x, block, f"layer{i}.{j}")
  pooled = g.node("GlobalAveragePool", [x], "avgpool/out")
  g.node("Flatten", [pooled], FEATURES, axis=1)
  outputs = [helper.make_tensor_value_info(FEATURES, TensorProto.FLOAT,
                                           ["batch", encoder.num_features])]
  if "fc.weight" in tensors:
    num_classes = tensors["fc.weight"].shape[0]
    g.node("Gemm", [FEATURES, g.param("fc.weight"), g.param("fc.bias")], LOGITS, transB=1)
    g.node("Sigmoid", [LOGITS], PROBABILITIES)
    outputs += [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", num_classes])
                for name in (LOGITS, PROBABILITIES)]
  images = helper.make_tensor_value_info(INPUT, TensorProto.FLOAT,
                                         ["batch", encoder.in_channels, "height", "width"])
  graph = helper.make_graph(g.nodes, "otcxr_resnet", [images], outputs,
                            initializer=[numpy_helper.from_array(tensors[n], n) for n in g.used])
  opset = GROUP_NORM_OPSET if g.group_norm else OPSET
  model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                            producer_name="otcxr_jax")
  if class_names is not None:
    helper.set_model_props(model, {"class_names": ",".join(class_names)})
  onnx.checker.check_model(model, full_check=True)
  return model
