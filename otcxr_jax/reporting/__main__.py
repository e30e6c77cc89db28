"""``python -m otcxr_jax.reporting <workdir>... --out <dir>``: evaluation runs into one report.md
(``reporting/runs.py``)."""

import sys

from otcxr_jax.reporting import runs

if __name__ == "__main__":
  sys.exit(runs.main())
