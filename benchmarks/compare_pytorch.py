r"""The project's train step against the same network and step in PyTorch, side by side in one run.

    python benchmarks/compare_pytorch.py --setting resnet18_224 --step encoder,otcxr \
        --precision float32,bfloat16 [--torch-python /path/to/python] [--json out.json]

PyTorch is not a requirement of the project: install it from ``requirements-bench.txt`` into this
environment, or point ``--torch-python`` at any Python that imports ``torch`` and ``numpy`` (the
PyTorch half needs nothing else). The script runs in the JAX environment and starts the PyTorch
half as a worker process (``<torch-python> compare_pytorch.py --worker``) that it talks to over
pipes; the default worker Python is this one. Two processes rather than one: XLA's and oneDNN's
thread pools never compete, and each side runs as it would alone.

Settings (``--setting``, comma-separated):

| setting | model | images | batch |
| --- | --- | --- | --- |
| ``demo`` | ``configs/demo.py``: ResNet-18 width 0.5, ImageNet stem, 3 stages, GroupNorm, 4x4 map; the paper's objective (without the demo's image-level term) | 64² | 128 |
| ``resnet18_224`` | ResNet-18, ImageNet stem, BatchNorm, 7x7 map, projector 2048/512 | 224² | 32 |
| ``resnet50_224`` | ResNet-50, ImageNet stem, BatchNorm, 7x7 map, projector 2048/512 | 224² | 32 |

``--batch`` and ``--image-size`` override a setting's batch and image side (e.g. batch 256 for
ResNet-50 on a GPU). Steps (``--step``):

* ``encoder``: the encoder, global average pool and a 14-way linear head with a binary
  cross-entropy loss on random labels, forward, backward and an SGD (momentum 0.9) update;
* ``otcxr``: the whole OTCXR step on two given views of the batch (no augmentation on either
  side): the encoder on both views (2B images), the dense projector, CV-SIM both ways, the OTCXR
  objective with the setting's Sinkhorn iterations, epsilon, log/kernel mode, token centring and
  location prior (a fixed prior of the right shape), variance and covariance terms, backward and
  SGD. The PyTorch side is ``benchmarks/torch_otcxr.py``, a port checked against the JAX loss on
  the same weights and inputs (``tests/test_compare_pytorch.py``).

Precisions (``--precision``): ``float32``, and ``bfloat16`` (JAX: the project's
``train.compute_dtype='bfloat16'``, bf16 activations and float32 parameters; PyTorch:
``torch.autocast('cpu'/'cuda', torch.bfloat16)``). PyTorch runs channels-last.

JAX's step is the train loop's own (``training.state.make_train_step``), jitted with the state
donated; images/s counts the batch (an OTCXR image is two views). Each case compiles/warms both
sides, then runs ``--rounds`` rounds of ``--steps`` timed steps of JAX followed by the same of
PyTorch, so background load on a shared machine falls on both alike. The table gives the median
step of each side as images/s and the ratio JAX / PyTorch (above 1: JAX faster). ``--json``
writes every step time, the machine, versions, threads and the load averages.

``--jax-only`` skips PyTorch (the JAX half alone, e.g. where no PyTorch is installed).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Mapping, Sequence

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
if not __package__:  # run as a file: make the repository root importable
  sys.path.insert(0, str(ROOT))

SETTINGS = ("demo", "resnet18_224", "resnet50_224")
STEPS = ("encoder", "otcxr")
PRECISIONS = ("float32", "bfloat16")
NUM_CLASSES = 14
LEARNING_RATE = 1e-3


# ---------------------------------------------------------------------------------------------
# Shared by both halves (stdlib and numpy only).


def dense_grid(model: Mapping[str, Any], image_size: int) -> int:
  """Side of the encoder's last map: every strided convolution (padding k // 2) halves with
  rounding up, as ``ResNet.stage_strides`` documents."""
  up = lambda n, s: -(-n // s)
  side = up(up(image_size, 2), 2) if model["stem"] == "imagenet" else up(image_size,
                                                                         model["stem_stride"])
  for _ in range(model.get("num_stages", 4) - 1):
    side = up(side, 2)
  return side


def location_matrix(batch: int, grid: int) -> np.ndarray:
  """A fixed (B, N, N) location prior: squared distances, in cells, between the cells of a grid
  and those of the same grid shifted by half a cell (views offset by half a cell)."""
  centres = np.stack(np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij"), -1)
  pos_s = centres.reshape(-1, 2).astype(np.float32)
  pos_t = pos_s + 0.5
  d2 = np.sum(np.square(pos_s[:, None, :] - pos_t[None, :, :]), axis=-1)
  return np.broadcast_to(d2, (batch,) + d2.shape).astype(np.float32)


def machine_info() -> dict[str, Any]:
  cpu = platform.processor() or platform.machine()
  flags: set[str] = set()
  try:
    for line in open("/proc/cpuinfo"):
      if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
      if line.startswith("flags"):
        flags = set(line.split(":", 1)[1].split())
  except OSError:
    pass
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  return {"cpu": cpu, "cores": cores,
          "isa": sorted(f for f in flags if f.startswith(("avx512_bf16", "amx", "avx512f")))
          or sorted(f for f in flags if f.startswith("avx2")),
          "python": platform.python_version(), "load_average": list(os.getloadavg())}


# ---------------------------------------------------------------------------------------------
# The PyTorch worker: JSON lines on stdin, JSON lines on stdout.


def worker() -> None:
  sys.path.insert(0, str(HERE))
  import torch  # noqa: PLC0415
  import torch_otcxr  # noqa: PLC0415

  out = sys.stdout
  sys.stdout = sys.stderr  # anything printed by libraries stays off the protocol channel
  reply = lambda obj: (out.write(json.dumps(obj) + "\n"), out.flush())
  step = None
  for line in sys.stdin:
    cmd = json.loads(line)
    try:
      if cmd["cmd"] == "info":
        if cmd.get("threads"):
          torch.set_num_threads(int(cmd["threads"]))
        reply({"torch": torch.__version__, "threads": torch.get_num_threads(),
               "mkldnn": bool(torch.backends.mkldnn.is_available()),
               "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None})
      elif cmd["cmd"] == "build":
        spec = dict(cmd["spec"])
        step = None  # the last case's model and inputs go before the next one's are built
        if torch.cuda.is_available():
          torch.cuda.empty_cache()
        if spec["step"] == "otcxr" and spec["objective"]["location_weight"]:
          grid = dense_grid(spec["model"], spec["image_size"])
          spec["location"] = location_matrix(spec["batch_size"], grid)
        weights = dict(np.load(cmd["weights"])) if cmd.get("weights") else None
        step = torch_otcxr.Step(spec, weights)
        if cmd.get("inputs"):
          step.set_inputs(dict(np.load(cmd["inputs"])))
        reply({"ok": True})
      elif cmd["cmd"] == "loss":
        with torch.no_grad():
          loss, parts = step.loss()
        reply({"loss": float(loss), **{k: float(v) for k, v in parts.items()}})
      elif cmd["cmd"] == "time":
        reply({"times": step.timed(int(cmd["n"]))})
      elif cmd["cmd"] == "quit":
        reply({"ok": True})
        return
      else:
        reply({"error": f"unknown command {cmd['cmd']!r}"})
    except Exception as e:  # reported to the driver, which raises it
      reply({"error": f"{type(e).__name__}: {e}"})


class TorchWorker:
  """The PyTorch half in its own process (``python compare_pytorch.py --worker``)."""

  def __init__(self, python: str, threads: int | None = None):
    env = dict(os.environ)
    self.proc = subprocess.Popen([python, str(pathlib.Path(__file__).resolve()), "--worker"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                 cwd=tempfile.gettempdir(), env=env)
    self.info = self.call({"cmd": "info", "threads": threads})

  def call(self, cmd: Mapping[str, Any]) -> dict[str, Any]:
    self.proc.stdin.write(json.dumps(cmd) + "\n")
    self.proc.stdin.flush()
    line = self.proc.stdout.readline()
    if not line:
      raise RuntimeError(f"the PyTorch worker exited (status {self.proc.wait()}); see its stderr")
    reply = json.loads(line)
    if "error" in reply:
      raise RuntimeError(f"PyTorch worker: {reply['error']}")
    return reply

  def close(self) -> None:
    if self.proc.poll() is None:
      try:
        self.call({"cmd": "quit"})
      except (RuntimeError, BrokenPipeError):
        pass
      self.proc.wait(timeout=30)


def torch_importable(python: str) -> bool:
  """Whether ``python`` imports torch (a clear check, used by the test to decide what to run)."""
  try:
    return subprocess.run([python, "-c", "import torch, numpy"], cwd=tempfile.gettempdir(),
                          capture_output=True, timeout=120).returncode == 0
  except (OSError, subprocess.TimeoutExpired):
    return False


# ---------------------------------------------------------------------------------------------
# The JAX half.


def make_config(setting: str, precision: str = "float32", *, batch: int | None = None,
                image_size: int | None = None, overrides: Mapping[str, Any] | None = None):
  """The experiment config of a setting (module docstring), validated; ``overrides`` maps dotted
  field names to values (e.g. ``{'model.width': 0.125}`` for a tiny test)."""
  import importlib.util  # noqa: PLC0415

  from otcxr_jax import config_lib, modes  # noqa: PLC0415

  if setting == "demo":
    spec = importlib.util.spec_from_file_location("demo_config", ROOT / "configs" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config()
    # The paper's objective: the demo's image-level BYOL term (an EMA teacher) and its
    # per-position variance/covariance are not ported.
    c.objective.global_weight = 0.0
    c.objective.teacher_tau = 0.0
    c.objective.varcov_per_position = False
  elif setting in ("resnet18_224", "resnet50_224"):
    c = config_lib.base_config()
    c.model.encoder = setting.split("_")[0]
    c.data.image_size = 224
    c.train.batch_size = 32
  else:
    raise ValueError(f"setting must be one of {SETTINGS}, got {setting!r}")
  if precision not in PRECISIONS:
    raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
  c.train.compute_dtype = precision
  if batch:
    c.train.batch_size = batch
  if image_size:
    c.data.image_size = image_size
  for field, value in (overrides or {}).items():
    *parents, leaf = field.split(".")
    node = c
    for name in parents:
      node = node[name]
    node[leaf] = value
  modes.validate(c)
  return c


def torch_spec(config, step: str, precision: str, tf32: bool = False) -> dict[str, Any]:
  """What the PyTorch worker builds: the same network, sizes and objective."""
  from otcxr_jax import config_lib  # noqa: PLC0415
  from otcxr_jax.models import factory  # noqa: PLC0415

  m = config.model
  if not m.encoder.startswith("resnet"):
    raise ValueError(f"only ResNet encoders are ported, got {m.encoder!r}")
  if m.dense_stage != "dense":
    raise ValueError("only dense_stage='dense' is ported")
  objective = {k: (list(v) if isinstance(v, tuple) else v) for k, v in
               config_lib.objective_config(config).__dict__.items()}
  return {
      "step": step, "precision": precision, "tf32": tf32, "batch_size": config.train.batch_size,
      "image_size": config.data.image_size, "num_classes": NUM_CLASSES,
      "learning_rate": LEARNING_RATE, "objective": objective,
      "model": {"depth": int(m.encoder[len("resnet"):]), "width": m.width,
                "in_channels": m.in_channels, "stem": m.stem,
                "stem_stride": factory.stem_stride(m), "num_stages": m.num_stages,
                "norm": m.norm,
                "norm_groups": m.norm_groups, "projector_hidden": m.projector_hidden,
                "projector_dim": m.projector_dim, "projector_layers": m.projector_layers,
                "cvsim": m.cvsim, "cvsim_heads": m.cvsim_heads,
                "cvsim_mlp_ratio": m.cvsim_mlp_ratio},
  }


def _classifier(config, rngs):
  from flax import nnx  # noqa: PLC0415

  from otcxr_jax.models import factory  # noqa: PLC0415

  class Classifier(nnx.Module):
    """Encoder, pooled features, linear head (the encoder-only step)."""

    def __init__(self):
      self.encoder = factory.build_encoder(config, rngs)
      self.head = nnx.Linear(self.encoder.num_features, NUM_CLASSES, rngs=rngs)

    def __call__(self, images):
      return self.head(self.encoder(images).pooled)

  return Classifier()


def build_jax(config, step: str, seed: int = 0):
  """``(model, loss_fn, inputs)``: the network, ``loss_fn(model, batch, rng)`` and a random
  batch (NHWC numpy arrays) for ``step``."""
  import dataclasses  # noqa: PLC0415

  import jax.numpy as jnp  # noqa: PLC0415
  import optax  # noqa: PLC0415
  from flax import nnx  # noqa: PLC0415

  from otcxr_jax import config_lib, methods  # noqa: PLC0415
  from otcxr_jax.models import factory  # noqa: PLC0415
  from otcxr_jax.objectives import otcxr as otcxr_objective  # noqa: PLC0415

  rng = np.random.default_rng(seed)
  b, s, c = config.train.batch_size, config.data.image_size, config.model.in_channels
  image = lambda: rng.uniform(size=(b, s, s, c)).astype(np.float32)
  if step == "encoder":
    model = _classifier(config, nnx.Rngs(seed))
    inputs = {"images": image(),
              "labels": rng.integers(0, 2, (b, NUM_CLASSES)).astype(np.float32)}

    def loss_fn(model, batch, rng):
      logits = model(batch["images"]).astype(jnp.float32)
      return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, batch["labels"])), {}
  elif step == "otcxr":
    model = methods.build_model(config, nnx.Rngs(seed))
    objective = dataclasses.asdict(config_lib.objective_config(config))
    inputs = {"view_s": image(), "view_t": image()}
    if objective["location_weight"]:
      grid = dense_grid({"stem": config.model.stem, "num_stages": config.model.num_stages,
                         "stem_stride": factory.stem_stride(config.model)}, s)
      inputs["location"] = location_matrix(b, grid)

    def loss_fn(model, batch, rng):
      out = model(batch["view_s"], batch["view_t"])
      loss, aux = otcxr_objective.otcxr_loss(out.q_s, out.q_t, location=batch.get("location"),
                                             **objective)
      return loss, {k: aux[k] for k in ("ot", "var", "cov")}
  else:
    raise ValueError(f"step must be one of {STEPS}, got {step!r}")
  return model, loss_fn, inputs


def jax_weights(model) -> dict[str, np.ndarray]:
  """Every variable of ``model`` under its PyTorch name (``torch_otcxr`` mirrors the module
  tree) in PyTorch's layout: kernels transposed to ``(out, in[, kh, kw])``, norm ``scale`` ->
  ``weight``, BatchNorm ``mean``/``var`` -> ``running_mean``/``running_var``."""
  import jax  # noqa: PLC0415
  from flax import nnx  # noqa: PLC0415

  leaves = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean",
            "var": "running_var"}
  flat = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(nnx.state(model)))[0]
  out = {}
  for path, value in flat:
    keys = [str(getattr(k, "key", getattr(k, "idx", k))) for k in path]
    value = np.asarray(value, np.float32)
    if keys[-1] == "kernel":
      value = np.transpose(value, (3, 2, 0, 1)) if value.ndim == 4 else value.T
    out[".".join(keys[:-1] + [leaves[keys[-1]]])] = value
  return out


class JaxStep:
  """The train loop's step (``training.state.make_train_step``) with SGD, jitted, state donated."""

  def __init__(self, config, step: str, seed: int = 0):
    import jax  # noqa: PLC0415
    import optax  # noqa: PLC0415

    from otcxr_jax.training import state as state_lib  # noqa: PLC0415

    self.model, loss_fn, inputs = build_jax(config, step, seed)
    self.loss_fn = loss_fn
    self.inputs = inputs
    tx = optax.sgd(LEARNING_RATE, momentum=0.9)
    graphdef, self.state = state_lib.create_train_state(
        self.model, tx, jax.random.key_data(jax.random.key(seed)))
    self.batch = jax.device_put(inputs)
    start = time.perf_counter()
    self.fn = jax.jit(state_lib.make_train_step(graphdef, loss_fn, tx),
                      donate_argnums=(0,)).lower(self.state, self.batch).compile()
    self.compile_s = time.perf_counter() - start
    self.flops = step_flops(self.fn)

  def __call__(self) -> float:
    import jax  # noqa: PLC0415

    self.state, metrics = self.fn(self.state, self.batch)
    return float(jax.block_until_ready(metrics["loss"]))

  def timed(self, n: int) -> list[float]:
    times = []
    for _ in range(n):
      start = time.perf_counter()
      self()
      times.append(time.perf_counter() - start)
    return times


