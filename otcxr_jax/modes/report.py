"""Mode ``report``: the runs of ``config.report.workdirs`` collected into ``<workdir>/report.md``
with plots (``reporting/runs.py``, also ``python -m otcxr_jax.reporting``); the plots also as
TensorBoard images in ``<workdir>/tensorboard/report``."""

from __future__ import annotations

import jax
import ml_collections
from etils import epath

from otcxr_jax.reporting import runs as report
from otcxr_jax.config_lib import require
from otcxr_jax.training import summaries
from otcxr_jax.training.distributed import print0

RUN_NAME = "report"


def validate(config: ml_collections.ConfigDict) -> None:
  """``report.workdirs``: the evaluation runs to collect."""
  workdirs = config.report.workdirs
  require(isinstance(workdirs, (tuple, list)) and len(workdirs) > 0 and
          all(isinstance(w, str) and w for w in workdirs), "report.workdirs", workdirs,
          "a non-empty tuple of evaluation workdirs")


def run(config: ml_collections.ConfigDict, workdir: str) -> epath.Path:
  path = epath.Path(workdir) / "report.md"
  if jax.process_index() == 0:
    path = report.write_report(tuple(config.report.workdirs), workdir)
  summaries.write_results(workdir, RUN_NAME, enabled=config.train.tensorboard)  # the figures
  print0(f"[{RUN_NAME}] {path}")
  return path
