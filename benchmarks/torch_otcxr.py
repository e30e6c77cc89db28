"""A PyTorch port of the OTCXR pretraining network and objective, for speed comparisons only.

Used by ``benchmarks/compare_pytorch.py`` (which runs it in its own process, possibly under
another Python that has PyTorch). It imports only ``torch`` and ``numpy``, never JAX, and is not
part of the library: PyTorch is an optional benchmark requirement (``requirements-bench.txt``).

What is ported, module for module, with the same parameter names as the JAX model's state
(``encoder.stage1.0.conv1.weight`` for ``encoder/stage1/0/conv1/kernel``), so the JAX weights load
directly (:func:`load_jax_weights`):

* ``otcxr_jax/models/resnet.py``: ResNet-18/34/50/101, width multiplier, 'imagenet' or 'small'
  stem, BatchNorm or GroupNorm (``gcd(groups, channels)`` groups), eps 1e-5;
* ``otcxr_jax/models/heads.py``: ``DenseProjector`` (Linear-BN-ReLU ... Linear over tokens);
* ``otcxr_jax/models/cvsim.py`` and ``attention.py``: pre-norm cross-attention block, LayerNorm
  eps 1e-6, float32 softmax, exact-GELU MLP, called both ways in one batch;
* ``otcxr_jax/objectives/otcxr.py``, ``ot.py``, ``regularizers.py``: tokens centred per cell
  over the batch (``center_positions``) and per image, cosine cost (norm floor 1e-6) plus an
  optional location prior, Sinkhorn with uniform marginals and a fixed number of iterations in
  the log domain or with kernel scalings (the updates of ott-jax 0.6.0: g first, then f,
  starting from zero potentials / unit scalings), the plan held fixed for the gradient
  (``grad_mode='fixed'``), ``L_OT = <P, C>``, and the VICReg variance and covariance terms over
  batch x positions (unbiased).

Only ``grad_mode='fixed'``, ``alignment='ot'``, ``varcov_per_position=False``,
``global_weight=0`` and ``teacher_tau=0`` are ported: the settings of every config the comparison
uses.
"""

from __future__ import annotations

import math
import time
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _norm(kind: str, groups: int, channels: int) -> nn.Module:
  if kind == "group":
    return nn.GroupNorm(math.gcd(groups, channels), channels, eps=1e-5)
  return nn.BatchNorm2d(channels, eps=1e-5, momentum=0.1)


def _conv(in_ch: int, out_ch: int, kernel: int, stride: int) -> nn.Conv2d:
  return nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, bias=False)


class Shortcut(nn.Module):

  def __init__(self, in_ch, out_ch, stride, norm):
    super().__init__()
    self.conv = _conv(in_ch, out_ch, 1, stride)
    self.bn = _norm(*norm, out_ch)

  def forward(self, x):
    return self.bn(self.conv(x))


class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, in_ch, planes, stride, norm):
    super().__init__()
    out_ch = planes * self.expansion
    self.conv1 = _conv(in_ch, planes, 3, stride)
    self.bn1 = _norm(*norm, planes)
    self.conv2 = _conv(planes, out_ch, 3, 1)
    self.bn2 = _norm(*norm, out_ch)
    needs = stride != 1 or in_ch != out_ch
    self.shortcut = Shortcut(in_ch, out_ch, stride, norm) if needs else None

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return F.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class Bottleneck(nn.Module):
  expansion = 4

  def __init__(self, in_ch, planes, stride, norm):
    super().__init__()
    out_ch = planes * self.expansion
    self.conv1 = _conv(in_ch, planes, 1, 1)
    self.bn1 = _norm(*norm, planes)
    self.conv2 = _conv(planes, planes, 3, stride)
    self.bn2 = _norm(*norm, planes)
    self.conv3 = _conv(planes, out_ch, 1, 1)
    self.bn3 = _norm(*norm, out_ch)
    needs = stride != 1 or in_ch != out_ch
    self.shortcut = Shortcut(in_ch, out_ch, stride, norm) if needs else None

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = F.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    return F.relu(y + (x if self.shortcut is None else self.shortcut(x)))


