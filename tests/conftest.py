"""Test configuration: four simulated CPU devices, set before JAX is first used, and one persistent
compilation cache for the whole session."""

import atexit
import os
import pathlib
import shutil
import tempfile

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# One compilation cache for the session: the pytest process that starts first makes the folder;
# the xdist workers and every command a test starts inherit it through the environment, so a
# program compiled once (the tiny network's train and scoring steps, which many modules and
# commands run) is read back everywhere else. Removed when that process exits.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _CACHE = tempfile.mkdtemp(prefix="otcxr-tests-jax-cache-")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
  atexit.register(shutil.rmtree, _CACHE, True)
from tests import fast_compile  # noqa: E402

fast_compile.add_to_environ()  # XLA:CPU compiles the tests' programs quickly (see there)

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 4)
jax.config.update("jax_platforms", "cpu")


import pytest  # noqa: E402


@pytest.fixture(scope="module")
def shared_compilation():
  """The modules that name this fixture compile the same train and scoring steps across their
  tests; the session's persistent compilation cache (set at the top of this file) serves them."""
  assert jax.config.jax_compilation_cache_dir, "the session's compilation cache is not set"
  yield


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