def step_flops(compiled) -> float | None:
  """Floating-point operations of one call of a compiled function, by XLA's cost analysis (the
  same count serves both sides: PyTorch runs the same network); None where the backend gives none."""
  try:
    analysis = compiled.cost_analysis()
  except Exception:  # noqa: BLE001 (a backend without cost analysis)
    return None
  if isinstance(analysis, (list, tuple)):  # older jax: one dict per device program
    analysis = analysis[0] if analysis else None
  flops = (analysis or {}).get("flops")
  return float(flops) if flops and flops > 0 else None


# Dense peak rates (TFLOP/s) of the matrix units, from the vendors' data sheets: bf16, and TF32 for
# float32 (JAX's default precision on these GPUs lets float32 convolutions and products use TF32).
PEAK_TFLOPS = {"H100": {"bfloat16": 989.4, "float32": 494.7},
               "H200": {"bfloat16": 989.4, "float32": 494.7},
               "A100": {"bfloat16": 312.0, "float32": 156.0}}


def peak_tflops(device_kind: str, precision: str) -> float | None:
  """The data-sheet peak of a GPU named in ``device_kind`` (e.g. 'NVIDIA H100 80GB HBM3')."""
  for name, peaks in PEAK_TFLOPS.items():
    if name in device_kind:
      return peaks[precision]
  return None


