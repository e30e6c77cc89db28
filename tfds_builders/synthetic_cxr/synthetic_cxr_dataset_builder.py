"""synthetic_cxr: frontal chest radiograph phantoms with findings, boxes and pneumothorax masks.

Generated, not downloaded (``synthetic_cxr.phantom``): a seeded cohort of patients with 1-4
images each, eight NIH-style findings (``CLASS_NAMES``), boxes for the focal ones and a mask for
pneumothorax. Examples have the features of the real chest X-ray builders
(``tfds_builders.cxr_base``):

- ``image``: ``(R, R, 1)`` uint8 PNG; ``mask``: ``(R, R, 1)`` uint8 PNG in {0, 1};
- ``labels``: ``(8,)`` float32 multi-hot in ``CLASS_NAMES`` order;
- ``boxes``: ``(n, 4)`` float32 ``(ymin, xmin, ymax, xmax)`` in [0, 1], ``box_labels``: ``(n,)``
  int64 indices into ``CLASS_NAMES``;
- ``image_id``, ``patient_id``, ``view`` ("PA" or "AP"): text; ``original_size``: ``(2,)`` int32.

Splits are patient-disjoint: 80% train, 10% validation, 10% test of the patients, plus the nested
label fractions ``train_1pct`` and ``train_10pct`` of the training patients
(``tfds_builders.cxr_base.splits``, salted with the config's seed). Records are written to
ArrayRecord from PNG bytes, so neither building nor reading imports TensorFlow, and the same
config gives byte-identical files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image
from tensorflow_datasets.core import example_serializer

from tfds_builders.cxr_base import parallel, report, splits

# Relative: TFDS's build command imports this package by its name (see __init__.py).
from . import phantom

CLASS_NAMES = phantom.CLASS_NAMES
RESOLUTIONS = (64, 128, 224, 256)
DEFAULT_NUM_PATIENTS = 4000  # 2.5 images per patient on average: ~10,000 images
SPLIT_FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}
PNG_COMPRESS_LEVEL = 1


@dataclasses.dataclass(eq=False)
class SyntheticCxrConfig(tfds.core.BuilderConfig):
  """A synthetic cohort: ``num_patients`` patients drawn from ``seed``, images ``resolution``^2.

  Attributes:
    resolution: image side in pixels, an int >= 32.
    num_patients: number of patients (>= 3, so that every split has one).
    seed: non-negative int; together with the other fields it fixes every byte of the dataset.
  """

  resolution: int = 128
  num_patients: int = DEFAULT_NUM_PATIENTS
  seed: int = 0

  def __post_init__(self):
    for field, minimum in (("resolution", 32), ("num_patients", 3), ("seed", 0)):
      value = getattr(self, field)
      if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"SyntheticCxrConfig.{field} must be an int >= {minimum}, got {value!r}")
    if self.description is None:
      self.description = (f"{self.num_patients} patients, {self.resolution}x{self.resolution} "
                          f"images, seed {self.seed}.")


class Builder(tfds.core.GeneratorBasedBuilder):
  """Synthetic chest X-rays; configs '64', '128' (default), '224', '256' of ~10,000 images."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [SyntheticCxrConfig(name=str(r), resolution=r) for r in RESOLUTIONS]
  DEFAULT_CONFIG_NAME = "128"

  def __init__(self, *, file_format: str | None = None, processes: int | None = None,
               **kwargs: Any):
    """``processes``: rendering processes (``cxr_base.parallel.ExamplePool``; None: every core
    for a split of 1,000 images or more); the files are the same bytes for any number."""
    super().__init__(file_format=file_format or "array_record", **kwargs)
    self._processes = processes
    self._pool: parallel.ExamplePool | None = None

  @classmethod
  def config_for(cls, name: str | int) -> SyntheticCxrConfig:
    """The predefined config of that name, else the default cohort at that resolution."""
    name = str(name)
    if name in cls.builder_configs:
      return cls.builder_configs[name]
    if not name.isdigit():
      raise ValueError(f"synthetic_cxr: config must be a resolution such as "
                       f"{', '.join(map(str, RESOLUTIONS))}; got {name!r}")
    return SyntheticCxrConfig(name=name, resolution=int(name))

  def _info(self) -> tfds.core.DatasetInfo:
    r = self.builder_config.resolution
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(r, r, 1), encoding_format="png"),
            "labels": tfds.features.Tensor(shape=(len(CLASS_NAMES),), dtype=np.float32),
            "boxes": tfds.features.Tensor(shape=(None, 4), dtype=np.float32),
            "box_labels": tfds.features.Tensor(shape=(None,), dtype=np.int64),
            "mask": tfds.features.Image(shape=(r, r, 1), encoding_format="png"),
            "image_id": tfds.features.Text(),
            "patient_id": tfds.features.Text(),
            "view": tfds.features.Text(),
            "original_size": tfds.features.Tensor(shape=(2,), dtype=np.int32),
        }),
        metadata=tfds.core.MetadataDict(
            class_names=list(CLASS_NAMES),
            focal_classes=list(phantom.FOCAL_CLASSES),
            box_format="(ymin, xmin, ymax, xmax) in [0, 1]",
            split_rule="Seeded patient-disjoint split: 80% train, 10% validation, 10% test of the "
                       "patients.",
            split_seed=self._split_seed(),
            label_fractions={splits.fraction_split_name(f): f for f in splits.LABEL_FRACTIONS},
            cohort={"num_patients": self.builder_config.num_patients,
                    "seed": self.builder_config.seed},
        ),
    )

  def _download_and_prepare(self, dl_manager: tfds.download.DownloadManager,
                             download_config: tfds.download.DownloadConfig | None = None) -> None:
    cfg = self.builder_config
    try:
      with canonical_serialization(), parallel.ExamplePool(
          renderer, (cfg.num_patients, cfg.seed, cfg.resolution),
          processes=self._processes) as self._pool:
        super()._download_and_prepare(dl_manager=dl_manager, download_config=download_config)
    finally:
      self._pool = None

  def _split_seed(self) -> str:
    return f"synthetic_cxr/{self.builder_config.seed}"

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # nothing to download
    cfg = self.builder_config
    cohort = phantom.sample_cohort(cfg.num_patients, cfg.seed)
    patients = image_ids_by_patient(cohort)
    seed = self._split_seed()
    assignment = splits.split_patients(patients, SPLIT_FRACTIONS, seed=seed)
    fractions = splits.label_fractions(patients, assignment["train"], seed=seed)
    # TFDS writes the splits in order: the fractions reuse the training split's examples.
    kept = {i: None for ids in fractions.values() for i in ids}
    generators = {name: self._generate_examples(name, ids, kept)
                  for name, ids in assignment.items()}
    generators.update({name: self._generate_examples(name, ids, kept)
                       for name, ids in fractions.items()})
    return generators

  def _generate_examples(self, split: str, image_ids: list[str],
                         kept: dict[str, dict[str, Any] | None]
                         ) -> Iterator[tuple[str, dict[str, Any]]]:
    """Examples of ``image_ids``; those whose id is a key of ``kept`` are stored there once made."""
    progress = report.Progress(f"synthetic_cxr/{self.builder_config.name} {split}",
                               len(image_ids))
    rendered = self._pool.map(render_example, [i for i in image_ids if kept.get(i) is None])
    for done, image_id in enumerate(image_ids, start=1):
      example = kept.get(image_id)
      if example is None:
        example = next(rendered)
        if image_id in kept:
          kept[image_id] = example
      yield image_id, example
      progress.update(done)


