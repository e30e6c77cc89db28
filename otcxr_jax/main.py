r"""Entry point: ``python -m otcxr_jax.main --config configs/<experiment>.py --workdir <dir>``.

Fields are overridden on the command line (``--config.train.batch_size=64``). The config is locked
and validated before anything is computed: a misspelt field or a bad value stops the run with a
message naming it. The run's mode (``config.mode``) chooses what happens:

* ``demo``: build the synthetic dataset if absent, pretrain OTCXR, linear-probe the pretrained and
  a random-init encoder, write ``<workdir>/report.md`` with plots;
* ``pretrain``: self-supervised pretraining only, by ``config.method`` (OTCXR or a baseline:
  SimCLR, BYOL, Barlow Twins, VICReg, VICRegL);
* ``linear_probe``: frozen-encoder linear probe of a pretraining workdir (or random init);
* ``knn``: weighted k-nearest-neighbour evaluation of the same frozen encoder;
* ``finetune``: whole-network fine-tuning on a label fraction (1%, 10%, 100%), selected on
  validation mean AUC, test evaluated once;
* ``segment``: segmentation transfer (U-Net decoder on the encoder, SIIM-ACR style Dice on all and
  on positive images), selected on validation Dice, test evaluated once;
* ``localize``: heatmaps (classifier CAM, CV-SIM attention, transport-cost maps)
  scored against the dataset's boxes (pointing game, IoU);
* ``report``: collect the ``metrics.json`` of evaluation workdirs (``config.report.workdirs``)
  into one ``report.md`` with tables and plots (also ``python -m otcxr_jax.reporting``);
* ``build_dataset``: build a TFDS dataset (real ones from ``config.data.manual_dir``).

An interrupted run started again with the same ``--workdir`` resumes from its last checkpoint. On
SIGTERM (preemption) a run saves a checkpoint at the next step boundary and exits with status 0,
printing the command that resumes it.

An expected failure (``otcxr_jax.errors``: a bad config, a missing manual directory, a split
without a readable image, ...) prints ``Error: <message>`` and a hint on stderr, without a
traceback, and exits with status 2; with ``--verbosity`` on the command line (``--verbosity=1``)
its traceback is shown instead. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import gc
import shlex
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from otcxr_jax import config_lib, errors, modes

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/<name>.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, logs and reports (local path or gs://...).")


#: Garbage-collection thresholds of a run (and of the test processes, tests/conftest.py). Tracing
#: and lowering allocate many short-lived containers: at the interpreter's default (700, 10, 10) a
#: short run (a test's, a small evaluation) spends about 15% of its CPU in full collections over
#: the 300,000 long-lived objects of jax, flax and orbax; with the young generation collected a
#: hundred times less often, under 5%. Training and evaluation loops allocate little, so longer
#: runs are unaffected either way.
GC_THRESHOLDS = (50_000, 20, 20)


def default_workdir(config_path: str) -> str:
  """``workdirs/<config name>``, the config file's argument's values appended:
  ``configs/finetune.py:dataset=nih,fraction=1pct`` -> ``workdirs/finetune_nih_1pct`` (a bare
  ``key`` item appends the key: ``...:dataset=synthetic,supervised`` ->
  ``workdirs/finetune_synthetic_supervised``)."""
  from etils import epath
  path, _, arg = config_path.partition(":")
  parts = [epath.Path(path).stem]
  for item in filter(None, (i.strip() for i in arg.split(","))):
    key, sep, value = item.partition("=")
    parts.append(value.strip() if sep else key)
  return str(epath.Path("workdirs") / "_".join(parts))


def main(argv) -> None:
  del argv
  verbose = flags.FLAGS["verbosity"].present
  if not verbose:
    logging.set_verbosity(logging.WARNING)  # library INFO chatter (orbax, grain) off by default
  try:
    _main()
  except (errors.UserError, *errors.external_expected()) as e:
    if verbose:
      raise
    exit_on_expected_failure(e)


def exit_on_expected_failure(error: BaseException) -> None:
  """Prints ``Error: <message>`` and a hint to stderr and exits with status 2."""
  print(f"Error: {error}\n(run with --verbosity=1 for the traceback)", file=sys.stderr,
        flush=True)
  sys.exit(2)


def _main() -> None:
  config = _CONFIG.value
  if config is None:
    raise app.UsageError("--config is required, e.g. --config configs/demo.py")
  workdir = _WORKDIR.value or default_workdir(flags.FLAGS["config"].config_filename)
  from otcxr_jax.training import checkpoint as ckpt_lib
  try:
    config = modes.resolve(config, workdir)  # an evaluation's network: the run it reads
    modes.validate(config)
    config_lib.check_overrides(config, config_flags.get_override_values(flags.FLAGS["config"]))
  except (config_lib.ConfigError, ckpt_lib.NetworkConflictError) as e:
    print(f"Invalid config ({flags.FLAGS['config'].config_filename}): {e}", file=sys.stderr)
    sys.exit(2)
  from otcxr_jax.training import distributed
  try:
    distributed.initialize(config)  # before any JAX computation
  except ValueError as e:
    print(f"Cannot start the multi-process run: {e}", file=sys.stderr)
    sys.exit(2)
  logging.info("mode=%s workdir=%s", config.mode, workdir)
  module = modes.module(config.mode)
  from otcxr_jax.training import loop
  try:
    module.run(config, workdir)
  except loop.Preempted as e:
    import jax
    if jax.process_index() == 0:
      command = " ".join(["python -m otcxr_jax.main", *map(shlex.quote, sys.argv[1:])])
      print(f"{e}. Resume by running the same command again: {command}", flush=True)
    sys.exit(0)


def _parse_flags(argv: list[str]) -> list[str]:
  """Parses flags; an unknown or ill-typed config field stops here, before any compute."""
  try:
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    message = str(e.args[0] if e.args else e).strip("'\"")
    message = message.replace("\\'", "'").replace("\\n", " ").replace("\n", " ")
    overrides = [a for a in argv[1:] if a.startswith("--config.")]
    print(f"Invalid config on the command line {overrides or argv[1:]}: {message}\n"
          "The config is locked: only fields defined in otcxr_jax/config_lib.py (or added by "
          "the config file) can be set.", file=sys.stderr)
    sys.exit(2)


def run() -> None:
  """The ``otcxr-train`` console script: ``python -m otcxr_jax.main`` with the same flags."""
  if __name__ != "__main__":  # a console script: absl's --help describes the __main__ module
    sys.modules["__main__"].__doc__ = __doc__
    for flag in (_CONFIG.name, _WORKDIR.name):
      flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[flag])
  gc.set_threshold(*GC_THRESHOLDS)
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
