"""Seconds per pretraining step and peak memory of a config, measured in a fresh process.

A process's peak memory only describes one run when the process did nothing else, so
:func:`time_in_fresh_process` starts a new Python process per config, on the same devices, which
runs :func:`measure_step` and writes its result as JSON. The step timed is the train loop's own
(``loop.jit_train_step``); with a shared persistent compilation cache (:func:`compilation_cache`)
the process loads the step the pretraining run compiled instead of compiling it again.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import pathlib
import pickle
import resource
import subprocess
import sys
import time
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath
from flax import nnx
from jax.experimental.compilation_cache import compilation_cache as jax_cache

from otcxr_jax import methods
from otcxr_jax.training import loop
from otcxr_jax.training import optim
from otcxr_jax.training import sharding as shard_lib
from otcxr_jax.training import state as state_lib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
_PROC_STATUS = pathlib.Path("/proc/self/status")
_CHILD = "import sys; from benchmarks import step_timing; step_timing.child_main(*sys.argv[1:])"

#: How each ``memory_source`` value of :func:`measure_step` was measured.
MEMORY_SOURCES = {
    "device": "peak device memory (`memory_stats()['peak_bytes_in_use']`, largest over the "
              "devices; 'before model': `bytes_in_use` before the model was built)",
    "rss_vmhwm": "the timing process's RSS high-water mark (`VmHWM` of /proc/self/status; "
                 "`resource.getrusage`'s `ru_maxrss` would also count the process that launched "
                 "it), as the device reports no memory statistics; it includes the Python and "
                 "JAX runtime, measured alone as 'before model'",
    "rss_getrusage": "the timing process's RSS high-water mark "
                     "(`resource.getrusage(RUSAGE_SELF).ru_maxrss`), as the device reports no "
                     "memory statistics; it includes the Python and JAX runtime, measured alone "
                     "as 'before model'",
}


def rss_high_water() -> tuple[int, str]:
  """``(bytes, source)``: this process's resident-set high-water mark.

  On Linux ``VmHWM`` of ``/proc/self/status``: there ``getrusage``'s ``ru_maxrss`` also counts the
  address space the process had before its ``exec``, so a process launched by a large benchmark
  process would report the launcher's size. Elsewhere ``resource.getrusage(RUSAGE_SELF).ru_maxrss``
  (bytes on macOS, KiB on other systems).
  """
  if _PROC_STATUS.exists():
    for line in _PROC_STATUS.read_text().splitlines():
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) * 1024, "rss_vmhwm"
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return int(peak if sys.platform == "darwin" else peak * 1024), "rss_getrusage"


def device_memory(key: str) -> int | None:
  """The largest ``memory_stats()[key]`` over the local devices; None where unreported (CPU)."""
  stats = [d.memory_stats() for d in jax.local_devices()]
  if not all(s and key in s for s in stats):
    return None
  return max(int(s[key]) for s in stats)


def measure_step(config: ml_collections.ConfigDict, *, steps: int, warmup: int
                 ) -> dict[str, Any]:
  """Seconds per train step and peak memory of ``config``'s pretraining, in this process.

  The step is the train loop's over every device, on a random uint8 batch of
  ``train.batch_size`` images of side ``data.image_size``: compiled ahead of time, run ``warmup``
  times, then ``steps`` times, each call waited for; the median is reported. Peak memory is the
  devices' ``peak_bytes_in_use`` where ``memory_stats()`` reports it, else the process's RSS
  high-water mark (:func:`rss_high_water`); ``memory_before_bytes`` is the same measure before
  the model was built.
  """
  if not (isinstance(steps, int) and steps >= 1 and isinstance(warmup, int) and warmup >= 0):
    raise ValueError(f"steps must be an int >= 1 and warmup an int >= 0, got {steps!r}, "
                     f"{warmup!r}")
  on_device = device_memory("peak_bytes_in_use") is not None
  before, source = (device_memory("bytes_in_use"), "device") if on_device else rss_high_water()
  batch_size, size = config.train.batch_size, config.data.image_size
  mesh = shard_lib.make_mesh()
  shard_lib.check_batch_size(batch_size, mesh)
  model = methods.build_model(config, nnx.Rngs(config.seed))
  tx, _ = optim.pretraining_optimizer(config)
  graphdef, state = state_lib.create_train_state(
      model, tx, jax.random.key_data(jax.random.key(config.seed + 1)))
  state = shard_lib.replicate(state, mesh)
  step = loop.jit_train_step(graphdef, methods.make_loss_fn(config), tx, mesh,
                             target_decay=methods.target_decay(config))
  images = np.random.default_rng([config.seed, jax.process_index()]).integers(
      0, 256, (shard_lib.host_local_batch_size(batch_size), size, size,
               config.model.in_channels), dtype=np.uint8)
  batch = shard_lib.to_global({"image": images}, mesh)
  skipped = jax.device_put(jnp.zeros((), jnp.int32), shard_lib.replicated(mesh))
  start = time.perf_counter()
  compiled = step.lower(state, batch, skipped).compile()
  compile_s = time.perf_counter() - start
  seconds = []
  for i in range(warmup + steps):
    start = time.perf_counter()
    state, metrics, _, skipped = compiled(state, batch, skipped)
    jax.block_until_ready((state, metrics))
    if i >= warmup:
      seconds.append(time.perf_counter() - start)
  step_s = float(np.median(seconds))
  peak = device_memory("peak_bytes_in_use") if on_device else rss_high_water()[0]
  device = jax.devices()[0]
  return {
      "method": config.method, "batch_size": batch_size, "image_size": size,
      "devices": f"{jax.device_count()} x {device.device_kind} ({device.platform})",
      "compile_s": compile_s, "seconds_per_step": step_s, "images_per_s": batch_size / step_s,
      "steps": steps, "warmup": warmup,
      "memory_source": source, "peak_memory_bytes": peak, "memory_before_bytes": before,
      "date": datetime.datetime.now().isoformat(timespec="seconds"),
      "load_average": list(os.getloadavg()),
  }


@contextlib.contextmanager
def compilation_cache(directory: str | os.PathLike) -> Iterator[None]:
  """JAX's persistent compilation cache in ``directory`` while inside; the previous one after."""
  previous = jax.config.jax_compilation_cache_dir
  jax_cache.set_cache_dir(os.fspath(directory))
  jax_cache.reset_cache()
  try:
    yield
  finally:
    jax.config.update("jax_compilation_cache_dir", previous)
    jax_cache.reset_cache()