def jax_loss(config, step: str, seed: int = 0) -> tuple[dict[str, float], Any, dict]:
  """The JAX loss (train mode, no update) of a freshly built model: ``(values, model, inputs)``."""
  import jax  # noqa: PLC0415

  model, loss_fn, inputs = build_jax(config, step, seed)
  model.train()
  loss, aux = loss_fn(model, jax.device_put(inputs), None)
  return {"loss": float(loss), **{k: float(v) for k, v in aux.items()}}, model, inputs


def check_against_torch(worker: TorchWorker, config, step: str, precision: str,
                        seed: int = 0) -> dict[str, dict[str, float]]:
  """The loss terms of JAX and of the PyTorch port on the same weights and inputs."""
  values, model, inputs = jax_loss(config, step, seed)
  with tempfile.TemporaryDirectory() as tmp:
    weights_path, inputs_path = f"{tmp}/weights.npz", f"{tmp}/inputs.npz"
    np.savez(weights_path, **jax_weights(model))
    np.savez(inputs_path, **inputs)
    worker.call({"cmd": "build", "spec": torch_spec(config, step, precision),
                 "weights": weights_path, "inputs": inputs_path})
  return {"jax": values, "torch": worker.call({"cmd": "loss"})}


# ---------------------------------------------------------------------------------------------
# The comparison.