ARCHITECTURES = {18: (BasicBlock, (2, 2, 2, 2)), 34: (BasicBlock, (3, 4, 6, 3)),
                 50: (Bottleneck, (3, 4, 6, 3)), 101: (Bottleneck, (3, 4, 23, 3))}


def scale_channels(channels: int, width: float) -> int:
  return max(8, int(round(channels * width)))


class Stem(nn.Module):

  def __init__(self, in_ch, out_ch, kernel, stride, norm):
    super().__init__()
    self.conv = _conv(in_ch, out_ch, kernel, stride)
    self.bn = _norm(*norm, out_ch)

  def forward(self, x):
    return F.relu(self.bn(self.conv(x)))


class ResNet(nn.Module):
  """``otcxr_jax.models.ResNet`` in PyTorch (NCHW tensors; use channels_last memory format).

  ``forward`` returns the last stage's dense map ``(B, C, h, w)``.
  """

  def __init__(self, depth: int, *, width: float = 1.0, in_channels: int = 1,
               stem: str = "imagenet", stem_stride: int = 1, num_stages: int = 4,
               norm: str = "batch", norm_groups: int = 32):
    super().__init__()
    block, counts = ARCHITECTURES[depth]
    norm_spec = (norm, norm_groups)
    self.stem_type = stem
    stem_ch = scale_channels(64, width)
    if stem == "imagenet":
      self.stem = Stem(in_channels, stem_ch, 7, 2, norm_spec)
    else:
      self.stem = Stem(in_channels, stem_ch, 3, stem_stride, norm_spec)
    in_ch = stem_ch
    self.num_stages = num_stages
    for i, n_blocks in enumerate(counts[:num_stages]):
      planes = scale_channels(64 * 2**i, width)
      blocks = []
      for j in range(n_blocks):
        blocks.append(block(in_ch, planes, (1 if i == 0 else 2) if j == 0 else 1, norm_spec))
        in_ch = planes * block.expansion
      setattr(self, f"stage{i + 1}", nn.Sequential(*blocks))
    self.num_features = in_ch

  def forward(self, x):
    x = self.stem(x)
    if self.stem_type == "imagenet":
      x = F.max_pool2d(x, 3, 2, 1)
    for i in range(1, self.num_stages + 1):
      x = getattr(self, f"stage{i}")(x)
    return x


class Classifier(nn.Module):
  """Encoder, global average pool and a linear head (the encoder-only benchmark step)."""

  def __init__(self, encoder: ResNet, num_classes: int):
    super().__init__()
    self.encoder = encoder
    self.head = nn.Linear(encoder.num_features, num_classes)

  def forward(self, images):
    return self.head(self.encoder(images).float().mean(dim=(2, 3)))


class DenseProjector(nn.Module):
  """``otcxr_jax.models.DenseProjector``: token-wise Linear-BN-ReLU ... Linear, float32 output."""

  def __init__(self, in_dim, hidden_dim, out_dim, num_layers=2):
    super().__init__()
    dims = [in_dim] + [hidden_dim] * (num_layers - 1)
    self.hidden = nn.ModuleList([nn.Linear(d, hidden_dim, bias=False) for d in dims[:-1]])
    self.norms = nn.ModuleList([nn.BatchNorm1d(hidden_dim, eps=1e-5) for _ in dims[:-1]])
    self.out = nn.Linear(dims[-1], out_dim)
    self.out_dim = out_dim

  def forward(self, x):
    lead = x.shape[:-1]
    h = x.reshape(-1, x.shape[-1])
    for layer, norm in zip(self.hidden, self.norms):
      h = F.relu(norm(layer(h)))
    return self.out(h).reshape(*lead, self.out_dim).float()


class Mlp(nn.Module):

  def __init__(self, dim, hidden):
    super().__init__()
    self.fc1 = nn.Linear(dim, hidden)
    self.fc2 = nn.Linear(hidden, dim)

  def forward(self, x):
    return self.fc2(F.gelu(self.fc1(x)))


