"""Build reports (counts per split and class, skipped and missing images) and progress lines."""

from __future__ import annotations

import collections
import dataclasses
import json
import sys
import time
from typing import Any, Callable, Mapping

from etils import epath

FILENAME = "build_report.json"
_SHOWN = 10  # skipped/missing images listed in the printed summary (all are in the JSON)


@dataclasses.dataclass
class SplitCounts:
  """What one split holds after the build (skipped images excluded)."""

  images: int = 0
  patients: int = 0
  boxes: int = 0
  skipped: int = 0
  boxes_outside: int = 0
  class_counts: dict[str, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class BuildReport:
  """Everything a build read, wrote, skipped and found missing; saved as ``build_report.json``.

  Attributes:
    annotations: counts parsed from the annotation files, before any image is read.
    release_differences: ``{count: {"expected": ..., "found": ...}}`` for every count of the
      official release (docs/datasets.md) that the annotations do not reproduce; empty for a
      complete, unmodified download.
    splits: counts per split.
    skipped: unreadable images, ``{"image_id", "path", "reason"}``, each once.
    missing: image ids the annotations list but no file below the manual directory holds.
    boxes_outside: images with boxes that extend beyond the image by more than a pixel (stored
      clipped to it), each once: ``{"image_id", "path", "boxes": how many, "image_size":
      [height, width], "extent": [ymin, xmin, ymax, xmax] of all its boxes}``.
    warnings: anything else the user should know about this build.
    error: why the build failed (a report saved by a failed build), else ``None``.
  """

  dataset: str
  config: str
  version: str
  manual_dir: str
  class_names: list[str]
  annotations: dict[str, Any] = dataclasses.field(default_factory=dict)
  release_differences: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
  splits: dict[str, SplitCounts] = dataclasses.field(default_factory=dict)
  skipped: list[dict[str, str]] = dataclasses.field(default_factory=list)
  missing: list[str] = dataclasses.field(default_factory=list)
  boxes_outside: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  warnings: list[str] = dataclasses.field(default_factory=list)
  error: str | None = None

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, data: Mapping[str, Any]) -> BuildReport:
    data = dict(data)
    data["splits"] = {k: SplitCounts(**v) for k, v in data["splits"].items()}
    return cls(**data)

  def write(self, directory: epath.PathLike) -> epath.Path:
    """Saves ``<directory>/build_report.json`` (a local or remote directory, e.g. ``gs://``)."""
    path = epath.Path(directory) / FILENAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(self.to_dict(), indent=1, sort_keys=False) + "\n")
    return path

  @classmethod
  def read(cls, directory: epath.PathLike) -> BuildReport:
    return cls.from_dict(json.loads((epath.Path(directory) / FILENAME).read_text()))

  def summary(self) -> str:
    """A few lines for the console."""
    lines = [f"{self.dataset}/{self.config} {self.version} from {self.manual_dir}"]
    for name, split in self.splits.items():
      outside = f" ({split.boxes_outside} beyond the image)" if split.boxes_outside else ""
      lines.append(f"  {name}: {split.images} images, {split.patients} patients, "
                   f"{split.boxes} boxes{outside}, {split.skipped} skipped")
    if self.skipped:
      lines.append(f"  {len(self.skipped)} unreadable images skipped, e.g.:")
      lines += [f"    {s['path']}: {s['reason']}" for s in self.skipped[:_SHOWN]]
    if self.boxes_outside:
      lines.append(f"  {len(self.boxes_outside)} images have boxes beyond the image by more than a "
                   "pixel (stored clipped to it), e.g.:")
      lines += [f"    {s['path']}: {s['boxes']} boxes reaching (ymin, xmin, ymax, xmax) = "
                f"{tuple(s['extent'])} in an image of (height, width) = {tuple(s['image_size'])}"
                for s in self.boxes_outside[:_SHOWN]]
    if self.missing:
      lines.append(f"  {len(self.missing)} annotated images not found, e.g. "
                   f"{', '.join(self.missing[:_SHOWN])}")
    if self.release_differences:
      shown = "; ".join(f"{key} = {diff['found']} (release: {diff['expected']})"
                        for key, diff in list(self.release_differences.items())[:_SHOWN // 2])
      lines.append(f"  {len(self.release_differences)} annotation counts differ from the official "
                   f"release (incomplete or modified download?), e.g. {shown}")
    lines += [f"  warning: {w}" for w in self.warnings]
    return "\n".join(lines)


class SplitTally:
  """Accumulates ``SplitCounts`` while examples are written."""

  def __init__(self, class_names: list[str]):
    self._class_names = class_names
    self._counts: dict[str, SplitCounts] = {}
    self._patients: dict[str, set[str]] = collections.defaultdict(set)

  def add(self, split: str, *, patient_id: str, labels, boxes: int,
          boxes_outside: int = 0) -> None:
    counts = self._split(split)
    counts.images += 1
    counts.boxes += boxes
    counts.boxes_outside += boxes_outside
    self._patients[split].add(patient_id)
    counts.patients = len(self._patients[split])
    for name, value in zip(self._class_names, labels):
      counts.class_counts[name] += int(value > 0)

  def skip(self, split: str) -> None:
    self._split(split).skipped += 1

  def _split(self, split: str) -> SplitCounts:
    if split not in self._counts:
      self._counts[split] = SplitCounts(class_counts={n: 0 for n in self._class_names})
    return self._counts[split]

  def result(self) -> dict[str, SplitCounts]:
    return dict(self._counts)


def release_differences(found: Mapping[str, Any], expected: Mapping[str, Any],
                        prefix: str = "") -> dict[str, dict[str, Any]]:
  """Counts of ``expected`` (nested dicts allowed) that ``found`` gives differently.

  Counts ``found`` does not give at all (a layout without them) are not compared.
  """
  out = {}
  for key, value in expected.items():
    if key not in found:
      continue
    name, got = f"{prefix}{key}", found[key]
    if isinstance(value, Mapping) and isinstance(got, Mapping):
      for sub, diff in release_differences(
          {k: got.get(k, 0) for k in value}, value, f"{name}.").items():
        out[sub] = diff
    elif got != value:
      out[name] = {"expected": value, "found": got}
  return out


def format_duration(seconds: float) -> str:
  seconds = max(int(round(seconds)), 0)
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


class Progress:
  """Prints ``done/total images, images/s, ETA`` at most every ``interval_s`` and at the end."""

  def __init__(self, label: str, total: int, *, interval_s: float = 15.0,
               clock: Callable[[], float] = time.monotonic,
               emit: Callable[[str], None] | None = None):
    self._label, self._total, self._interval, self._clock = label, total, interval_s, clock
    self._emit = emit or (lambda line: print(line, file=sys.stderr, flush=True))
    self._start = self._last = clock()

  def update(self, done: int) -> None:
    now = self._clock()
    if done < self._total and now - self._last < self._interval:
      return
    self._last = now
    elapsed = max(now - self._start, 1e-9)
    rate = done / elapsed
    eta = (self._total - done) / rate if rate > 0 else float("inf")
    eta_text = format_duration(eta) if eta != float("inf") else "unknown"
    percent = 100.0 * done / self._total if self._total else 100.0
    self._emit(f"{self._label}: {done:,}/{self._total:,} images ({percent:.1f}%), "
               f"{rate:.1f} images/s, ETA {eta_text}")
