"""Expected build failures: the download (or a build option) cannot be built as given.

Their messages alone tell the user what to fix, naming the file, split or value, so a command-line
entry point prints them as a line or two without a traceback (``otcxr_jax.main`` and
``python -m otcxr_jax.data.build`` do). Anything else a build raises is a bug.
"""

from __future__ import annotations


class BuildError(Exception):
  """A build that cannot complete with this download or these options."""


class AnnotationError(BuildError, ValueError):
  """An annotation file (CSV or list) of the download is malformed or inconsistent."""


class OptionError(BuildError, ValueError):
  """A build option the builders cannot use (a config that is no resolution)."""
