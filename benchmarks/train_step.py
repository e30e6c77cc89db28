r"""Speed of the OTCXR pretraining step, and the share of it spent in the encoder and in Sinkhorn.

    python benchmarks/train_step.py --config configs/demo.py [--config.train.batch_size=64] \
        [--steps 10] [--warmup 2] [--json out.json]

The model, loss and optimiser are built as :mod:`otcxr_jax.modes.pretrain` builds them, and the
train step is jitted with the train loop's data-parallel shardings over every device; the input is
a random uint8 batch of ``train.batch_size`` images of side ``data.image_size``, so no dataset is
read. The step and its components are compiled ahead of time (the step's compile time is
reported), run ``--warmup`` untimed rounds, then ``--steps`` rounds that call each of them once
in turn, every call ended by ``jax.block_until_ready``; each reports its median. Interleaving the
calls lets all of them see the same background load on a shared machine. The components are
jitted separately with the step's shapes and shardings:

* encoder: forward and backward of the encoder on both views (2B images), train-mode BatchNorm;
* Sinkhorn: :func:`otcxr_jax.objectives.ot.batched_transport` on random (B, N, D) tokens, forward
  and backward (for ``grad_mode='fixed'`` the backward pass goes through the cost only);
* rest: step - encoder - Sinkhorn (projector, CV-SIM, variance/covariance, optimiser,
  augmentation); augmentation (:func:`otcxr_jax.data.augment.two_views`) is also timed alone.

Separately compiled pieces lose the fusion and scheduling of the whole step, so the remainder is
an estimate (it can even come out negative when the pieces are timed slower than inside the step).
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import sys
import time
from typing import Any, Callable, Mapping

if not __package__:  # run as a file: make the repository root importable
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from flax import nnx  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from otcxr_jax import config_lib  # noqa: E402
from otcxr_jax import methods  # noqa: E402
from otcxr_jax.data import augment  # noqa: E402
from otcxr_jax.objectives import ot, otcxr  # noqa: E402
from otcxr_jax.training import optim  # noqa: E402
from otcxr_jax.training import sharding as shard_lib  # noqa: E402
from otcxr_jax.training import state as state_lib  # noqa: E402

#: Rows of the component table, in the order printed.
COMPONENTS: tuple[str, ...] = ("encoder", "sinkhorn", "rest", "augmentation")


def _compile(fn: Callable[..., Any], *args: Any, **jit_kwargs: Any):
  """``(compiled, seconds)``: ``jax.jit(fn, **jit_kwargs)`` lowered and compiled for ``args``."""
  start = time.perf_counter()
  compiled = jax.jit(fn, **jit_kwargs).lower(*args).compile()
  return compiled, time.perf_counter() - start


def _median_seconds(calls: Mapping[str, Callable[[], Any]], *, steps: int,
                    warmup: int) -> dict[str, float]:
  """Median wall time of each call over ``steps`` rounds, after ``warmup`` untimed rounds.

  Each round runs every call once, in order, and waits for its results before the next.
  """
  for _ in range(warmup):
    for call in calls.values():
      jax.block_until_ready(call())
  times: dict[str, list[float]] = {name: [] for name in calls}
  for _ in range(steps):
    for name, call in calls.items():
      start = time.perf_counter()
      jax.block_until_ready(call())
      times[name].append(time.perf_counter() - start)
  return {name: float(np.median(t)) for name, t in times.items()}


def _peak_memory_bytes() -> int | None:
  """Largest ``peak_bytes_in_use`` over local devices; None where the backend reports none."""
  peaks = [(d.memory_stats() or {}).get("peak_bytes_in_use") for d in jax.local_devices()]
  peaks = [p for p in peaks if p is not None]
  return max(peaks) if peaks else None


def _encoder_grad(graphdef: Any, dense_stage: str) -> Callable[..., Any]:
  """``f(params, rest, images)``: gradient of a scalar of the encoder's dense map, train mode.

  The updated BatchNorm statistics are returned as the train step returns them, so every stage
  runs forward even when ``dense_stage`` is not the last one.
  """

  def f(params, rest, images):
    def objective(p):
      encoder = state_lib.merge_model(graphdef, p, rest)
      encoder.train()
      out = encoder(images)
      dense = out.dense if dense_stage == "dense" else out.stages[dense_stage]
      return jnp.mean(jnp.square(dense.astype(jnp.float32))), state_lib.split_model(encoder)[2]

    return jax.grad(objective, has_aux=True)(params)

  return f


def _transport_grad(objective: otcxr.OTCXRObjectiveConfig) -> Callable[..., Any]:
  """``f(q_s, q_t)``: the batch-mean OT loss of ``otcxr_loss`` and its gradients."""

  def loss(q_s, q_t):
    # A location prior changes only the cost's values (and, unless lse_mode is set, selects
    # log-domain iterations): a constant offset of the right shape times the same solve.
    offset = (jnp.zeros(q_s.shape[:2] + (q_t.shape[1],), jnp.float32)
              if objective.location_weight else None)
    return jnp.mean(ot.batched_transport(
        q_s, q_t, epsilon=objective.epsilon, num_iters=objective.num_iters,
        cost=objective.cost, lse_mode=objective.lse_mode, grad_mode=objective.grad_mode,
        cost_offset=offset).loss)

  return jax.value_and_grad(loss, argnums=(0, 1))


def benchmark(config: ml_collections.ConfigDict, *, steps: int = 10,
              warmup: int = 2) -> dict[str, Any]:
  """Times the pretraining step of ``config`` and its components (module docstring).

  Args:
    config: a validated experiment config (``config_lib.validate``).
    steps: timed rounds (each call once per round; medians are reported), >= 1.
    warmup: untimed rounds first, >= 0.

  Returns:
    A JSON-serialisable dict: ``devices``, ``config`` (the summary), ``compile_s``, ``step_ms``,
    ``images_per_s``, ``components_ms`` (keys :data:`COMPONENTS`), ``peak_memory_bytes``
    (None where unreported), ``steps``, ``warmup``.
  """
  if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
    raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
  if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
    raise ValueError(f"warmup must be an integer >= 0, got {warmup!r}")
  batch_size, size = config.train.batch_size, config.data.image_size
  channels = config.model.in_channels
  mesh = shard_lib.make_mesh()
  shard_lib.check_batch_size(batch_size, mesh)
  repl, split = shard_lib.replicated(mesh), shard_lib.batch_sharded(mesh)
  # Each process makes its slice of every global batch, as the data pipeline does.
  local = shard_lib.host_local_batch_size(batch_size)
  np_rng = np.random.default_rng([config.seed, jax.process_index()])

  # The full train step, jitted as the train loop jits it.
  tx, _ = optim.pretraining_optimizer(config)
  model = methods.build_model(config, nnx.Rngs(config.seed))
  graphdef, state = state_lib.create_train_state(
      model, tx, jax.random.key_data(jax.random.key(config.seed + 1)))
  state = shard_lib.replicate(state, mesh)
  images = np_rng.integers(0, 256, (local, size, size, channels), dtype=np.uint8)
  batch = shard_lib.to_global({"image": images}, mesh)
  step_fn, compile_s = _compile(
      state_lib.make_train_step(graphdef, methods.make_loss_fn(config), tx), state, batch,
      in_shardings=(repl, split), out_shardings=(repl, repl), donate_argnums=(0,))

  def train_step():
    nonlocal state
    state, metrics = step_fn(state, batch)
    return state, metrics

  aug = config_lib.augment_config(config)
  key = jax.random.key_data(jax.random.key(config.seed + 2))
  aug_fn, _ = _compile(lambda k, x: augment.two_views(k, x.astype(jnp.float32) / 255.0, aug),
                       key, batch["image"], in_shardings=(repl, split))

  # Fresh copies of the encoder's variables: the train step donates the state's buffers.
  enc_graphdef, enc_params, enc_rest = state_lib.split_model(model.encoder)
  enc_params, enc_rest = shard_lib.replicate(jax.device_get((enc_params, enc_rest)), mesh)
  views = shard_lib.to_global(
      np_rng.uniform(size=(2 * local, size, size, channels)).astype(np.float32), mesh)
  enc_fn, _ = _compile(_encoder_grad(enc_graphdef, config.model.dense_stage),
                       enc_params, enc_rest, views, in_shardings=(repl, repl, split))

  view = jax.ShapeDtypeStruct((batch_size, size, size, channels), jnp.float32)
  out = jax.eval_shape(lambda p, r, x: state_lib.merge_model(graphdef, p, r)(x, x),
                       state.params, state.model_state, view)
  tokens = np_rng.standard_normal((2, local, *out.q_s.shape[1:])).astype(np.float32)
  q_s, q_t = shard_lib.to_global((tokens[0], tokens[1]), mesh)
  objective = config_lib.objective_config(config)
  ot_fn, _ = _compile(_transport_grad(objective), q_s, q_t, in_shardings=(split, split))

  seconds = _median_seconds({
      "step": train_step,
      "augmentation": lambda: aug_fn(key, batch["image"]),
      "encoder": lambda: enc_fn(enc_params, enc_rest, views),
      "sinkhorn": lambda: ot_fn(q_s, q_t),
  }, steps=steps, warmup=warmup)
  step_s, enc_s, ot_s = seconds["step"], seconds["encoder"], seconds["sinkhorn"]

  lse_mode = objective.lse_mode
  if lse_mode is None:  # as ot.batched_transport resolves it
    lse_mode = bool(objective.location_weight) or ot.default_lse_mode(
        objective.cost, objective.epsilon, objective.grad_mode)
  device = jax.devices()[0]
  return {
      "devices": {"kind": device.device_kind, "platform": device.platform,
                  "count": jax.device_count(), "jax_version": jax.__version__},
      "config": {"encoder": config.model.encoder, "width": config.model.width,
                 "image_size": size, "batch_size": batch_size, "dense_grid": list(out.grid),
                 "token_dim": out.q_s.shape[-1], "sinkhorn_iters": objective.num_iters,
                 "lse_mode": lse_mode, "grad_mode": objective.grad_mode,
                 "compute_dtype": config.train.compute_dtype},
      "compile_s": compile_s,
      "step_ms": 1e3 * step_s,
      "images_per_s": batch_size / step_s,
      "components_ms": {"encoder": 1e3 * enc_s, "sinkhorn": 1e3 * ot_s,
                        "rest": 1e3 * (step_s - enc_s - ot_s),
                        "augmentation": 1e3 * seconds["augmentation"]},
      "peak_memory_bytes": _peak_memory_bytes(),
      "steps": steps,
      "warmup": warmup,
  }


def format_report(result: dict[str, Any]) -> str:
  """The human-readable report of a :func:`benchmark` result."""
  d, c = result["devices"], result["config"]
  step_ms = result["step_ms"]
  peak = result["peak_memory_bytes"]
  lines = [
      f"devices      {d['count']} x {d['kind']} ({d['platform']}), jax {d['jax_version']}",
      f"config       {c['encoder']} width {c['width']}, image {c['image_size']}, "
      f"batch {c['batch_size']}, dense grid {c['dense_grid'][0]}x{c['dense_grid'][1]} "
      f"x {c['token_dim']}, Sinkhorn {c['sinkhorn_iters']} iterations "
      f"(lse_mode={c['lse_mode']}, grad_mode={c['grad_mode']}), {c['compute_dtype']}",
      f"compile      {result['compile_s']:.1f} s",
      f"step         {step_ms:.1f} ms/step, {result['images_per_s']:.1f} images/s "
      f"(median of {result['steps']} after {result['warmup']} warm-up)",
      "peak memory  " + ("n/a" if peak is None else f"{peak / 2**20:.1f} MiB"),
      "",
      f"{'component':<28}{'ms':>10}{'share':>9}",
  ]
  labels = {"encoder": "encoder fwd+bwd (2B images)", "sinkhorn": "Sinkhorn OT fwd+bwd",
            "rest": "rest (step - above)", "augmentation": "  of which augmentation"}
  for name in COMPONENTS:
    value = result["components_ms"][name]
    lines.append(f"{labels[name]:<28}{value:>10.1f}{value / step_ms:>9.1%}")
  lines.append(f"{'train step':<28}{step_ms:>10.1f}{1:>9.1%}")
  return "\n".join(lines)


def run(config: ml_collections.ConfigDict, *, steps: int = 10, warmup: int = 2,
        json_path: str | None = None) -> dict[str, Any]:
  """Benchmarks ``config``, prints the report and writes the result to ``json_path`` if given.

  The result (and the JSON file) also records the date and the load average
  (``os.getloadavg``: 1, 5 and 15 minutes) at the end of the run.
  """
  result = benchmark(config, steps=steps, warmup=warmup)
  result["date"] = datetime.datetime.now().isoformat(timespec="seconds")
  result["load_average"] = list(os.getloadavg())
  print(format_report(result))
  print("load average " + ", ".join(f"{x:.2f}" for x in result["load_average"]), flush=True)
  if json_path:
    pathlib.Path(json_path).write_text(json.dumps(result, indent=2) + "\n")
  return result


def main(argv: list[str]) -> None:
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # backend-discovery INFO lines off by default
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  if config is None:
    raise app.UsageError("--config is required, e.g. --config configs/demo.py")
  try:
    config_lib.validate(config)
    shard_lib.check_batch_size(config.train.batch_size, shard_lib.make_mesh())
  except ValueError as e:
    print(f"Invalid config ({flags.FLAGS['config'].config_filename}): {e}", file=sys.stderr)
    sys.exit(2)
  run(config, steps=_STEPS.value, warmup=_WARMUP.value, json_path=_JSON.value)


if __name__ == "__main__":
  # Defined here rather than at import, so that importing this module (as the tests do) does
  # not register a second --config flag beside otcxr_jax.main's.
  _CONFIG = config_flags.DEFINE_config_file(
      "config", None, "Experiment config file (configs/<name>.py).", lock_config=True)
  _STEPS = flags.DEFINE_integer("steps", 10, "Timed rounds (medians are reported).",
                                lower_bound=1)
  _WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed warm-up rounds.",
                                 lower_bound=0)
  _JSON = flags.DEFINE_string("json", None, "Also write the result to this JSON file.")
  app.run(main)
