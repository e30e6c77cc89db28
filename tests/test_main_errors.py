"""``otcxr_jax.main`` dispatches to a module per mode, and the build errors are expected failures
(a line or two on stderr, exit status 2); the command itself runs in
``tests/e2e/test_main_command.py``."""

import importlib

from otcxr_jax import config_lib, errors, main


def test_every_mode_has_a_module_with_run():
  assert tuple(main._MODE_MODULES) == config_lib.MODES
  for mode, module_name in main._MODE_MODULES.items():
    module = importlib.import_module(module_name)
    assert callable(getattr(module, "run", None)), f"{module_name}.run (mode {mode!r})"


def test_build_errors_are_expected_failures():
  from tfds_builders.cxr_base import AnnotationError, BuildError, ManualDirError, OptionError
  expected = (errors.UserError, *errors.external_expected())
  for cls in (BuildError, ManualDirError, AnnotationError, OptionError):
    assert issubclass(cls, expected), cls
