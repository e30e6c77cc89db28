r"""Minimal reproduction: one 3x3 convolution, forward and backward, JAX (XLA CPU) against PyTorch.

    python benchmarks/conv_repro.py [--torch-python /path/to/python] [--batch 8] [--size 224] \
        [--channels 64] [--dtype float32,bfloat16] [--variants default,onednn,...] [--json out]

The whole of ResNet-18's cost on a CPU is convolutions like this one (stage 1 at 224² is 3x3,
64 -> 64 channels on a 56x56 map; at the input side of the network the maps are larger). Each
side computes ``y = conv(x, w)`` and both gradients for a given cotangent ``g``
(``dx = conv_transpose(g, w)``, ``dw = corr(x, g)``): three convolutions of
``2·B·H·W·C_in·C_out·9`` FLOPs each, reported as GFLOP/s.

* JAX: ``jax.vjp`` of ``lax.conv_general_dilated`` (stride 1, SAME padding), jitted; layout
  ``NHWC``/``HWIO`` (Flax's) or ``NCHW``/``OIHW`` (``--layouts``), in the given dtype.
* PyTorch: ``F.conv2d`` with ``y.backward(g)``, channels-last (oneDNN's preferred layout), in
  the given dtype (bf16 tensors, not autocast, so both sides run the same arithmetic).

Every JAX variant is a fresh process with its own ``XLA_FLAGS`` (flags are read when the backend
starts); the variants and PyTorch are run in turn, round after round (``--rounds``), each process
timing ``--iters`` calls after ``--warmup``, so background load falls on all of them alike. The
table gives each variant's median over all rounds and its ratio to PyTorch's (above 1: faster
than PyTorch). A variant whose flags XLA rejects is reported as failed, with the error.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

#: name -> XLA_FLAGS of each JAX variant (all on top of the environment's XLA_FLAGS).
#: jaxlib 0.10.2 sends every convolution to YNNPACK by default (``__ynn_fusion`` in the compiled
#: HLO); listing only dots as YNN fusions leaves the convolutions to XLA's own (Eigen) kernels.
#: The oneDNN and XNNPACK flags are accepted but leave the convolutions' HLO unchanged here.
VARIANTS = {
    "default": "",
    "eigen_conv": "--xla_cpu_experimental_ynn_fusion_type=individual_dot",
    "onednn": ("--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_custom_call=true "
               "--xla_cpu_experimental_onednn_fusion_type=individual_convolution"),
    "onednn_eigen_conv": ("--xla_cpu_experimental_ynn_fusion_type=individual_dot "
                          "--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_custom_call=true "
                          "--xla_cpu_experimental_onednn_fusion_type=individual_convolution"),
    "xnn_conv": ("--xla_cpu_experimental_ynn_fusion_type=individual_dot "
                 "--xla_cpu_experimental_xnn_fusion_type=individual_convolution"),
    "no_xnnpack": "--xla_cpu_use_xnnpack=false",
    "no_thunk_runtime": "--xla_cpu_use_thunk_runtime=false",
    "single_thread_eigen": "--xla_cpu_multi_thread_eigen=false",
}

#: What is timed: all three convolutions, or one of them.
PARTS = ("all", "fwd", "dx", "dw")


def flops(batch: int, size: int, channels: int, part: str = "all") -> float:
  return (3 if part == "all" else 1) * 2.0 * batch * size * size * channels * channels * 9


def _time(call, iters: int, warmup: int) -> list[float]:
  for _ in range(warmup):
    call()
  times = []
  for _ in range(iters):
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
  return times


def jax_worker(args) -> dict:
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415
  import numpy as np  # noqa: PLC0415

  dtype = jnp.dtype(args.dtype)
  rng = np.random.default_rng(0)
  b, s, c = args.batch, args.size, args.channels
  if args.layout == "NHWC":
    dims, x_shape, w_shape = ("NHWC", "HWIO", "NHWC"), (b, s, s, c), (3, 3, c, c)
  else:
    dims, x_shape, w_shape = ("NCHW", "OIHW", "NCHW"), (b, c, s, s), (c, c, 3, 3)
  x, g = (jnp.asarray(rng.standard_normal(x_shape), dtype) for _ in range(2))
  w = jnp.asarray(rng.standard_normal(w_shape) * 0.05, dtype)

  def conv(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dims)

  def fwd_bwd(x, w, g):
    y, vjp = jax.vjp(conv, x, w)
    return (y, *vjp(g))

  fn = {"all": fwd_bwd, "fwd": lambda x, w, g: conv(x, w),
        "dx": lambda x, w, g: jax.vjp(lambda x: conv(x, w), x)[1](g),
        "dw": lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g)}[args.part]
  compiled = jax.jit(fn).lower(x, w, g).compile()
  text = compiled.as_text() or ""
  call = lambda: jax.block_until_ready(compiled(x, w, g))
  return {"times": _time(call, args.iters, args.warmup), "jax": jax.__version__,
          "custom_calls": sorted({line.split("custom_call_target=\"")[1].split("\"")[0]
                                  for line in text.splitlines() if "custom_call_target" in line}),
          "library_fusions": sorted({kind for kind in ("__ynn_fusion", "__xnn_fusion",
                                                        "__onednn_fusion") if kind in text})}


def torch_worker(args) -> dict:
  import numpy as np  # noqa: PLC0415
  import torch  # noqa: PLC0415
  import torch.nn.functional as F  # noqa: PLC0415

  dtype = getattr(torch, args.dtype)
  rng = np.random.default_rng(0)
  b, s, c = args.batch, args.size, args.channels
  fmt = torch.channels_last if args.layout == "NHWC" else torch.contiguous_format
  tensor = lambda shape, scale=1.0: torch.from_numpy(
      (rng.standard_normal(shape) * scale).astype(np.float32)).to(dtype)
  x = tensor((b, c, s, s)).to(memory_format=fmt).requires_grad_()
  g = tensor((b, c, s, s)).to(memory_format=fmt)
  w = tensor((c, c, 3, 3), 0.05).to(memory_format=fmt).requires_grad_()

  def call():
    x.grad = w.grad = None
    if args.part == "all":
      F.conv2d(x, w, padding=1).backward(g)
    elif args.part == "fwd":
      with torch.no_grad():
        F.conv2d(x, w, padding=1)
    else:
      mask = [args.part == "dx", args.part == "dw", False]
      torch.ops.aten.convolution_backward(g, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0],
                                          1, mask)

  return {"times": _time(call, args.iters, args.warmup), "torch": torch.__version__,
          "threads": torch.get_num_threads()}


def _run(cmd: list[str], env: dict) -> dict:
  proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                        cwd=tempfile.gettempdir())
  lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
  if proc.returncode or not lines:
    return {"error": (proc.stderr.strip().splitlines() or [f"status {proc.returncode}"])[-1]}
  return json.loads(lines[-1])


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--worker", choices=("jax", "torch"), default=None, help=argparse.SUPPRESS)
  parser.add_argument("--layout", default="NHWC", help=argparse.SUPPRESS)
  parser.add_argument("--part", default="all", choices=PARTS,
                      help="time all three convolutions, or the forward, dx or dw one alone")
  parser.add_argument("--torch-python", default=sys.executable)
  parser.add_argument("--jax-python", default=sys.executable)
  parser.add_argument("--variants", default="default,eigen_conv,onednn_eigen_conv")
  parser.add_argument("--layouts", default="NHWC", help="JAX layouts: NHWC and/or NCHW")
  parser.add_argument("--dtype", default="float32,bfloat16")
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--size", type=int, default=224)
  parser.add_argument("--channels", type=int, default=64)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--iters", type=int, default=3)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--json", default=None)
  args = parser.parse_args(argv)
  if args.worker:
    result = (jax_worker if args.worker == "jax" else torch_worker)(args)
    print(json.dumps(result))
    return 0

  me = str(pathlib.Path(__file__).resolve())
  common = ["--batch", str(args.batch), "--size", str(args.size), "--channels",
            str(args.channels), "--iters", str(args.iters), "--warmup", str(args.warmup),
            "--part", args.part]
  variants = [v for v in args.variants.split(",") if v]
  unknown = [v for v in variants if v not in VARIANTS]
  if unknown:
    raise SystemExit(f"unknown variants {unknown}; known: {list(VARIANTS)}")
  layouts = [l for l in args.layouts.split(",") if l]
  base_flags = os.environ.get("XLA_FLAGS", "")
  rows = {}
  load_start = os.getloadavg()
  for dtype in [d for d in args.dtype.split(",") if d]:
    cases = [(f"jax {v} {l}", [args.jax_python, me, "--worker", "jax", "--layout", l],
              (base_flags + " " + VARIANTS[v]).strip()) for l in layouts for v in variants]
    cases.append(("pytorch channels-last", [args.torch_python, me, "--worker", "torch"],
                  base_flags))
    for name, *_ in cases:
      rows[(dtype, name)] = {"times": [], "errors": []}
    for _ in range(args.rounds):
      for name, cmd, flags in cases:
        env = dict(os.environ, XLA_FLAGS=flags)
        out = _run(cmd + common + ["--dtype", dtype], env)
        row = rows[(dtype, name)]
        if "error" in out:
          row["errors"].append(out["error"])
        else:
          row["times"] += out["times"]
          row.update({k: v for k, v in out.items() if k != "times"})
          row["flags"] = flags
        print(f"  {dtype} {name}: "
              + (out.get("error") or f"{1e3 * statistics.median(out['times']):.1f} ms"),
              file=sys.stderr, flush=True)
  gflop = flops(args.batch, args.size, args.channels, args.part) / 1e9
  what = {"all": "forward + both gradients", "fwd": "forward only", "dx": "input gradient only",
          "dw": "weight gradient only"}[args.part]
  print(f"one 3x3 convolution {args.channels}->{args.channels}, batch {args.batch}, "
        f"{args.size}x{args.size}, {what} ({gflop:.1f} GFLOP); "
        f"{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores; "
        f"median of {args.rounds} rounds x {args.iters} calls; load "
        f"{' / '.join(f'{x:.2f}' for x in load_start)} -> "
        f"{' / '.join(f'{x:.2f}' for x in os.getloadavg())}")
  print(f"{'dtype':<10}{'variant':<34}{'ms':>9}{'GFLOP/s':>9}{'vs torch':>10}  convolutions in")
  for dtype in [d for d in args.dtype.split(",") if d]:
    ref = rows[(dtype, "pytorch channels-last")]["times"]
    ref_ms = 1e3 * statistics.median(ref) if ref else None
    for (d, name), row in rows.items():
      if d != dtype:
        continue
      if not row["times"]:
        print(f"{dtype:<10}{name:<34}  failed: {row['errors'][0][:80]}")
        continue
      ms = 1e3 * statistics.median(row["times"])
      row["median_ms"] = ms
      ratio = f"{ref_ms / ms:>9.2f}x" if ref_ms else f"{'-':>10}"
      kernels = ",".join(k.strip("_").replace("_fusion", "") for k in row.get("library_fusions", []))
      print(f"{dtype:<10}{name:<34}{ms:>9.1f}{gflop / ms * 1e3:>9.0f}{ratio}  "
            + (kernels or ("oneDNN" if name.startswith("pytorch") else "XLA")))
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(
        {f"{d} {n}": r for (d, n), r in rows.items()}, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
