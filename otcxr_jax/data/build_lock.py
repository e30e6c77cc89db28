"""One build of a dataset at a time: an exclusive lock on a file beside the dataset's versions.

Two runs started at once on a machine without the dataset (two terminals, two jobs sharing a
``data.data_dir``) would both prepare it, and TFDS's final rename fails in all but one of them
(``FileExistsError: Cannot rename ... incomplete.XXXXXX_1.0.0``). Under the lock the first
prepares it; the others say whom they wait for, wait, and then find it prepared.

The lock is ``fcntl.flock`` on ``<data_dir>/<name>/<config>/.build.lock`` (the file names the
holder: host, pid and start time). The kernel releases it when its process ends, however it ends,
so a killed build never leaves a stale lock; the file itself stays and is harmless. Remote data
directories (``gs://...``) are not locked: a multi-host run prepares the synthetic dataset on
process 0 alone, and the real datasets are built once, with ``mode='build_dataset'``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from typing import Callable, Iterator

LOCK_FILE = ".build.lock"


def is_remote(directory: str | os.PathLike) -> bool:
  """Whether ``directory`` names a remote location (``gs://``, any ``scheme://``): the test of
  ``training.checkpoint.is_remote``, kept here so that reading data never imports orbax."""
  return "://" in os.fspath(directory)


@contextlib.contextmanager
def build_lock(directory: str | os.PathLike, *, label: str,
               say: Callable[[str], None] = print) -> Iterator[None]:
  """Holds the build lock of the dataset whose versions live in ``directory``.

  Args:
    directory: ``<data_dir>/<name>/<config>``, created if absent (``~`` expanded).
    label: the dataset as messages name it, e.g. ``'synthetic_cxr/64_p10000'``.
    say: where the one line about waiting goes.
  """
  if is_remote(directory):
    yield
    return
  directory = os.path.expanduser(os.fspath(directory))
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, LOCK_FILE)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(fd, 1024, 0).decode("utf-8", "replace").strip() or "another process"
      say(f"{label}: {holder} is preparing it; waiting for that build to finish (lock {path}) ...")
      start = time.monotonic()
      fcntl.flock(fd, fcntl.LOCK_EX)
      say(f"{label}: the other build ended after {time.monotonic() - start:.0f} s of waiting")
    os.ftruncate(fd, 0)
    os.pwrite(fd, (f"host {socket.gethostname()}, pid {os.getpid()}, started "
                   f"{time.strftime('%Y-%m-%d %H:%M:%S')}").encode(), 0)
    try:
      yield
    finally:
      os.ftruncate(fd, 0)
      fcntl.flock(fd, fcntl.LOCK_UN)
  finally:
    os.close(fd)
