r"""The synthetic benchmark: pretrain every method and ablation alike, evaluate each, one report.

    python benchmarks/benchmark_synthetic.py --workdir workdirs/benchmark_synthetic \
        [--tiny] [--config.benchmark.seeds=1] [--config.FIELD=VALUE ...]

The runs, references and evaluations are the config's (``configs/benchmark_synthetic.py``, whose
docstring defines every run); ``--tiny`` selects its tiny scale (it stands for
``--config configs/benchmark_synthetic.py:tiny``). For each seed ``k`` in
``0 .. benchmark.seeds - 1``:

1. every run of ``benchmark.runs``: the shared config with the run's fields
   (``benchmark_runs.<run>``) and ``seed=k`` is pretrained (``modes/pretrain.run``) into
   ``<workdir>/runs/<run>/seed<k>/pretrain``; then every evaluation of ``benchmark.evaluations``
   (on the rows ``benchmark.evaluation_rows`` names for it, if it names any) runs through its
   mode's ``run(config, workdir)`` on that checkpoint, into
   ``<workdir>/runs/<run>/seed<k>/<evaluation>``;
2. the references of ``benchmark.references``: ``random_init`` (the same evaluations of the encoder
   at initialisation), ``supervised`` (fine-tuning from random initialisation on 100% of the
   labels, with ``benchmark.supervised_fields``) and ``raw_pixels`` (the linear probe of the
   images downsampled to ``probe.pixel_floor_size``, mode ``linear_probe`` with
   ``probe.init='pixels'``).

Every step writes a ``metrics.json`` and is skipped when that file exists, so the same command
resumes an interrupted benchmark (an interrupted pretraining resumes from its checkpoint). Then
the train step of each run of ``benchmark.timed_runs`` is timed in a fresh process
(``step_timing.py``) into
``<workdir>/timing/<run>.json``, and ``<workdir>/report.md`` is written from these files alone
(``synthetic_report.py``). Compiled steps are kept in ``<workdir>/jax_cache`` (JAX's persistent
compilation cache), shared by the seeds of a run and by its timing process.
"""

from __future__ import annotations

import importlib
import json
import os
import pathlib
import pickle
import shlex
import sys
import time
from typing import Mapping

if not __package__:  # run as a file: make the repository root importable
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import ml_collections  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from etils import epath  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from benchmarks import step_timing, synthetic_report  # noqa: E402
from benchmarks.synthetic_report import EVALUATIONS, REFERENCES  # noqa: E402
from otcxr_jax import config_lib  # noqa: E402
from otcxr_jax.modes import pretrain  # noqa: E402
from otcxr_jax.training import writers  # noqa: E402

DEFAULT_CONFIG = str(step_timing.REPO_ROOT / "configs" / "benchmark_synthetic.py")


def copy_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """An unlocked deep copy (its fields stay typed: a misspelt update is still refused)."""
  out = pickle.loads(pickle.dumps(config))
  out.unlock()
  return out


def apply_overrides(config: ml_collections.ConfigDict, overrides, where: str) -> None:
  """Sets the nested ``overrides`` on existing fields of ``config``; a new field is an error."""
  for key, value in overrides.items():
    if key not in config:
      raise ValueError(f"{where}.{key}: no such config field.")
    if isinstance(value, (Mapping, ml_collections.ConfigDict)):
      apply_overrides(config[key], value, f"{where}.{key}")
    else:
      config[key] = value


def run_config(config: ml_collections.ConfigDict, run: str, seed: int
               ) -> ml_collections.ConfigDict:
  """The validated pretraining config of ``run`` at ``seed``: the shared config plus the run's
  fields (``config.benchmark_runs.<run>``)."""
  c = copy_config(config)
  apply_overrides(c, config.benchmark_runs[run], f"config.benchmark_runs.{run}")
  c.mode = "pretrain"
  c.seed = seed
  config_lib.validate(c)
  return c


def reference_config(config: ml_collections.ConfigDict, row: str) -> ml_collections.ConfigDict:
  """The config of reference ``row``: the shared config, plus ``benchmark.supervised_fields``
  for ``supervised`` (training from scratch wants other rates than fine-tuning)."""
  c = copy_config(config)
  if row == "supervised":
    apply_overrides(c, config.benchmark.get("supervised_fields") or {},
                    "config.benchmark.supervised_fields")
  return c


#: What each reference row evaluates in place of a pretrained encoder (``probe.init`` and the
#: other sections' ``init``).
REFERENCE_INITS = {"random_init": "random", "supervised": "random",
                   "raw_pixels": config_lib.PIXEL_FLOOR}


