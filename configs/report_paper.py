"""The report of the paper-number runs (README, "Paper experiments"): one report.md with tables and
plots of whichever of these workdirs hold finished runs, each the default workdir of a config
(``configs/linear_probe.py:dataset=nih`` writes ``workdirs/linear_probe_nih``, and so on).

    python -m otcxr_jax.main --config configs/report_paper.py --workdir reports/paper
    # or any runs: python -m otcxr_jax.reporting <workdir>... --out reports/mine
"""

from otcxr_jax import config_lib


def get_config():
  c = config_lib.base_config()
  c.mode = "report"
  c.report.workdirs = (
      "workdirs/linear_probe_nih",
      "workdirs/linear_probe_vinbig",
      "workdirs/linear_probe_rsna",
      "workdirs/finetune_nih_1pct",
      "workdirs/finetune_nih_10pct",
      "workdirs/finetune_vinbig_10pct",
      "workdirs/finetune_rsna_10pct",
      "workdirs/segment_siim",
      "workdirs/localize_nih",
  )
  return c
