"""From a config's ``data`` fields to a random-access source of decoded examples.

The synthetic dataset is built on first use (it needs no download); a real dataset must have been
built with ``mode='build_dataset'`` first, and a missing one is reported with the command to run.
"""

from __future__ import annotations

import importlib

import ml_collections

from otcxr_jax.data import tfds_source

SYNTHETIC = "synthetic_cxr"


def split_source(config: ml_collections.ConfigDict, split: str):
  """The random-access source of ``split`` of ``config.data.name`` (TensorFlow-free)."""
  d = config.data
  if d.name == SYNTHETIC:
    tfds_source.ensure_built(d.name, data_dir=d.data_dir, config=d.config)
  return tfds_source.data_source(d.name, split, data_dir=d.data_dir, config=d.config)


def class_names(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The label order of ``config.data.name`` (its builder package's ``CLASS_NAMES``)."""
  package = importlib.import_module(f"tfds_builders.{config.data.name}")
  return tuple(package.CLASS_NAMES)
