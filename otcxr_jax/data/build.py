"""Builds a real dataset's ArrayRecord files from its manual download.

Two ways, one builder (docs/datasets.md):

* ``python -m otcxr_jax.main --config configs/build.py:dataset=nih --config.data.manual_dir=/path``
  (``mode='build_dataset'``; ``dataset=nih|vinbig|rsna|siim``) calls ``build_dataset``;
* ``python -m otcxr_jax.data.build tfds_builders/<name> --manual_dir=/path --config=224`` runs
  the ``build`` command of TFDS's ``tfds`` launcher (same arguments) without the launcher, which
  in tensorflow-datasets 4.9.10 needs apache-beam, not a dependency of this project. ``--config``
  takes any integer resolution, not only the predefined 224, 256 and 512.

Both print an expected failure (``tfds_builders.cxr_base.BuildError``: a missing manual
directory or file, a malformed annotation file, a split of which no image is readable) as one line
without a traceback and exit with status 2; ``--verbosity=1`` shows the traceback.

Building and reading never import TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any, Sequence

import tensorflow_datasets as tfds
from etils import epath

from otcxr_jax import config_lib, errors
from otcxr_jax.data import build_lock, tfds_source
from tfds_builders.cxr_base import BuildReport, CxrBuilder, manual_dir as manual_dir_lib

REAL_DATASETS = ("nih_chest_xray14", "vinbig_cxr", "rsna_pneumonia", "siim_acr_pneumothorax")


def builder_class(name: str) -> type[CxrBuilder]:
  """The builder class of ``tfds_builders/<name>``."""
  if name not in REAL_DATASETS:
    raise config_lib.ConfigError(
        f"unknown dataset {name!r}; the real datasets are {list(REAL_DATASETS)}")
  return importlib.import_module(f"tfds_builders.{name}").Builder


def dataset_dir(name: str, *, config: str, data_dir: str) -> epath.Path:
  """``<data_dir>/<name>/<config>/<version>/``, where ``build_dataset`` writes (``~`` expanded)."""
  cls = builder_class(name)
  return (epath.Path(os.path.expanduser(data_dir)) / name / cls.config_for(config).name
          / str(cls.VERSION))


def build_dataset(name: str, *, config: str, data_dir: str, manual_dir: str | None,
                  **builder_kwargs: Any) -> BuildReport:
  """Builds ``name`` at resolution ``config`` into ``data_dir`` from ``manual_dir``.

  Args:
    name: one of ``REAL_DATASETS``.
    config: a resolution config: "224", "256", "512", or any other integer as a string.
    data_dir: TFDS data directory (``~`` expanded).
    manual_dir: the extracted manual download (``~`` expanded).
    **builder_kwargs: passed to the builder (e.g. ``file_format``; ArrayRecord by default).

  Returns:
    The build report, also saved as ``build_report.json`` next to the dataset's files (in
    ``dataset_dir(name, ...)``). An already built dataset is not rebuilt; its saved report is
    returned.

  Raises:
    ConfigError: unknown ``name``, or ``manual_dir`` is None.
    OptionError: ``config`` is no resolution.
    BuildError: the download cannot be built: ``ManualDirError`` (the manual directory or a
      required file is missing), ``AnnotationError`` (a malformed annotation file), or no image
      of a split is readable (the report is saved all the same; the message says where).
  """
  tfds_source.quiet_tfds()
  cls = builder_class(name)
  if manual_dir is None:
    raise config_lib.ConfigError(
        f"config.data.manual_dir is not set: pass --config.data.manual_dir=/path/to/the/{name} "
        f"download. What to download and where its files go: {manual_dir_lib.DOCS}, section "
        f"`{name}`.")
  def make_builder():
    return cls(config=cls.config_for(config), data_dir=os.path.expanduser(data_dir),
               **builder_kwargs)

  builder = make_builder()
  if not builder.data_path.exists():  # before TFDS announces a build that cannot start
    manual_dir_lib.check_manual_dir(manual_dir, dataset=name,
                                    instructions=cls.MANUAL_DOWNLOAD_INSTRUCTIONS)
    # One build at a time: a second run waits for the first, then finds the dataset built.
    with build_lock.build_lock(os.path.dirname(builder.data_dir),
                               label=f"{name}/{builder.builder_config.name}"):
      builder = make_builder()
      builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
          manual_dir=os.path.expanduser(manual_dir)))
  return BuildReport.read(builder.data_path)


def main(argv: Sequence[str]) -> None:
  """TFDS's ``build`` command (the ``tfds`` launcher's, same arguments) without the launcher.

  ``--config`` takes any integer resolution (the builders make a config for it). An expected
  failure exits with status 2 after one line on stderr, or shows its traceback with
  ``--verbosity=1`` (this command's only argument of its own).
  """
  import simple_parsing
  from tensorflow_datasets.scripts.cli import build as tfds_build

  own = argparse.ArgumentParser(add_help=False)
  own.add_argument("--verbosity", type=int, default=None)
  ours, rest = own.parse_known_args(list(argv))
  tfds_source.quiet_tfds()  # the builders print progress lines of their own
  try:
    simple_parsing.parse(tfds_build.Args, args=rest).execute()
  except (errors.UserError, *errors.external_expected()) as e:
    if ours.verbosity is not None:
      raise
    from otcxr_jax.main import exit_on_expected_failure
    exit_on_expected_failure(e)


if __name__ == "__main__":
  main(sys.argv[1:])