def evaluation_config(config: ml_collections.ConfigDict, evaluation: str,
                      checkpoint_dir: str | None, row_dir: epath.PathLike = "<row_dir>",
                      init: str | None = None) -> ml_collections.ConfigDict:
  """The validated config of ``evaluation`` of the encoder pretrained by ``config`` into
  ``checkpoint_dir`` (None: the encoder at initialisation, or what ``init`` names, e.g.
  ``'pixels'``); ``row_dir`` holds the row's other evaluations
  (``<workdir>/runs/<row>/seed<k>``)."""
  e = EVALUATIONS[evaluation]
  c = copy_config(config)
  c.mode = e.mode
  apply_overrides(c, e.fields, f"evaluation {evaluation!r}")
  init = init or ("random" if checkpoint_dir is None else "pretrained")
  if e.mode == "localize":
    l = c.localize
    l.classifier_workdir = os.path.join(os.fspath(row_dir), e.requires)
    l.init = init
    l.checkpoint_dir = checkpoint_dir or ""
    # CAM of the fine-tuned classifier for every row; the pretraining network's maps where it
    # has them (CV-SIM attention, transport plans: OTCXR's)
    l.methods = ("cam",) + (("attention",) if c.method == "otcxr" and c.model.cvsim else ()) + (
        ("transport",) if c.method == "otcxr" else ())
  elif e.finetune_split is not None:
    c.finetune.split = e.finetune_split
    c.finetune.init = init
    c.finetune.checkpoint_dir = checkpoint_dir or ""
  else:
    c.probe.init = init
    c.probe.checkpoint_dir = checkpoint_dir or ""
  config_lib.validate(c)
  return c


def _is_int(value, minimum: int) -> bool:
  return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def check(config: ml_collections.ConfigDict) -> None:
  """Validates the ``benchmark`` fields and the config of every run and evaluation, up front.

  Raises:
    ValueError (``config_lib.ConfigError`` for a config field), naming the field.
  """
  b = config.benchmark
  for field, minimum in (("seeds", 1), ("timing_steps", 1), ("timing_warmup", 0)):
    if not _is_int(b[field], minimum):
      raise ValueError(f"config.benchmark.{field}={b[field]!r}: expected an int >= {minimum}.")
  for names, known, field in ((b.runs, tuple(config.benchmark_runs), "runs"),
                              (b.timed_runs or (), tuple(b.runs), "timed_runs"),
                              (b.references, REFERENCES, "references"),
                              (b.evaluations, tuple(EVALUATIONS), "evaluations")):
    unknown = [n for n in names if n not in known]
    if unknown:
      raise ValueError(f"config.benchmark.{field} names {unknown}: expected names from "
                       f"{known}.")
  all_rows = tuple(config.benchmark_runs) + REFERENCES
  for evaluation, limited in (b.get("evaluation_rows") or {}).items():
    if evaluation not in EVALUATIONS:
      raise ValueError(f"config.benchmark.evaluation_rows.{evaluation}: no such evaluation; "
                       f"expected names from {tuple(EVALUATIONS)}.")
    if isinstance(limited, str) or not all(isinstance(r, str) for r in limited):
      raise ValueError(f"config.benchmark.evaluation_rows.{evaluation}={limited!r}: expected a "
                       f"tuple of row names.")
    unknown = [r for r in limited if r not in all_rows]
    if unknown:
      raise ValueError(f"config.benchmark.evaluation_rows.{evaluation} names {unknown}: "
                       f"expected names from {all_rows}.")
  config_lib.validate(config)
  steps = synthetic_report.layout(config)
  for row, e in steps:
    needed = EVALUATIONS[e].requires
    if needed and ((row, needed) not in steps or
                   list(b.evaluations).index(needed) > list(b.evaluations).index(e)):
      raise ValueError(f"config.benchmark.evaluations: {e!r} of row {row!r} reads the workdir "
                       f"of {needed!r}: expected {needed!r} before it, on the same rows "
                       f"(config.benchmark.evaluation_rows).")
  for row, e in steps:
    if row in REFERENCES:
      evaluation_config(reference_config(config, row), e, None, init=REFERENCE_INITS[row])
    else:
      evaluation_config(run_config(config, row, 0), e, "<checkpoint_dir>")


def _done(directory: epath.Path) -> bool:
  return (directory / synthetic_report.METRICS_FILE).exists()


def pretrain_run(config: ml_collections.ConfigDict, workdir: epath.Path) -> None:
  """Pretrains ``config`` into ``workdir``; its ``metrics.json`` holds the last logged values."""
  start = time.time()
  pretrain.run(config, str(workdir))
  history = writers.read_history(workdir / "metrics" / f"{pretrain.RUN_NAME}.jsonl")
  result = {"mode": "pretrain", "method": config.method, "seed": config.seed,
            "num_steps": config.train.num_steps, "final": history[-1] if history else None,
            "seconds_this_invocation": time.time() - start}
  (workdir / synthetic_report.METRICS_FILE).write_text(json.dumps(result, indent=2) + "\n")


