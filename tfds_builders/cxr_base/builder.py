"""The TFDS builder the real chest X-ray datasets share.

A dataset subclass reads its annotation files into ``Record`` s (one per image, paths found by
name below the manual directory); this base assigns splits, decodes and resizes every image,
writes ArrayRecord shards, and records what it wrote and skipped in a ``BuildReport``.

A build that cannot complete with the download raises a ``BuildError`` (``ManualDirError``,
``AnnotationError``, or a split of which no image is readable); in the last case the report of what
was read is saved all the same, to ``failed_report_dir()``.

Every example has the features below (``R`` the config's resolution, ``K = len(CLASS_NAMES)``),
those of the synthetic dataset included:

- ``image``: ``(R, R, 1)`` uint8, stored as PNG (8 bits: TFDS decodes 16-bit PNGs only through
  OpenCV, and 8 bits hold the displayed range; see ``tfds_builders.cxr_base.dicom``);
- ``labels``: ``(K,)`` float32 multi-hot in ``CLASS_NAMES`` order (no finding = all zeros);
- ``boxes``: ``(n, 4)`` float32 ``(ymin, xmin, ymax, xmax)`` in [0, 1] relative to the image, and
  ``box_labels``: ``(n,)`` int64 indices into ``CLASS_NAMES`` (datasets with boxes);
- ``mask``: ``(R, R, 1)`` uint8 in {0, 1}, stored as PNG (datasets with masks);
- ``image_id``, ``patient_id``, ``view`` (e.g. "PA", "AP"; "" where unknown): text;
- ``original_size``: ``(2,)`` int32 (height, width) of the release image the boxes and masks
  annotate.

Reading needs no TensorFlow: ``builder.as_data_source(split)`` (images come back as numpy arrays,
text as bytes).
"""

from __future__ import annotations

import abc
import dataclasses
import pathlib
import sys
from typing import Any, ClassVar, Iterable, Sequence

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from tfds_builders.cxr_base import images, manual_dir, parallel, report, splits
from tfds_builders.cxr_base.errors import AnnotationError, BuildError, OptionError

RESOLUTIONS = (224, 256, 512)
BOX_TOLERANCE = 1.0  # pixels a box may extend beyond its image before it counts as outside


class ResolutionConfig(tfds.core.BuilderConfig):
  """Images (and masks) stored at ``resolution x resolution``; the config is named after it."""

  def __init__(self, *, resolution: int, **kwargs: Any):
    if not isinstance(resolution, int) or resolution < 8:
      raise ValueError(f"resolution must be an integer >= 8, got {resolution!r}")
    kwargs.setdefault("description", f"{resolution}x{resolution} 8-bit grayscale PNG images.")
    super().__init__(name=str(resolution), **kwargs)
    self.resolution = resolution


def _empty_boxes() -> np.ndarray:
  return np.zeros((0, 4), np.float32)


def _empty_box_labels() -> np.ndarray:
  return np.zeros((0,), np.int64)


@dataclasses.dataclass
class Record:
  """One image as the annotations describe it, before it is read.

  Attributes:
    image_id: unique id (the file stem).
    patient_id: unit of the patient-disjoint splits.
    path: the image file below the manual directory.
    labels: ``(K,)`` multi-hot in the builder's ``CLASS_NAMES`` order.
    view: view position when the annotations give it; else the DICOM header's is used.
    boxes: ``(n, 4)`` pixel ``(ymin, xmin, ymax, xmax)`` in ``frame``.
    box_labels: ``(n,)`` class indices of ``boxes``.
    frame: (height, width) of the pixel grid of ``boxes`` and masks; ``None``: the decoded image's.
    features: values of the builder's dataset-specific features.
    mask_source: what the builder's ``_decode_mask`` needs (masked datasets only).
  """

  image_id: str
  patient_id: str
  path: pathlib.Path
  labels: np.ndarray
  view: str = ""
  boxes: np.ndarray = dataclasses.field(default_factory=_empty_boxes)
  box_labels: np.ndarray = dataclasses.field(default_factory=_empty_box_labels)
  frame: tuple[int, int] | None = None
  features: dict[str, Any] = dataclasses.field(default_factory=dict)
  mask_source: Any = None


