"""Test configuration: four simulated CPU devices, set before JAX is first used."""

import os
import pathlib

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
from tests import fast_compile  # noqa: E402

fast_compile.add_to_environ()  # XLA:CPU compiles the tests' programs quickly (see there)

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 4)
jax.config.update("jax_platforms", "cpu")


import pytest  # noqa: E402
from jax.experimental.compilation_cache import compilation_cache  # noqa: E402


@pytest.fixture(scope="module")
def shared_compilation(tmp_path_factory):
  """A persistent compilation cache for one test module whose runs compile the same train and
  scoring steps (each is compiled once); the previous settings are restored afterwards. Use
  with ``pytestmark = pytest.mark.usefixtures("shared_compilation")``. The modules of one test
  process share the cache's folder, so a program another module compiled (the same tiny network's
  scoring step, a fine-tuning step of the same config) is read back too."""
  previous = (jax.config.jax_compilation_cache_dir,
              jax.config.jax_persistent_cache_min_compile_time_secs)
  compilation_cache.reset_cache()
  directory = tmp_path_factory.getbasetemp() / "jax_cache"
  directory.mkdir(exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", str(directory))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  yield
  jax.config.update("jax_compilation_cache_dir", previous[0])
  jax.config.update("jax_persistent_cache_min_compile_time_secs", previous[1])
  compilation_cache.reset_cache()


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