class CVSIM(nn.Module):
  """``otcxr_jax.models.CVSIM``: pre-norm cross-attention block with a residual MLP."""

  def __init__(self, dim, num_heads=4, mlp_ratio=2.0):
    super().__init__()
    self.num_heads = num_heads
    self.norm_q = nn.LayerNorm(dim, eps=1e-6)
    self.norm_kv = nn.LayerNorm(dim, eps=1e-6)
    self.q, self.k, self.v, self.out = (nn.Linear(dim, dim) for _ in range(4))
    self.norm_mlp = nn.LayerNorm(dim, eps=1e-6)
    self.mlp = Mlp(dim, int(dim * mlp_ratio))

  def forward(self, x, context):
    b, n, d = x.shape
    h = self.num_heads
    xn, cn = self.norm_q(x), self.norm_kv(context)
    split = lambda t: t.reshape(b, -1, h, d // h).transpose(1, 2)
    qh, kh, vh = split(self.q(xn)), split(self.k(cn)), split(self.v(cn))
    scores = torch.matmul(qh.float(), kh.float().transpose(-1, -2)) * (d // h) ** -0.5
    attention = torch.softmax(scores, dim=-1)
    attended = torch.matmul(attention.to(vh.dtype), vh).transpose(1, 2).reshape(b, n, d)
    y = x + self.out(attended).to(x.dtype)
    return y + self.mlp(self.norm_mlp(y)).to(x.dtype)


class OTCXRModel(nn.Module):
  """``otcxr_jax.models.OTCXRModel`` (last-stage dense map): ``(q_s, q_t)`` float32 tokens."""

  def __init__(self, encoder: ResNet, projector: DenseProjector, cvsim: CVSIM | None):
    super().__init__()
    self.encoder, self.projector, self.cvsim = encoder, projector, cvsim

  def forward(self, view_s, view_t):
    batch = view_s.shape[0]
    dense = self.encoder(torch.cat([view_s, view_t], 0)).float()
    c = dense.shape[1]
    tokens = dense.permute(0, 2, 3, 1).reshape(2 * batch, -1, c)  # row-major over (h, w)
    q = self.projector(tokens)
    if self.cvsim is not None:
      q = self.cvsim(q, torch.cat([q[batch:], q[:batch]], 0))
    return q[:batch].float(), q[batch:].float()


# ---------------------------------------------------------------------------------------------
# The objective (float32 whatever the autocast state).


def sinkhorn_plan(cost: torch.Tensor, epsilon: float, num_iters: int,
                  lse_mode: bool) -> torch.Tensor:
  """(B, N, M) entropic OT plans with uniform marginals, ott-jax's fixed-iteration updates."""
  _, n, m = cost.shape
  if lse_mode:
    f = cost.new_zeros(cost.shape[:2])
    g = cost.new_zeros((cost.shape[0], m))
    log_a, log_b = math.log(1.0 / n), math.log(1.0 / m)
    for _ in range(num_iters):
      g = epsilon * log_b - epsilon * torch.logsumexp((f[:, :, None] - cost) / epsilon, dim=1)
      f = epsilon * log_a - epsilon * torch.logsumexp((g[:, None, :] - cost) / epsilon, dim=2)
    return torch.exp((f[:, :, None] + g[:, None, :] - cost) / epsilon)
  kernel = torch.exp(-cost / epsilon)
  u = cost.new_ones(cost.shape[:2])
  v = cost.new_ones((cost.shape[0], m))
  for _ in range(num_iters):
    kv = torch.einsum("bnm,bn->bm", kernel, u)
    v = (1.0 / m) / torch.where(kv > 0, kv, torch.ones_like(kv))
    ku = torch.einsum("bnm,bm->bn", kernel, v)
    u = (1.0 / n) / torch.where(ku > 0, ku, torch.ones_like(ku))
  return u[:, :, None] * kernel * v[:, None, :]


def cosine_cost(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
  normalize = lambda t: t * torch.rsqrt(torch.clamp((t * t).sum(-1, keepdim=True), min=eps * eps))
  return 1.0 - torch.einsum("bnd,bmd->bnm", normalize(x), normalize(y))


def variance_loss(z, gamma=1.0, eps=1e-4):
  z = z.reshape(-1, z.shape[-1]).float()
  return F.relu(gamma - torch.sqrt(z.var(dim=0, unbiased=True) + eps)).mean()


def covariance_loss(z):
  z = z.reshape(-1, z.shape[-1]).float()
  n, d = z.shape
  centred = z - z.mean(dim=0)
  cov = centred.T @ centred / (n - 1)
  return ((cov**2).sum() - (torch.diagonal(cov) ** 2).sum()) / d


def resolve_lse_mode(objective: Mapping[str, Any]) -> bool:
  """``objectives.ot.batched_transport``'s choice when ``lse_mode`` is None."""
  if objective.get("lse_mode") is not None:
    return bool(objective["lse_mode"])
  if objective.get("location_weight"):
    return True
  return not (objective["cost"] == "cosine" and 2.0 / objective["epsilon"] <= 50.0
              and objective["grad_mode"] != "unrolled")


def otcxr_loss(q_s: torch.Tensor, q_t: torch.Tensor, objective: Mapping[str, Any],
               location: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
  """``otcxr_jax.objectives.otcxr.otcxr_loss`` (supported settings: module docstring)."""
  if objective["grad_mode"] != "fixed" or objective["alignment"] != "ot" or objective["cost"] \
      != "cosine" or objective["varcov_per_position"] or objective["global_weight"] \
      or objective.get("teacher_tau"):
    raise NotImplementedError(f"objective not ported: {dict(objective)}")
  with torch.autocast(q_s.device.type, enabled=False):
    q_s, q_t = q_s.float(), q_t.float()
    var = variance_loss(q_s) + variance_loss(q_t)
    cov = covariance_loss(q_s) + covariance_loss(q_t)
    x_s, x_t = q_s, q_t
    if objective.get("center_positions"):
      x_s, x_t = x_s - x_s.mean(0, keepdim=True), x_t - x_t.mean(0, keepdim=True)
    if objective["center_tokens"]:
      x_s, x_t = x_s - x_s.mean(1, keepdim=True), x_t - x_t.mean(1, keepdim=True)
    cost = cosine_cost(x_s, x_t)
    if objective["location_weight"]:
      cost = cost + objective["location_weight"] * location
    with torch.no_grad():
      plan = sinkhorn_plan(cost.detach(), objective["epsilon"], objective["num_iters"],
                           resolve_lse_mode(objective))
    ot = (plan * cost).sum(dim=(1, 2)).mean()
    loss = objective["alpha"] * ot + objective["beta"] * var + objective["eta"] * cov
  return loss, {"ot": ot, "var": var, "cov": cov}


# ---------------------------------------------------------------------------------------------
# Building from a spec (what compare_pytorch.py sends) and loading JAX weights.


def build(spec: Mapping[str, Any]) -> nn.Module:
  """The network of ``spec`` (keys as ``compare_pytorch.torch_spec`` writes them)."""
  m = spec["model"]
  encoder = ResNet(m["depth"], width=m["width"], in_channels=m["in_channels"], stem=m["stem"],
                   stem_stride=m["stem_stride"], num_stages=m.get("num_stages", 4), norm=m["norm"],
                   norm_groups=m["norm_groups"])
  if spec["step"] == "encoder":
    return Classifier(encoder, spec["num_classes"])
  projector = DenseProjector(encoder.num_features, m["projector_hidden"], m["projector_dim"],
                             m["projector_layers"])
  cvsim = CVSIM(m["projector_dim"], m["cvsim_heads"], m["cvsim_mlp_ratio"]) if m["cvsim"] else None
  return OTCXRModel(encoder, projector, cvsim)


def load_jax_weights(module: nn.Module, arrays: Mapping[str, np.ndarray]) -> None:
  """Loads ``arrays`` (torch names, torch layouts; ``compare_pytorch.jax_weights``), strictly."""
  state = module.state_dict()
  missing = [k for k in state if k not in arrays and not k.endswith("num_batches_tracked")]
  unexpected = [k for k in arrays if k not in state]
  if missing or unexpected:
    raise KeyError(f"missing {missing[:5]}, unexpected {unexpected[:5]}")
  with torch.no_grad():
    for name, value in arrays.items():
      if tuple(state[name].shape) != value.shape:
        raise ValueError(f"{name}: torch {tuple(state[name].shape)} vs {value.shape}")
      state[name].copy_(torch.from_numpy(np.ascontiguousarray(value)))


class Step:
  """One SGD train step of ``spec`` (fp32, or bf16 autocast), channels-last inputs."""

  def __init__(self, spec: Mapping[str, Any], weights: Mapping[str, np.ndarray] | None = None):
    torch.manual_seed(0)
    self.spec = spec
    self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if self.device.type == "cuda":  # fp32 runs use TF32 matmuls/convolutions where spec says so
      torch.backends.cuda.matmul.allow_tf32 = bool(spec.get("tf32"))
      torch.backends.cudnn.allow_tf32 = bool(spec.get("tf32"))
      torch.backends.cudnn.benchmark = True
    self.model = build(spec)
    if weights is not None:
      load_jax_weights(self.model, weights)
    self.model = self.model.to(self.device, memory_format=torch.channels_last).train()
    self.bf16 = spec["precision"] == "bfloat16"
    self.opt = torch.optim.SGD(self.model.parameters(), lr=spec["learning_rate"], momentum=0.9)
    rng = np.random.default_rng(0)
    b, s, c = spec["batch_size"], spec["image_size"], spec["model"]["in_channels"]
    image = lambda: self._tensor(rng.uniform(size=(b, c, s, s)).astype(np.float32), True)
    if spec["step"] == "encoder":
      self.inputs = (image(),)
      self.labels = self._tensor(rng.integers(0, 2, (b, spec["num_classes"])))
    else:
      self.inputs = (image(), image())
      self.location = (self._tensor(spec["location"]) if spec.get("location") is not None
                       else None)

  def _tensor(self, array, image: bool = False) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(np.asarray(array, np.float32))).to(self.device)
    return t.to(memory_format=torch.channels_last) if image else t

  def set_inputs(self, inputs: Mapping[str, np.ndarray]) -> None:
    """Replaces the random inputs by given NHWC arrays (``images`` or ``view_s``/``view_t``)."""
    nchw = lambda a: self._tensor(np.transpose(a, (0, 3, 1, 2)), True)
    if self.spec["step"] == "encoder":
      self.inputs = (nchw(inputs["images"]),)
      self.labels = self._tensor(inputs["labels"])
    else:
      self.inputs = (nchw(inputs["view_s"]), nchw(inputs["view_t"]))
      if "location" in inputs:
        self.location = self._tensor(inputs["location"])

  def loss(self) -> tuple[torch.Tensor, dict[str, Any]]:
    with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
      if self.spec["step"] == "encoder":
        logits = self.model(*self.inputs).float()
        return F.binary_cross_entropy_with_logits(logits, self.labels), {}
      q_s, q_t = self.model(*self.inputs)
      return otcxr_loss(q_s, q_t, self.spec["objective"], self.location)

  def __call__(self) -> float:
    self.opt.zero_grad(set_to_none=True)
    loss, _ = self.loss()
    loss.backward()
    self.opt.step()
    return float(loss.detach())  # waits for the step (a GPU synchronises here)

  def timed(self, n: int) -> list[float]:
    """Wall seconds of each of ``n`` steps."""
    times = []
    for _ in range(n):
      start = time.perf_counter()
      self()
      times.append(time.perf_counter() - start)
    return times