def compare(settings: Sequence[str], steps: Sequence[str], precisions: Sequence[str], *,
            torch_python: str | None, rounds: int = 3, steps_per_round: int = 3, warmup: int = 1,
            batch: int | None = None, image_size: int | None = None, threads: int | None = None,
            tf32: bool = False, overrides: Mapping[str, Any] | None = None, log=print) -> dict[str, Any]:
  """Runs every case, JAX and PyTorch rounds alternating; returns the JSON-serialisable result."""
  import jax  # noqa: PLC0415
  import jaxlib  # noqa: PLC0415

  worker = TorchWorker(torch_python, threads) if torch_python else None
  device = jax.devices()[0]
  result: dict[str, Any] = {
      "date": datetime.datetime.now().isoformat(timespec="seconds"),
      "machine": machine_info(),
      "jax": {"version": jax.__version__, "jaxlib": jaxlib.__version__,
              "device": f"{device.platform}: {device.device_kind}",
              "xla_flags": os.environ.get("XLA_FLAGS", "")},
      "torch": worker.info if worker else None,
      "tf32": tf32, "rounds": rounds, "steps_per_round": steps_per_round, "warmup": warmup, "cases": [],
  }
  try:
    for setting in settings:
      for step in steps:
        for precision in precisions:
          config = make_config(setting, precision, batch=batch, image_size=image_size,
                               overrides=overrides)
          case = {"setting": setting, "step": step, "precision": precision,
                  "batch_size": config.train.batch_size, "image_size": config.data.image_size}
          log(f"[{setting} {step} {precision}] compiling JAX, building PyTorch ...")
          jax_step = JaxStep(config, step)
          case["jax_compile_s"] = jax_step.compile_s
          case["flops_per_step"] = jax_step.flops
          if worker:
            worker.call({"cmd": "build", "spec": torch_spec(config, step, precision, tf32)})
          jax_step.timed(warmup)
          if worker:
            worker.call({"cmd": "time", "n": warmup})
          jax_times, torch_times = [], []
          for r in range(rounds):
            jax_times += jax_step.timed(steps_per_round)
            if worker:
              torch_times += worker.call({"cmd": "time", "n": steps_per_round})["times"]
          b = config.train.batch_size
          case["jax_step_s"] = jax_times
          case["jax_images_per_s"] = b / statistics.median(jax_times)
          if worker:
            case["torch_step_s"] = torch_times
            case["torch_images_per_s"] = b / statistics.median(torch_times)
            case["ratio"] = case["jax_images_per_s"] / case["torch_images_per_s"]
          add_utilisation(case, peak_tflops(device.device_kind, precision))
          log(format_row(case))
          result["cases"].append(case)
          del jax_step
  finally:
    if worker:
      worker.close()
  result["machine"]["load_average_end"] = list(os.getloadavg())
  return result


