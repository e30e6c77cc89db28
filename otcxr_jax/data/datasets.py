"""From a config's ``data`` fields to a random-access source of decoded examples.

The synthetic dataset is built on first use (it needs no download); a real dataset must have been
built with ``mode='build_dataset'`` first, and a missing one is reported with the command to run.
In a multi-process run, process 0 alone builds the synthetic dataset while the others wait, then
all read it: ``data.data_dir`` must then be shared by the hosts (a ``gs://`` bucket or a shared
filesystem).
"""

from __future__ import annotations

import importlib

import jax
import numpy as np
import ml_collections
from etils import epath
from jax.experimental import multihost_utils

from otcxr_jax.data import tfds_source

SYNTHETIC = "synthetic_cxr"
_checked: set[tuple[str, str, str]] = set()  # datasets already found or built by this process


def builder_config(config: ml_collections.ConfigDict):
  """The TFDS builder config the ``data`` fields name.

  For the synthetic dataset, ``data.synthetic_patients > 0`` asks for a cohort of that many
  patients at the resolution ``data.config`` (named ``<resolution>_p<patients>``).
  """
  d = config.data
  if d.name == SYNTHETIC and d.synthetic_patients:
    from tfds_builders.synthetic_cxr import SyntheticCxrConfig
    return SyntheticCxrConfig(name=f"{d.config}_p{d.synthetic_patients}",
                              resolution=int(d.config), num_patients=d.synthetic_patients)
  return d.config


def split_source(config: ml_collections.ConfigDict, split: str):
  """The random-access source of ``split`` of ``config.data.name`` (TensorFlow-free).

  The synthetic dataset is built if absent, by process 0 alone in a multi-process run (every
  process must then call this, in the same order, for the barrier the others wait at).

  Raises:
    FileNotFoundError: the dataset is not prepared in ``data.data_dir`` (on a process other than
      0 after process 0 built it there: the hosts do not share ``data.data_dir``).
  """
  d = config.data
  builder = builder_config(config)
  key = (d.name, str(d.data_dir), str(getattr(builder, "name", builder)))
  if d.name == SYNTHETIC and key not in _checked:
    if jax.process_index() == 0:
      tfds_source.ensure_built(d.name, data_dir=d.data_dir, config=builder,
                               builder_kwargs={"processes": d.build_processes or None})
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"datasets.split_source: {'/'.join(key)} built")
    _checked.add(key)
  try:
    return tfds_source.data_source(d.name, split, data_dir=d.data_dir, config=builder)
  except FileNotFoundError as e:
    if d.name != SYNTHETIC or jax.process_index() == 0:
      raise
    raise FileNotFoundError(
        f"{e} Process 0 built it in data.data_dir={d.data_dir!r}, which process "
        f"{jax.process_index()} does not see: in a multi-process run data.data_dir must be shared "
        f"by all hosts (a gs:// bucket or a shared filesystem).") from e


class Subset:
  """Examples ``indices`` of a random-access source, in that order (a random-access source
  itself)."""

  def __init__(self, source, indices):
    self._source, self._indices = source, np.asarray(indices, np.int64)

  def __len__(self) -> int:
    return len(self._indices)

  def __getitem__(self, index: int):
    return self._source[int(self._indices[index])]

  def __repr__(self) -> str:
    return f"Subset({len(self)} of {len(self._source)} examples of {self._source!r})"


#: The labelled subset of ``probe.train_examples`` is the same for every run and seed.
PROBE_SUBSET_SEED = 0


def probe_sources(config: ml_collections.ConfigDict) -> dict[str, object]:
  """``{'train' | 'validation' | 'test': source}`` of a linear probe: ``data.train_split``,
  ``data.val_split`` and ``data.test_split``, the training split cut to ``probe.train_examples``
  images (when not 0) drawn at random without replacement (seed :data:`PROBE_SUBSET_SEED`, kept
  in the split's order): the labels a probe reads when pretraining saw every image.

  Raises:
    ValueError: ``probe.train_examples`` exceeds the training split.
  """
  d = config.data
  sources = {"train": split_source(config, d.train_split),
             "validation": split_source(config, d.val_split),
             "test": split_source(config, d.test_split)}
  wanted, total = config.probe.train_examples, len(sources["train"])
  if wanted > total:
    raise ValueError(f"config.probe.train_examples={wanted} exceeds the {total:,} images of "
                     f"split {d.train_split!r} of {dataset_name(config)}: give at most {total} "
                     "(0 for all).")
  if wanted:
    chosen = np.random.default_rng(PROBE_SUBSET_SEED).choice(total, size=wanted, replace=False)
    sources["train"] = Subset(sources["train"], np.sort(chosen))
  return sources


def dataset_name(config: ml_collections.ConfigDict) -> str:
  """``'<data.name>/<builder config name>'``, the dataset a run read as its results record it."""
  builder = builder_config(config)
  return f"{config.data.name}/{getattr(builder, 'name', builder)}"


def features(config: ml_collections.ConfigDict) -> frozenset[str]:
  """The features ``config.data``'s dataset stores (``'image'``, ``'labels'``, ``'boxes'``,
  ``'mask'``, ...), read from its builder's info: nothing is built or read."""
  import tensorflow_datasets as tfds
  name = config.data.name
  importlib.import_module(f"tfds_builders.{name}")  # registers the builder
  cls = tfds.builder_cls(name)
  config_of_builder = builder_config(config)
  if isinstance(config_of_builder, str) and hasattr(cls, "config_for"):
    config_of_builder = cls.config_for(config_of_builder)
  builder = cls(config=config_of_builder,
                data_dir=str(epath.Path(config.data.data_dir).expanduser()))
  return frozenset(builder.info.features)


def class_names(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The label order of ``config.data.name`` (its builder package's ``CLASS_NAMES``)."""
  package = importlib.import_module(f"tfds_builders.{config.data.name}")
  return tuple(package.CLASS_NAMES)