def renderer(num_patients: int, seed: int, resolution: int
             ) -> tuple[phantom.Cohort, phantom.Renderer]:
  """What ``render_example`` needs, made once in each rendering process."""
  return phantom.sample_cohort(num_patients, seed), phantom.Renderer(resolution)


def render_example(state: tuple[phantom.Cohort, phantom.Renderer], image_id: str
                   ) -> dict[str, Any]:
  """The example of ``image_id`` (an id of ``image_ids_by_patient``)."""
  cohort, render = state
  return to_example(render(cohort, image_index(image_id)), image_id)


@contextlib.contextmanager
def canonical_serialization() -> Iterator[None]:
  """Serialises examples with sorted feature keys while active.

  TFDS stores an example as a ``tf.train.Example``, whose features are a protobuf map; the upb
  runtime writes maps in a hash order seeded per process, so the same example gives different
  bytes in different processes. ``SerializeToString(deterministic=True)`` sorts the keys, which
  makes the written files a function of the config alone.
  """
  cls = example_serializer.ExampleSerializer
  original = cls.serialize_example

  def serialize_example(self, example):
    return self.get_tf_example(example).SerializeToString(deterministic=True)

  cls.serialize_example = serialize_example
  try:
    yield
  finally:
    cls.serialize_example = original


def image_ids_by_patient(cohort: phantom.Cohort) -> dict[str, list[str]]:
  """``{patient_id: image ids}``; image ``i`` of the cohort has id ``f"{patient_id}_i{i:07d}"``."""
  out: dict[str, list[str]] = {}
  for i, p in enumerate(cohort.images["patient"]):
    pid = cohort.patient_id(int(p))
    out.setdefault(pid, []).append(f"{pid}_i{i:07d}")
  return out


def image_index(image_id: str) -> int:
  """The cohort row of an image id made by :func:`image_ids_by_patient`."""
  return int(image_id.rsplit("_i", 1)[1])


def to_example(record: phantom.Record, image_id: str) -> dict[str, Any]:
  """A phantom record in the dataset's feature format (images as PNG bytes)."""
  image = record["image"]
  return {
      "image": encode_png(image[:, :, 0]),
      "labels": record["labels"],
      "boxes": record["boxes"],
      "box_labels": record["box_labels"],
      "mask": encode_png(record["mask"]) if record["mask"].any() else _empty_png(image.shape[0]),
      "image_id": image_id,
      "patient_id": record["patient_id"],
      "view": record["view"],
      "original_size": np.asarray(image.shape[:2], np.int32),
  }


@functools.lru_cache(maxsize=8)
def _empty_png(resolution: int) -> bytes:
  return encode_png(np.zeros((resolution, resolution), np.uint8))


def encode_png(pixels: np.ndarray) -> bytes:
  """PNG bytes of a 2-D uint8 array (fast zlib level; identical bytes for identical input)."""
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
  return buffer.getvalue()