def add_utilisation(case: dict[str, Any], peak: float | None) -> None:
  """Achieved TFLOP/s of each side (the step's FLOPs over its median time) and, where the device's
  peak is known, model FLOP utilisation (MFU) = achieved / peak."""
  flops = case.get("flops_per_step")
  if not flops:
    return
  case["peak_tflops"] = peak
  for side in ("jax", "torch"):
    ips = case.get(f"{side}_images_per_s")
    if ips:
      tflops = flops * ips / case["batch_size"] / 1e12
      case[f"{side}_tflops"] = tflops
      if peak:
        case[f"{side}_mfu"] = tflops / peak


def format_utilisation(case: Mapping[str, Any]) -> str:
  def side(name):
    t = case.get(f"{name}_tflops")
    if t is None:
      return f"{'-':>22}"
    mfu = case.get(f"{name}_mfu")
    return f"{t:>13.1f}" + (f"{mfu:>8.1%}" if mfu is not None else f"{'-':>8}") + " "
  return (f"{case['setting']:<14}{case['step']:<9}{case['precision']:<10}"
          f"{case['flops_per_step'] / 1e9:>12.1f}" + side("jax") + side("torch"))


def format_row(case: Mapping[str, Any]) -> str:
  torch_ips = case.get("torch_images_per_s")
  return (f"{case['setting']:<14}{case['step']:<9}{case['precision']:<10}"
          f"{case['batch_size']:>6}{case['image_size']:>6}{case['jax_images_per_s']:>11.1f}"
          + (f"{torch_ips:>13.1f}{case['ratio']:>7.2f}x" if torch_ips else f"{'-':>13}{'-':>8}"))


