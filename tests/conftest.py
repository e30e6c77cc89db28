"""Test configuration: four simulated CPU devices, set before JAX is first used."""

import gc
import os
import pathlib

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
from tests import fast_compile  # noqa: E402

fast_compile.add_to_environ()  # XLA:CPU compiles the tests' programs quickly (see there)
fast_compile.share_compiled_programs()  # one compilation cache, kept between runs (see there)

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 4)
jax.config.update("jax_platforms", "cpu")

from otcxr_jax import main as otcxr_main  # noqa: E402

# The runs' thresholds (see there). At the interpreter's default each test process ran a full
# collection about every three seconds of the fast selection, 0.3-0.4 s each: about 12 s of each
# process's 90 (measured with `gc.callbacks`); with these, 1-4 s in all.
gc.set_threshold(*otcxr_main.GC_THRESHOLDS)


import pytest  # noqa: E402


_E2E = pathlib.Path(__file__).resolve().parent / "e2e"


@pytest.hookimpl(tryfirst=True)  # before -m deselects and xdist reads the groups
def pytest_collection_modifyitems(config, items):
  """Every test under tests/e2e/ (a run of a mode, a command or the notebook end to end) is
  marked slow, so ``-m "not slow"`` is the fast unit selection.

  Under ``pytest -n`` (``--dist loadgroup``, pytest.ini) each end-to-end module is one xdist group
  unless it names its own (tests/e2e/shared_runs.py): one process runs its tests, so the runs its
  module and session fixtures make are made once. They are put first, so that the short unit tests
  fill the processes' time at the end."""
  del config
  e2e = []
  for item in items:
    if _E2E in pathlib.Path(str(item.path)).resolve().parents:
      item.add_marker(pytest.mark.slow)
      if item.get_closest_marker("xdist_group") is None:
        item.add_marker(pytest.mark.xdist_group(pathlib.Path(str(item.path)).stem))
      e2e.append(item)
  first = set(e2e)
  items[:] = e2e + [item for item in items if item not in first]


def pytest_configure(config):
  """pytest ends every process (each xdist worker too) by collecting garbage five times to find
  unraisable exceptions; with JAX's objects each pass takes about a second. One pass: only a
  finaliser that leaves new garbage needs the later ones."""
  try:
    from _pytest.unraisableexception import gc_collect_iterations_key  # pylint: disable=g-import-not-at-top
  except ImportError:  # another pytest: its own default
    return
  config.stash[gc_collect_iterations_key] = 1
