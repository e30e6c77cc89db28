"""XLA:CPU flags under which the tests compile quickly, and an environment without them.

The tests' programs are tiny and most are compiled once or twice, so compiling dominates the
suite's time. At LLVM's optimisation level 0 and with XLA:CPU's classic (not fusion-emitter) code
generation they compile in about half the CPU time of XLA's defaults: a ResNet-50's initialisation
(33 small programs) and its gradient in 1.1 s and 2.5 s of CPU instead of 3.7 s each.
``tests/conftest.py`` adds the flags to ``XLA_FLAGS`` before JAX's CPU backend starts, so the test
processes and the commands they start compile this way; a flag already in ``XLA_FLAGS`` is kept
as given.
"""

import atexit
import os
import shutil
import tempfile

FLAGS = {"xla_backend_optimization_level": "0", "xla_cpu_use_fusion_emitters": "false"}


def add_to_environ() -> None:
  """Adds each of `FLAGS` that ``XLA_FLAGS`` does not set to ``os.environ['XLA_FLAGS']``."""
  given = os.environ.get("XLA_FLAGS", "")
  added = [f"--{flag}={value}" for flag, value in FLAGS.items() if flag not in given]
  os.environ["XLA_FLAGS"] = " ".join([given, *added]).strip()


#: The commands the tests start cache every program, however quickly it compiles: a command's
#: start (a model's initialisation alone is dozens of tiny programs) costs 2-3 s less when they are
#: read back.
COMMAND_MIN_COMPILE_SECONDS = "0"
#: The test processes themselves compile thousands of tiny programs once each; writing every one
#: to disk costs more than it saves, so they cache only the slower ones.
TEST_PROCESS_MIN_COMPILE_SECONDS = 0.2


def share_compiled_programs() -> None:
  """Points JAX's persistent compilation cache of this process, and of every process it starts
  (pytest-xdist's workers, the commands the end-to-end tests run), at one folder for the whole
  test run, removed when the process that made it exits.

  Most end-to-end tests run the same tiny configuration's train and scoring steps, in the test
  processes and in the commands they start: each program is then compiled once per run instead
  of once per process. A cache folder or threshold already in the environment is kept."""
  if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    directory = tempfile.mkdtemp(prefix="otcxr_tests_jax_cache_")
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = directory
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", COMMAND_MIN_COMPILE_SECONDS)


def cache_slow_programs_only() -> None:
  """This process (a test process, JAX imported) writes only programs that took
  `TEST_PROCESS_MIN_COMPILE_SECONDS` or more to the shared cache; it reads every entry."""
  import jax  # pylint: disable=g-import-not-at-top

  jax.config.update("jax_persistent_cache_min_compile_time_secs", TEST_PROCESS_MIN_COMPILE_SECONDS)


def default_codegen_environ() -> dict[str, str]:
  """A copy of ``os.environ`` whose ``XLA_FLAGS`` leave `FLAGS` at XLA's defaults, for a
  subprocess that must compile as a run does."""
  kept = [f for f in os.environ.get("XLA_FLAGS", "").split()
          if f.lstrip("-").split("=")[0] not in FLAGS]
  return {**os.environ, "XLA_FLAGS": " ".join(kept)}
