"""Expected failures: what a user did or gave that the run cannot use.

``otcxr_jax.main`` (and the other command-line entry points) print an expected failure as a few
lines naming the file, field or value and what was expected, without a traceback, and exit with
status 2; ``--verbosity=1`` adds the traceback. Anything else is a bug and keeps its traceback.

Raise :class:`UserError` (or a subclass) for such failures. Exceptions of other packages that are
expected failures too (``tfds_builders``' ``BuildError``: a missing manual directory or file, a
malformed annotation file, a split of which no image is readable) are listed by
:func:`external_expected`, so ``tfds_builders`` never imports this package.
"""

from __future__ import annotations


class UserError(Exception):
  """An expected failure: the message alone tells the user what to fix."""


def external_expected() -> tuple[type[BaseException], ...]:
  """Exception types from outside ``otcxr_jax`` that are expected failures too."""
  from tfds_builders.cxr_base.errors import BuildError  # ManualDirError is one
  return (BuildError,)
