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


#: Where the tests keep compiled programs between runs, unless ``JAX_COMPILATION_CACHE_DIR`` is
#: set: the XLA:CPU programs of the tests and of the commands they start, keyed by JAX on the
#: program, the jaxlib version and the XLA flags, so an entry is reused only for the same program.
#: A run after an edit recompiles what the edit changed.
CACHE_ENV = "OTCXR_TESTS_XLA_CACHE"
#: Oldest entries are removed at the start of a run until the folder is under this size.
CACHE_MAX_BYTES = 1 << 30


def default_cache_dir() -> str:
  """``$OTCXR_TESTS_XLA_CACHE``, else ``$XDG_CACHE_HOME/otcxr-jax/tests-xla`` (``~/.cache``)."""
  if os.environ.get(CACHE_ENV):
    return os.environ[CACHE_ENV]
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "otcxr-jax", "tests-xla")


def prune(directory: str, max_bytes: int = CACHE_MAX_BYTES) -> int:
  """Removes the least recently written files of ``directory`` until it holds at most
  ``max_bytes``; returns how many were removed."""
  try:
    stats = [(e.stat(), e.path) for e in os.scandir(directory) if e.is_file(follow_symlinks=False)]
  except FileNotFoundError:
    return 0
  stats = sorted(((st.st_mtime, st.st_size, path) for st, path in stats), reverse=True)
  total, removed = 0, 0
  for _, size, path in stats:  # newest first: keep while under the limit
    total += size
    if total > max_bytes:
      try:
        os.remove(path)
        removed += 1
      except FileNotFoundError:
        pass
  return removed


def share_compiled_programs() -> None:
  """Points JAX's persistent compilation cache of this process, and of every process it starts
  (pytest-xdist's workers, the commands the end-to-end tests run), at one folder kept between
  runs (`default_cache_dir`, pruned to `CACHE_MAX_BYTES`).

  Most tests run the same tiny configurations' programs, in the test processes and in the
  commands they start: each program is then compiled once, not once per process and run. A
  folder already in ``JAX_COMPILATION_CACHE_DIR`` is used as given (an empty temporary folder
  gives a cold run: ``JAX_COMPILATION_CACHE_DIR=$(mktemp -d)``)."""
  if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    directory = default_cache_dir()
    try:
      os.makedirs(directory, exist_ok=True)
      prune(directory)
    except OSError:  # no writable cache folder: one for this run only
      directory = tempfile.mkdtemp(prefix="otcxr_tests_jax_cache_")
      atexit.register(shutil.rmtree, directory, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = directory
  # Every program, however quickly it compiles: a command's start (a model's initialisation
  # alone is dozens of tiny programs) costs 2-3 s less when they are read back.
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


def default_codegen_environ() -> dict[str, str]:
  """A copy of ``os.environ`` whose ``XLA_FLAGS`` leave `FLAGS` at XLA's defaults, for a
  subprocess that must compile as a run does."""
  kept = [f for f in os.environ.get("XLA_FLAGS", "").split()
          if f.lstrip("-").split("=")[0] not in FLAGS]
  return {**os.environ, "XLA_FLAGS": " ".join(kept)}