def _missing_modes(config: ml_collections.ConfigDict) -> list[str]:
  """Notes for the report: evaluations whose mode is not in this checkout."""
  b = config.benchmark
  wanted = list(b.evaluations) + ([synthetic_report.SUPERVISED_EVALUATION]
                                  if "supervised" in b.references else [])
  return [f"`{e}`: mode `{EVALUATIONS[e].mode}` is not in this checkout" for e in wanted
          if not synthetic_report.mode_available(EVALUATIONS[e].mode)]


def run(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> epath.Path:
  """Runs (or resumes) the benchmark of ``config`` in ``workdir``; returns the report's path."""
  check(config)
  workdir = epath.Path(os.path.abspath(os.fspath(workdir)))
  b = config.benchmark
  by_row: dict[str, list[str]] = {}
  for row, e in synthetic_report.layout(config):
    by_row.setdefault(row, []).append(e)
  cache = workdir / "jax_cache"
  with step_timing.compilation_cache(cache):
    for seed in range(b.seeds):
      for row, evaluations in by_row.items():
        directory = workdir / "runs" / row / f"seed{seed}"
        init = REFERENCE_INITS.get(row)
        if row in REFERENCES:
          cfg, checkpoint_dir = reference_config(config, row), None
          cfg.seed = seed
        else:
          cfg = run_config(config, row, seed)
          if not _done(directory / "pretrain"):
            print(f"[benchmark] {row}, seed {seed}: pretraining", flush=True)
            pretrain_run(cfg, directory / "pretrain")
          checkpoint_dir = str(directory / "pretrain" / "checkpoints" / pretrain.RUN_NAME)
        for e in evaluations:
          if not _done(directory / e):
            print(f"[benchmark] {row}, seed {seed}: {e}", flush=True)
            module = importlib.import_module(f"otcxr_jax.modes.{EVALUATIONS[e].mode}")
            module.run(evaluation_config(cfg, e, checkpoint_dir, directory, init),
                       str(directory / e))
    for run_name in synthetic_report.timed_runs(config):
      path = workdir / "timing" / f"{run_name}.json"
      if not path.exists():
        print(f"[benchmark] {run_name}: timing the train step in a fresh process", flush=True)
        step_timing.time_in_fresh_process(run_config(config, run_name, 0), path,
                                          steps=b.timing_steps, warmup=b.timing_warmup,
                                          cache_dir=cache)
  report = synthetic_report.write_report(config, workdir, _missing_modes(config))
  print(f"[benchmark] report: {report}", flush=True)
  return report


def main(argv: list[str]) -> None:
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  try:
    check(config)
  except ValueError as e:
    print(f"Invalid benchmark config: {e}", file=sys.stderr)
    sys.exit(2)
  sys.exit(run_resumable(config, _WORKDIR.value, sys.argv[1:]))


def run_resumable(config: ml_collections.ConfigDict, workdir: str, args: list[str]) -> int:
  """``run``; stopped by SIGTERM (``loop.Preempted``: its checkpoint saved), it says how to
  resume instead of a traceback. Returns the exit status."""
  from otcxr_jax.training import loop  # pylint: disable=import-outside-toplevel
  try:
    run(config, workdir)
  except loop.Preempted as e:
    command = " ".join(["python benchmarks/benchmark_synthetic.py", *map(shlex.quote, args)])
    print(f"{e}. The same command resumes the benchmark where it stopped: {command}", flush=True)
  return 0


def config_argv(argv: list[str]) -> list[str]:
  """``argv`` with ``--tiny`` turned into ``--config=<benchmark config>:tiny``, and the benchmark
  config added when no ``--config`` is given."""
  has_config = any(a == "--config" or a.startswith("--config=") for a in argv[1:])
  rest = [a for a in argv[1:] if a not in ("--tiny", "--notiny")]
  if "--tiny" in argv[1:]:
    if has_config:
      raise ValueError("--tiny selects the config (configs/benchmark_synthetic.py:tiny); pass "
                       "either --tiny or --config.")
    return [argv[0], f"--config={DEFAULT_CONFIG}:tiny", *rest]
  return [argv[0], *rest] if has_config else [argv[0], f"--config={DEFAULT_CONFIG}", *rest]


if __name__ == "__main__":
  # Flags are defined here, not at import, so that importing this module (tests) registers no
  # --config beside otcxr_jax.main's.
  _CONFIG = config_flags.DEFINE_config_file(
      "config", None, "Benchmark config file (configs/benchmark_synthetic.py[:tiny]).",
      lock_config=True)
  _WORKDIR = flags.DEFINE_string("workdir", "workdirs/benchmark_synthetic",
                                 "Directory of the runs, the timings and report.md.")
  flags.DEFINE_bool("tiny", False, "The benchmark config's tiny scale (seconds per run).")
  try:
    _ARGV = config_argv(sys.argv)
  except ValueError as error:
    print(error, file=sys.stderr)
    sys.exit(2)
  app.run(main, argv=_ARGV)
