"""TFDS datasets as TensorFlow-free random-access sources (ArrayRecord files).

``data_source`` returns ``builder.as_data_source(split)``: indexing it reads one ArrayRecord entry
and decodes it with the builder's features into numpy (PNG images through Pillow, text as bytes),
so grain can read it and TensorFlow is never imported. Builders are looked up by name in the TFDS
registry after importing ``tfds_builders.<name>`` (the package that registers them); a config is
given by name (``"128"``), by a ``BuilderConfig`` instance, or, for builders with a
``config_for(name)`` class method, by any name that method accepts (e.g. a resolution).
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from typing import Any, Mapping

import tensorflow_datasets as tfds

from otcxr_jax.data import build_lock
from otcxr_jax.training.distributed import print0

#: TFDS warnings about what this project does on purpose, left out of the log: configs made for
#: any resolution or cohort (``config_for``), looking for a dataset before it is built, decoding
#: PNG with Pillow (OpenCV is no dependency).
EXPECTED_TFDS_WARNINGS = ("Using custom data configuration", "Variant folder %s has no",
                          "OpenCV is not installed")


class _DropExpectedWarnings(logging.Filter):

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(EXPECTED_TFDS_WARNINGS)


def quiet_tfds() -> None:
  """Keeps TFDS's progress bars (the builders print their own lines: images/s, ETA) and
  ``EXPECTED_TFDS_WARNINGS`` out of the log; other TFDS warnings still show."""
  tfds.disable_progress_bar()
  absl_logger = logging.getLogger("absl")  # TFDS logs through absl
  if not any(isinstance(f, _DropExpectedWarnings) for f in absl_logger.filters):
    absl_logger.addFilter(_DropExpectedWarnings())


def data_source(name: str, split: str, *, data_dir: str | os.PathLike,
                config: str | tfds.core.BuilderConfig | None = None,
                builder_kwargs: Mapping[str, Any] | None = None):
  """Random-access source of ``split`` of a prepared dataset.

  Args:
    name: TFDS dataset name, e.g. "synthetic_cxr".
    split: split name ("train", "validation", "test", "train_10pct", ...), or a TFDS split
      expression over them ("train[:10%]", "train+validation").
    data_dir: TFDS data directory (``~`` expanded).
    config: builder config name or instance; None for the builder's default.
    builder_kwargs: further keyword arguments for the builder.

  Returns:
    A ``len``-able, indexable source whose items are dicts of numpy arrays (and bytes for text).

  Raises:
    FileNotFoundError: the dataset has not been prepared in ``data_dir``.
    ValueError: unknown split.
  """
  builder = _builder(name, data_dir=data_dir, config=config, builder_kwargs=builder_kwargs)
  if not builder.is_prepared():
    raise FileNotFoundError(
        f"{name}/{builder.builder_config.name if builder.builder_config else ''} is not prepared "
        f"in {builder.data_dir}; build it first (tfds_source.ensure_built, or "
        f"mode='build_dataset' for the real datasets).")
  known = set(builder.info.splits.keys())
  unknown = [part for part in split.split("+") if part.split("[")[0].strip() not in known]
  if unknown:
    raise ValueError(f"{name} has no split {unknown[0]!r}; it has {sorted(known)}")
  return builder.as_data_source(split)


def ensure_built(name: str, *, data_dir: str | os.PathLike,
                 config: str | tfds.core.BuilderConfig | None = None,
                 manual_dir: str | os.PathLike | None = None,
                 builder_kwargs: Mapping[str, Any] | None = None) -> tfds.core.DatasetBuilder:
  """Prepares the dataset in ``data_dir`` unless it already is; returns its builder.

  Args:
    name: TFDS dataset name.
    data_dir: TFDS data directory (``~`` expanded).
    config: builder config name or instance; None for the builder's default.
    manual_dir: the hand-downloaded files, for builders that need them (``~`` expanded).
    builder_kwargs: further keyword arguments for the builder.
  """
  builder = _builder(name, data_dir=data_dir, config=config, builder_kwargs=builder_kwargs)
  label = f"{builder.name}/{builder.builder_config.name}" if builder.builder_config else name
  if builder.is_prepared():
    print0(f"{label}: found in {builder.data_dir}")
    return builder
  # Another process may be preparing it: one build at a time (build_lock), then look again.
  with build_lock.build_lock(os.path.dirname(builder.data_dir), label=label, say=print0):
    builder = _builder(name, data_dir=data_dir, config=config, builder_kwargs=builder_kwargs)
    if builder.is_prepared():
      print0(f"{label}: found in {builder.data_dir} (prepared meanwhile by another process)")
      return builder
    return _prepare(builder, label, manual_dir)


def _prepare(builder: tfds.core.DatasetBuilder, label: str,
             manual_dir: str | os.PathLike | None) -> tfds.core.DatasetBuilder:
  print0(f"{label}: preparing in {builder.data_dir} ...")
  start = time.monotonic()
  download_config = None
  if manual_dir is not None:
    download_config = tfds.download.DownloadConfig(manual_dir=os.path.expanduser(manual_dir))
  builder.download_and_prepare(download_config=download_config)
  counts = ", ".join(f"{split} {info.num_examples}" for split, info in builder.info.splits.items())
  print0(f"{label}: prepared in {time.monotonic() - start:.1f} s ({counts})")
  return builder


def _builder(name: str, *, data_dir: str | os.PathLike,
             config: str | tfds.core.BuilderConfig | None,
             builder_kwargs: Mapping[str, Any] | None) -> tfds.core.DatasetBuilder:
  if not isinstance(name, str) or not name or "/" in name or ":" in name:
    raise ValueError(f"name must be a bare dataset name such as 'synthetic_cxr' (the config goes "
                     f"in `config`), got {name!r}")
  quiet_tfds()
  cls = _builder_class(name)
  if isinstance(config, (str, int)) and hasattr(cls, "config_for"):
    config = cls.config_for(config)
  kwargs = dict(builder_kwargs or {})
  return cls(config=config, data_dir=os.path.expanduser(os.fspath(data_dir)), **kwargs)


def _builder_class(name: str) -> type[tfds.core.DatasetBuilder]:
  """The registered builder class, after importing ``tfds_builders.<name>`` if it exists."""
  try:
    importlib.import_module(f"tfds_builders.{name}")
  except ModuleNotFoundError as e:
    if e.name not in (f"tfds_builders.{name}", "tfds_builders"):
      raise
  return tfds.builder_cls(name)
