"""The tests' compilation cache folder: where it is, what a run keeps of it."""

import os
import subprocess
import sys

from tests import fast_compile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(path, size, mtime):
  path.write_bytes(b"x" * size)
  os.utime(path, (mtime, mtime))


def test_prune_keeps_the_newest_files_that_fit(tmp_path):
  for name, size, mtime in (("a", 40, 1), ("b", 30, 4), ("c", 20, 3), ("d", 25, 2)):
    _write(tmp_path / name, size, mtime)
  # Newest first: b (30), c (50), d (75) fit under 80; a (115) does not.
  assert fast_compile.prune(str(tmp_path), max_bytes=80) == 1
  assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "c", "d"]
  # b (30), c (50) fit under 50; d would make 75.
  assert fast_compile.prune(str(tmp_path), max_bytes=50) == 1
  assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "c"]
  assert fast_compile.prune(str(tmp_path), max_bytes=0) == 2
  assert not list(tmp_path.iterdir())
  assert fast_compile.prune(str(tmp_path / "absent")) == 0


def test_cache_folder_follows_the_environment(monkeypatch, tmp_path):
  monkeypatch.delenv(fast_compile.CACHE_ENV, raising=False)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert fast_compile.default_cache_dir() == str(tmp_path / "xdg" / "otcxr-jax" / "tests-xla")
  monkeypatch.delenv("XDG_CACHE_HOME")
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  assert fast_compile.default_cache_dir() == str(
      tmp_path / "home" / ".cache" / "otcxr-jax" / "tests-xla")
  monkeypatch.setenv(fast_compile.CACHE_ENV, str(tmp_path / "mine"))
  assert fast_compile.default_cache_dir() == str(tmp_path / "mine")


def _shared_environment(environ):
  """``JAX_COMPILATION_CACHE_DIR`` and the minimum compile time a fresh process sets."""
  code = ("import os; from tests import fast_compile; fast_compile.share_compiled_programs(); "
          "print(os.environ['JAX_COMPILATION_CACHE_DIR']); "
          "print(os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'])")
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=environ, check=True,
                       capture_output=True, text=True).stdout
  return out.split()


def test_a_run_uses_the_kept_folder_pruned_or_the_one_given(tmp_path):
  environ = {k: v for k, v in os.environ.items()
             if k not in ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS")}
  folder = tmp_path / "kept"
  folder.mkdir()
  _write(folder / "old", 10, 1)
  environ.update({fast_compile.CACHE_ENV: str(folder), "PYTHONPATH": REPO})
  assert _shared_environment(environ) == [str(folder), "0"]
  assert (folder / "old").exists()  # far under the limit: kept for the next run

  given = tmp_path / "given"
  environ["JAX_COMPILATION_CACHE_DIR"] = str(given)
  assert _shared_environment(environ) == [str(given), "0"]
  assert not given.exists()  # used as given: JAX makes it when it first writes

  # No writable folder: one for the run, removed at its end.
  environ.pop("JAX_COMPILATION_CACHE_DIR")
  (tmp_path / "file").write_text("")
  environ[fast_compile.CACHE_ENV] = str(tmp_path / "file" / "below")
  path, _ = _shared_environment(environ)
  assert "otcxr_tests_jax_cache_" in path and not os.path.exists(path)