def format_report(result: Mapping[str, Any]) -> str:
  m, j, t = result["machine"], result["jax"], result["torch"]
  lines = [
      f"machine   {m['cpu']}, {m['cores']} cores, {' '.join(m['isa'])}, Python {m['python']}",
      f"jax       {j['version']} (jaxlib {j['jaxlib']}), {j['device']}"
      + (f", XLA_FLAGS={j['xla_flags']}" if j["xla_flags"] else ""),
      ("pytorch   " + (f"{t['torch']}, {t['threads']} threads, oneDNN "
                       f"{'on' if t['mkldnn'] else 'off'}, channels-last"
                       + (f", {t['cuda']}" if t.get("cuda") else "")) if t else "pytorch   -"),
      f"timing    median of {result['rounds']} rounds x {result['steps_per_round']} steps per "
      f"side, alternating, after {result['warmup']} warm-up",
      f"load      {' / '.join(f'{x:.2f}' for x in m['load_average'])} at start, "
      f"{' / '.join(f'{x:.2f}' for x in m['load_average_end'])} at end",
      "",
      f"{'setting':<14}{'step':<9}{'precision':<10}{'batch':>6}{'size':>6}{'JAX img/s':>11}"
      f"{'torch img/s':>13}{'ratio':>8}",
  ]
  lines += [format_row(case) for case in result["cases"]]
  if any(case.get("flops_per_step") for case in result["cases"]):
    lines += ["", "model FLOP utilisation: the step's FLOPs (XLA cost analysis of the JAX step) over "
              "each side's median step" + ("; peak = data-sheet dense bf16, TF32 for float32"
                                           if any(c.get("peak_tflops") for c in result["cases"])
                                           else " (no peak known for this device: no MFU)"),
              f"{'setting':<14}{'step':<9}{'precision':<10}{'GFLOP/step':>12}"
              f"{'JAX TFLOP/s':>13}{'MFU':>8} {'torch TFLOP/s':>13}{'MFU':>8}"]
    lines += [format_utilisation(case) for case in result["cases"] if case.get("flops_per_step")]
  return "\n".join(lines)