@dataclasses.dataclass
class Annotations:
  """What a dataset's annotation files say, and which of their images are present.

  Attributes:
    records: annotated images found below the manual directory.
    missing: annotated image ids without a file.
    counts: counts parsed from the annotation files (compared with ``EXPECTED_COUNTS``).
    splits: official ``{split: image ids}``, or ``None`` for the seeded 70/15/15 split.
    warnings: remarks for the build report.
  """

  records: list[Record]
  missing: list[str]
  counts: dict[str, Any]
  splits: dict[str, list[str]] | None = None
  warnings: list[str] = dataclasses.field(default_factory=list)


class CxrBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the real-dataset builders; subclasses define the class attributes and hooks."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS: ClassVar[list[ResolutionConfig]] = [
      ResolutionConfig(resolution=r) for r in RESOLUTIONS]
  CLASS_NAMES: ClassVar[tuple[str, ...]]
  HAS_BOXES: ClassVar[bool] = True
  HAS_MASK: ClassVar[bool] = False
  EXPECTED_COUNTS: ClassVar[dict[str, Any]] = {}
  DESCRIPTION: ClassVar[str] = ""
  HOMEPAGE: ClassVar[str] = ""
  CITATION: ClassVar[str] = ""
  SPLIT_NOTE: ClassVar[str] = (
      "Seeded patient-disjoint split: 70% train, 15% validation, 15% test of the patients.")

  def __init__(self, *, file_format: str | None = None, processes: int | None = None,
               **kwargs: Any):
    """``processes``: decoding processes (``cxr_base.parallel.ExamplePool``; None: every core
    for a split of 1,000 images or more); the files are the same bytes for any number."""
    # A resolution without a predefined config (``config="64"``, as TFDS's build command passes
    # ``--config=64``) gets a config of its own, as ``config_for`` makes it.
    config = kwargs.get("config")
    if isinstance(config, (str, int)) and str(config) not in self.builder_configs:
      kwargs["config"] = self.config_for(config)
    super().__init__(file_format=file_format or "array_record", **kwargs)
    self._report: report.BuildReport | None = None
    self._tally: report.SplitTally | None = None
    self._skipped: dict[str, dict[str, str]] = {}
    self._outside: dict[str, dict[str, Any]] = {}
    self._fractions: dict[str, list[str]] | None = None
    self._failed_dir: epath.Path | None = None
    self._processes = processes
    self._pool: parallel.ExamplePool | None = None

  @classmethod
  def config_for(cls, name: str | int) -> ResolutionConfig:
    """The predefined config of that name, else a config of that resolution (e.g. "64")."""
    name = str(name)
    if name in cls.builder_configs:
      return cls.builder_configs[name]
    if not name.isdigit():
      raise OptionError(f"{cls.name}: config must be a resolution such as "
                        f"{', '.join(map(str, RESOLUTIONS))} (or any other integer >= 8); got "
                        f"{name!r}")
    try:
      return ResolutionConfig(resolution=int(name))
    except ValueError as e:
      raise OptionError(f"{cls.name}: config {name!r}: {e}") from None

  # Hooks for the datasets.

  @abc.abstractmethod
  def _read_annotations(self, files: manual_dir.FileIndex) -> Annotations:
    """Parses the annotation files and locates the images."""

  def _extra_features(self) -> dict[str, tfds.features.FeatureConnector]:
    """Dataset-specific features, filled from ``Record.features``."""
    return {}

  def _decode_mask(self, record: Record, frame: tuple[int, int]) -> np.ndarray:
    """The full-resolution ``frame``-shaped binary mask of a record (masked datasets)."""
    raise NotImplementedError(f"{self.name} has no masks")

  # TFDS interface.

  def _info(self) -> tfds.core.DatasetInfo:
    r = self.builder_config.resolution
    features: dict[str, tfds.features.FeatureConnector] = {
        "image": tfds.features.Image(shape=(r, r, 1), encoding_format="png"),
        "labels": tfds.features.Tensor(shape=(len(self.CLASS_NAMES),), dtype=np.float32),
        "image_id": tfds.features.Text(),
        "patient_id": tfds.features.Text(),
        "view": tfds.features.Text(),
        "original_size": tfds.features.Tensor(shape=(2,), dtype=np.int32),
    }
    if self.HAS_BOXES:
      features["boxes"] = tfds.features.Tensor(shape=(None, 4), dtype=np.float32)
      features["box_labels"] = tfds.features.Tensor(shape=(None,), dtype=np.int64)
    if self.HAS_MASK:
      features["mask"] = tfds.features.Image(shape=(r, r, 1), encoding_format="png")
    features.update(self._extra_features())
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.DESCRIPTION,
        features=tfds.features.FeaturesDict(features),
        homepage=self.HOMEPAGE,
        citation=self.CITATION,
        metadata=tfds.core.MetadataDict(
            class_names=list(self.CLASS_NAMES),
            box_format="(ymin, xmin, ymax, xmax) in [0, 1]",
            split_rule=self.SPLIT_NOTE,
            split_seed=splits.SEED,
            label_fractions={splits.fraction_split_name(f): f for f in splits.LABEL_FRACTIONS},
        ),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    # DownloadManager.manual_dir raises a bare AssertionError; check_manual_dir explains.
    root = manual_dir.check_manual_dir(
        getattr(dl_manager, "_manual_dir", None), dataset=self.name,
        instructions=self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    files = manual_dir.FileIndex(root, dataset=self.name,
                                 instructions=self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    try:
      annotations = self._read_annotations(files)
    except AnnotationError:
      raise
    except ValueError as e:  # a malformed annotation file; the message names it
      raise AnnotationError(f"{self.name}: {e} (manual directory {root})") from e
    if not annotations.records:
      raise files.error(f"none of the {len(annotations.missing)} annotated images was found")
    by_id = {r.image_id: r for r in annotations.records}
    patients = splits.group_by_patient({r.image_id: r.patient_id for r in annotations.records})
    assignment = annotations.splits or splits.split_patients(patients, splits.RANDOM_SPLIT)
    empty = [name for name, ids in assignment.items() if not ids]
    if empty:
      raise files.error(f"too few patients ({len(patients)}) for the splits {empty}")

    self._report = report.BuildReport(
        dataset=self.name, config=self.builder_config.name, version=str(self.version),
        manual_dir=str(root), class_names=list(self.CLASS_NAMES), annotations=annotations.counts,
        release_differences=report.release_differences(annotations.counts, self.EXPECTED_COUNTS),
        missing=sorted(annotations.missing), warnings=list(annotations.warnings))
    self._tally = report.SplitTally(list(self.CLASS_NAMES))
    self._skipped = {}
    self._outside = {}
    self._fractions = None
    if annotations.missing:
      print(f"{self.name}: {len(annotations.missing)} annotated images are not below {root} and "
            "will be missing from the dataset (listed in the build report).",
            file=sys.stderr, flush=True)
    train = [by_id[i] for i in assignment["train"]]
    generators = {name: self._generate_examples(name, [by_id[i] for i in ids])
                  for name, ids in assignment.items()}
    for fraction in splits.LABEL_FRACTIONS:
      name = splits.fraction_split_name(fraction)
      generators[name] = self._generate_fraction(name, train)
    return generators

  def _generate_fraction(self, split: str, train: list[Record]):
    """A label-fraction split, drawn when first needed from the readable training patients.

    TFDS writes the splits in order, so by then the training split has been read and its
    unreadable images are known: a fraction never holds a patient without a readable image.
    """
    if self._fractions is None:
      readable = [r for r in train if r.image_id not in self._skipped]
      patients = splits.group_by_patient({r.image_id: r.patient_id for r in readable})
      self._fractions = splits.label_fractions(patients, [r.image_id for r in readable])
    by_id = {r.image_id: r for r in train}
    yield from self._generate_examples(split, [by_id[i] for i in self._fractions[split]])

  def _generate_examples(self, split: str, records: list[Record]):
    progress = report.Progress(f"{self.name}/{self.builder_config.name} {split}", len(records))
    written, skipped = 0, []
    made = self._pool.map(example_or_reason, records)
    for done, (record, (result, reason)) in enumerate(zip(records, made), start=1):
      if result is None:
        self._tally.skip(split)
        skipped.append(self._skipped.setdefault(record.image_id, {
            "image_id": record.image_id, "path": str(record.path), "reason": reason}))
      else:
        example, outside = result
        self._tally.add(split, patient_id=record.patient_id, labels=record.labels,
                        boxes=len(record.boxes), boxes_outside=outside.get("boxes", 0))
        if outside:
          self._outside.setdefault(record.image_id, outside)
        written += 1
        yield record.image_id, example
      progress.update(done)
    if records and not written:
      self._fail_empty_split(split, skipped)

  def _fail_empty_split(self, split: str, skipped: list[dict[str, str]]) -> None:
    """Saves the report of what was read so far and raises a ``BuildError`` pointing to it."""
    directory = self.failed_report_dir()
    example = skipped[0]
    message = (f"{self.name}/{self.builder_config.name}: no image of the {split} split is "
               f"readable (all {len(skipped)} skipped, e.g. {example['path']}: "
               f"{example['reason']}), so nothing was built; every skipped file and why: "
               f"{directory / report.FILENAME}")
    self._final_report(error=message).write(directory)
    raise BuildError(message)

  def failed_report_dir(self) -> epath.Path:
    """Where a build that failed part-way saves its report: beside the version directory,
    ``<data_dir>/<name>/<config>/<version>.failed/`` (TFDS would take a version directory that
    exists for a built dataset)."""
    if self._failed_dir is None:  # outside download_and_prepare: data_dir is the final one
      return epath.Path(self.data_dir).with_name(f"{self.version}.failed")
    return self._failed_dir

  def download_and_prepare(self, **kwargs: Any) -> None:
    # During the build ``data_dir`` is a temporary directory that TFDS deletes on failure.
    self._failed_dir = epath.Path(self.data_dir).with_name(f"{self.version}.failed")
    try:
      super().download_and_prepare(**kwargs)
    finally:
      self._failed_dir = None

  def _final_report(self, error: str | None) -> report.BuildReport:
    return dataclasses.replace(
        self._report, splits=self._tally.result(),
        skipped=sorted(self._skipped.values(), key=lambda s: s["image_id"]),
        boxes_outside=sorted(self._outside.values(), key=lambda s: s["image_id"]),
        error=error)

  def _download_and_prepare(self, dl_manager, download_config=None) -> None:
    try:
      # Worker processes hold copies of this builder (TFDS builders pickle as their arguments).
      with parallel.ExamplePool(_same, (self,), processes=self._processes) as self._pool:
        super()._download_and_prepare(dl_manager=dl_manager, download_config=download_config)
    finally:
      self._pool = None
    if self._report is None:  # TFDS generated nothing (max_examples_per_split=0)
      return
    done = self._final_report(error=None)
    done.write(self.data_path)
    failed = self.failed_report_dir()
    if failed.exists():  # an earlier failed attempt's report no longer applies
      failed.rmtree()
    self.info.metadata["build_report"] = {
        "images": {name: s.images for name, s in done.splits.items()},
        "skipped": len(done.skipped), "missing": len(done.missing),
        "boxes_outside": sum(s.boxes_outside for s in done.splits.values()),
        "differs_from_release": sorted(done.release_differences)}
    print(done.summary(), file=sys.stderr, flush=True)

  # Examples.

  def _example(self, record: Record) -> tuple[dict[str, Any], dict[str, Any]]:
    """The example of ``record``, and what to report of its boxes outside the image (``{}`` if
    none is)."""
    resolution = self.builder_config.resolution
    source = images.load(record.path)
    frame = record.frame or source.size
    example = {
        "image": images.encode_png(images.to_uint8(images.resize(source.pixels, resolution))),
        "labels": np.asarray(record.labels, np.float32),
        "image_id": record.image_id,
        "patient_id": record.patient_id,
        "view": record.view or source.view_position,
        "original_size": np.asarray(frame, np.int32),
    }
    outside = {}
    if self.HAS_BOXES:
      example["boxes"] = normalise_boxes(record.boxes, frame)
      example["box_labels"] = np.asarray(record.box_labels, np.int64)
      count = boxes_outside(record.boxes, frame)
      if count:
        boxes = np.asarray(record.boxes, np.float64).reshape(-1, 4)
        outside = {"image_id": record.image_id, "path": str(record.path), "boxes": count,
                   "image_size": [int(frame[0]), int(frame[1])],
                   "extent": [round(float(v), 1) for v in (
                       boxes[:, 0].min(), boxes[:, 1].min(), boxes[:, 2].max(),
                       boxes[:, 3].max())]}
    if self.HAS_MASK:
      mask = self._decode_mask(record, frame)
      if mask.shape != tuple(frame):
        raise ValueError(f"mask of shape {mask.shape} for an image of size {tuple(frame)}")
      example["mask"] = images.encode_png(images.resize_mask(mask, resolution))
    example.update(record.features)
    return example, outside


def _same(builder: CxrBuilder) -> CxrBuilder:
  return builder


def example_or_reason(builder: CxrBuilder, record: Record
                      ) -> tuple[tuple[dict[str, Any], dict[str, Any]] | None, str | None]:
  """``(builder._example(record), None)``, or ``(None, why)`` for an unreadable image."""
  try:
    return builder._example(record), None  # pylint: disable=protected-access
  except Exception as e:  # noqa: BLE001 - an unreadable image is skipped and reported
    return None, f"{type(e).__name__}: {e}"


def normalise_boxes(boxes: np.ndarray, frame: tuple[int, int]) -> np.ndarray:
  """Pixel ``(ymin, xmin, ymax, xmax)`` in a ``(height, width)`` frame -> [0, 1] coordinates,
  clipped to the image (``boxes_outside`` counts the boxes that needed it)."""
  height, width = frame
  scale = np.array([height, width, height, width], np.float64)
  return np.clip(np.asarray(boxes, np.float64).reshape(-1, 4) / scale, 0.0, 1.0).astype(np.float32)


def multi_hot(names: Iterable[str], class_names: Sequence[str]) -> np.ndarray:
  """``(K,)`` float32 with ones at the indices of ``names`` in ``class_names``."""
  out = np.zeros(len(class_names), np.float32)
  for name in names:
    out[class_names.index(name)] = 1.0
  return out


def boxes_outside(boxes: np.ndarray, frame: tuple[int, int],
                  tolerance: float = BOX_TOLERANCE) -> int:
  """How many pixel ``(ymin, xmin, ymax, xmax)`` boxes extend beyond a ``(height, width)`` image
  by more than ``tolerance`` pixels."""
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  height, width = frame
  beyond = ((boxes[:, :2] < -tolerance).any(axis=1) | (boxes[:, 2] > height + tolerance)
            | (boxes[:, 3] > width + tolerance))
  return int(beyond.sum())
