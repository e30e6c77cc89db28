"""``otcxr_jax.main`` dispatches to a module per mode (``otcxr_jax.modes``), and the build errors
are expected failures (a line or two on stderr, exit status 2); the command itself runs in
``tests/e2e/test_main_command.py``."""

from otcxr_jax import errors, modes


def test_every_mode_has_a_module_with_run():
  for mode in modes.MODES:
    module = modes.module(mode)
    assert module.__name__ == f"otcxr_jax.modes.{mode}"
    assert callable(getattr(module, "run", None)), f"{module.__name__}.run (mode {mode!r})"
    assert callable(getattr(module, "validate", lambda c: None))


def test_build_errors_are_expected_failures():
  from tfds_builders.cxr_base import AnnotationError, BuildError, ManualDirError, OptionError
  expected = (errors.UserError, *errors.external_expected())
  for cls in (BuildError, ManualDirError, AnnotationError, OptionError):
    assert issubclass(cls, expected), cls