def _split(value: str, allowed: Sequence[str], name: str) -> list[str]:
  items = [v.strip() for v in value.split(",") if v.strip()]
  bad = [v for v in items if v not in allowed]
  if bad or not items:
    raise SystemExit(f"--{name}: expected a comma-separated subset of {allowed}, got {value!r}")
  return items


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--setting", default="resnet18_224", help=f"subset of {SETTINGS}")
  parser.add_argument("--step", default="encoder,otcxr", help=f"subset of {STEPS}")
  parser.add_argument("--precision", default="float32,bfloat16", help=f"subset of {PRECISIONS}")
  parser.add_argument("--torch-python", default=sys.executable,
                      help="Python that runs the PyTorch half (default: this one)")
  parser.add_argument("--jax-only", action="store_true", help="time the JAX half alone")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--steps", type=int, default=3, help="timed steps per side and round")
  parser.add_argument("--warmup", type=int, default=1)
  parser.add_argument("--batch", type=int, default=None)
  parser.add_argument("--image-size", type=int, default=None)
  parser.add_argument("--threads", type=int, default=None,
                      help="PyTorch intra-op threads (default: PyTorch's own, the cores)")
  parser.add_argument("--tf32", action="store_true",
                      help="GPU: let PyTorch's float32 use TF32 (JAX's default GPU precision does)")
  parser.add_argument("--json", default=None, help="write the result here")
  args = parser.parse_args(argv)
  if args.worker:
    worker()
    return 0
  if min(args.rounds, args.steps) < 1 or args.warmup < 0:
    raise SystemExit("--rounds and --steps must be >= 1, --warmup >= 0")
  torch_python = None if args.jax_only else args.torch_python
  if torch_python and not torch_importable(torch_python):
    raise SystemExit(f"{torch_python} cannot import torch: install requirements-bench.txt, give "
                     "--torch-python, or pass --jax-only")
  result = compare(_split(args.setting, SETTINGS, "setting"), _split(args.step, STEPS, "step"),
                   _split(args.precision, PRECISIONS, "precision"), torch_python=torch_python,
                   rounds=args.rounds, steps_per_round=args.steps, warmup=args.warmup,
                   batch=args.batch, image_size=args.image_size, threads=args.threads,
                   tf32=args.tf32, log=lambda s: print(s, file=sys.stderr, flush=True))
  print(format_report(result))
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(result, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
