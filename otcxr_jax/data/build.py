"""Builds a real dataset's ArrayRecord files from its manual download.

Two ways, one builder (docs/datasets.md):

* ``python -m otcxr_jax.main --config configs/build_<name>.py --config.data.manual_dir=/path``
  (``mode='build_dataset'``) calls ``build_dataset``;
* ``tfds build tfds_builders/<name> --manual_dir=/path --config=224`` with the repository root on
  ``PYTHONPATH``. tensorflow-datasets 4.9.10's ``tfds`` launcher imports apache-beam on start-up
  (for its ``convert_format`` command) although ``build`` does not use it;
  ``python -m otcxr_jax.data.build <the same arguments>`` runs tfds's ``build`` command itself,
  without that import.

Building and reading never import TensorFlow.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any, Sequence

import tensorflow_datasets as tfds

from tfds_builders.cxr_base import BuildReport, CxrBuilder, report

REAL_DATASETS = ("nih_chest_xray14", "vinbig_cxr", "rsna_pneumonia", "siim_acr_pneumothorax")


def builder_class(name: str) -> type[CxrBuilder]:
  """The builder class of ``tfds_builders/<name>``."""
  if name not in REAL_DATASETS:
    raise ValueError(f"unknown dataset {name!r}; the real datasets are {list(REAL_DATASETS)}")
  return importlib.import_module(f"tfds_builders.{name}").Builder


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
    The build report, also saved as ``build_report.json`` next to the dataset's files. An already
    built dataset is not rebuilt; its saved report is returned.

  Raises:
    ValueError: unknown ``name`` or ``config``, or ``manual_dir`` is None.
    ManualDirError: the manual directory or a required file is missing (with instructions).
  """
  cls = builder_class(name)
  if manual_dir is None:
    raise ValueError(
        f"config.data.manual_dir is not set: pass --config.data.manual_dir=/path/to/the/{name} "
        f"download.\n{cls.MANUAL_DOWNLOAD_INSTRUCTIONS}")
  builder = cls(config=cls.config_for(config), data_dir=os.path.expanduser(data_dir),
                **builder_kwargs)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=os.path.expanduser(manual_dir)))
  print(f"{name}/{builder.builder_config.name}: {builder.data_path} "
        f"(report: {builder.data_path / report.FILENAME})", flush=True)
  return BuildReport.read(builder.data_path)


def main(argv: Sequence[str]) -> None:
  """``tfds build`` (its ``build`` command, same arguments) without the launcher's imports."""
  import simple_parsing
  from tensorflow_datasets.scripts.cli import build as tfds_build

  simple_parsing.parse(tfds_build.Args, args=list(argv)).execute()


if __name__ == "__main__":
  main(sys.argv[1:])
