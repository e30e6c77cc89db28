r"""Seconds per pretraining step and peak memory of each method and ablation, on any config.

    python benchmarks/method_runtime.py --config configs/pretrain_nih.py \
        --workdir workdirs/runtime_nih [--runs otcxr,vicreg,simclr] [--steps 10] [--warmup 2] \
        [--config.train.batch_size=64] [--config.train.compute_dtype=bfloat16]

The paper leaves OT's cost against a plain self-supervised objective open; this answers it for a
given model, image size, batch and device. The runs are those of the synthetic benchmark
(``configs/benchmark_synthetic.runs()``: the methods and OTCXR's ablations, each a set of config
fields), applied to ``--config`` instead of the benchmark's small shared config. Each run's train
step (the train loop's own, data-parallel over every device) is timed on a random batch in a fresh
process (``step_timing.time_in_fresh_process``), so peak memory describes that run alone; no
dataset is read. Output in ``--workdir``: ``timing/<run>.json`` (a run already timed there is
kept, so an interrupted command resumes), ``runtime.md`` (the table, OTCXR over VICReg when both
ran) and ``plots/runtime_*.png``.
"""

from __future__ import annotations

import os
import pathlib
import sys

if not __package__:  # run as a file: make the repository root importable
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import json  # noqa: E402

import ml_collections  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from etils import epath  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from benchmarks import benchmark_synthetic, step_timing, synthetic_report  # noqa: E402
from configs import benchmark_synthetic as benchmark_config  # noqa: E402
from otcxr_jax import config_lib  # noqa: E402

DEFAULT_RUNS = benchmark_config.METHOD_RUNS


def run_config(config: ml_collections.ConfigDict, run: str) -> ml_collections.ConfigDict:
  """``config`` with the fields of benchmark run ``run``, in pretraining mode, validated."""
  runs = benchmark_config.runs()
  if run not in runs:
    raise ValueError(f"run {run!r}: expected one of {sorted(runs)}.")
  c = benchmark_synthetic.copy_config(config)
  benchmark_synthetic.apply_overrides(c, runs[run], f"run {run}")
  c.mode = "pretrain"
  config_lib.validate(c)
  return c


def measure(config: ml_collections.ConfigDict, workdir: str | os.PathLike, runs, *,
            steps: int, warmup: int, config_name: str = "(given)") -> epath.Path:
  """Times every run of ``runs`` (skipping those with a timing file), writes ``runtime.md``."""
  configs = {run: run_config(config, run) for run in runs}  # every config refused up front
  workdir = epath.Path(os.path.abspath(os.fspath(workdir)))
  timings = {}
  for i, (run, c) in enumerate(configs.items()):
    path = workdir / "timing" / f"{run}.json"
    if not path.exists():
      print(f"[runtime] {i + 1}/{len(configs)} {run}: timing {steps} steps in a fresh process",
            flush=True)
      step_timing.time_in_fresh_process(c, path, steps=steps, warmup=warmup,
                                        cache_dir=workdir / "jax_cache")
    timings[run] = json.loads(path.read_text())
    t = timings[run]
    print(f"[runtime] {run}: {t['seconds_per_step'] * 1e3:.1f} ms/step, "
          f"{t['images_per_s']:.1f} images/s, peak {t['peak_memory_bytes'] / 2**20:.0f} MiB",
          flush=True)
  figures = synthetic_report.runtime_plots(timings, workdir / "plots")
  c = config
  text = (f"# Train-step runtime per method\n\n"
          f"Config `{config_name}`: encoder `{c.model.encoder}` (width "
          f"{c.model.width}), dense map of stage `{c.model.dense_stage}`, {c.objective.num_iters} "
          f"Sinkhorn iterations for OTCXR, compute dtype `{c.train.compute_dtype}`.\n\n"
          f"{synthetic_report.markdown_runtime(timings)}\n\n" + "\n".join(figures) + "\n")
  report = workdir / "runtime.md"
  report.write_text(text)
  print(f"[runtime] report: {report}", flush=True)
  return report


def main(argv: list[str]) -> None:
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config_name = config_flags.get_config_filename(flags.FLAGS["config"])
  runs = [r.strip() for r in _RUNS.value.split(",") if r.strip()]
  try:
    if not runs:
      raise ValueError("--runs: expected a comma-separated list of run names.")
    measure(_CONFIG.value, _WORKDIR.value, runs, steps=_STEPS.value, warmup=_WARMUP.value,
            config_name=config_name)
  except ValueError as e:
    print(f"Invalid runtime benchmark: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  _CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                            lock_config=True)
  flags.mark_flag_as_required("config")
  _WORKDIR = flags.DEFINE_string("workdir", "workdirs/method_runtime",
                                 "Directory of the timing files and runtime.md.")
  _RUNS = flags.DEFINE_string("runs", ",".join(DEFAULT_RUNS),
                              "Comma-separated runs of configs/benchmark_synthetic.runs().")
  _STEPS = flags.DEFINE_integer("steps", 10, "Timed steps per run (median reported).", lower_bound=1)
  _WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps first.", lower_bound=0)
  app.run(main)