def _child_env() -> dict[str, str]:
  """This environment, with the repository importable and (on CPU) the same device count."""
  env = dict(os.environ)
  if jax.default_backend() == "cpu":
    env["JAX_NUM_CPU_DEVICES"] = str(jax.local_device_count())
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
  return env


def time_in_fresh_process(config: ml_collections.ConfigDict, path: str | os.PathLike, *,
                          steps: int, warmup: int, cache_dir: str | os.PathLike) -> dict:
  """:func:`measure_step` of ``config`` in a new Python process; its result, also in ``path``.

  Raises:
    RuntimeError: the process failed (its stderr's end is in the message).
  """
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  config_path = path.parent / f".{path.stem}.config.pkl"
  config_path.write_bytes(pickle.dumps(config))
  try:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(config_path), str(path), str(steps),
                          str(warmup), os.fspath(cache_dir)],
                         cwd=REPO_ROOT, env=_child_env(), capture_output=True, text=True,
                         check=False)
  finally:
    config_path.unlink()
  if out.returncode != 0:
    raise RuntimeError(f"the timing process for {path.stem} failed (exit {out.returncode}):\n"
                       f"{out.stderr[-3000:]}")
  return json.loads(path.read_text())


def child_main(config_path: str, out_path: str, steps: str, warmup: str, cache_dir: str) -> None:
  """The timing process (see :func:`time_in_fresh_process`)."""
  config = pickle.loads(pathlib.Path(config_path).read_bytes())
  with compilation_cache(cache_dir):
    result = measure_step(config, steps=int(steps), warmup=int(warmup))
  pathlib.Path(out_path).write_text(json.dumps(result, indent=2) + "\n")
