"""Mode ``build_dataset``: a real dataset's ArrayRecord files built from its manual download.

``config.data.name`` at resolution ``config.data.config`` into ``config.data.data_dir`` from
``config.data.manual_dir`` (``otcxr_jax/data/build.py``, docs/datasets.md); the workdir is not
used. A dataset already built is not rebuilt. Prints the images of each split, how many images
were skipped (unreadable) or missing, and where the dataset and its build report are.
"""

from __future__ import annotations

import ml_collections
import tensorflow_datasets as tfds
from etils import epath

from otcxr_jax.data import build
from otcxr_jax.training.distributed import print0
from tfds_builders.cxr_base import BuildReport, report

RUN_NAME = "build_dataset"


def run(config: ml_collections.ConfigDict, workdir: str) -> BuildReport:
  del workdir  # the dataset goes to config.data.data_dir
  d = config.data
  directory = build.dataset_dir(d.name, config=d.config, data_dir=d.data_dir)
  existed = directory.exists()
  tfds.disable_progress_bar()  # the builder prints progress lines of its own
  result = build.build_dataset(d.name, config=d.config, data_dir=d.data_dir,
                               manual_dir=d.manual_dir, processes=d.build_processes or None)
  print0(summary(result, directory, reused=existed))
  return result


def summary(result: BuildReport, directory: epath.PathLike, *, reused: bool = False) -> str:
  """A few lines: images per split, skipped and missing images, where the files and report are."""
  splits = ", ".join(f"{name} {s.images:,}" for name, s in result.splits.items())
  state = " (already built, not rebuilt)" if reused else ""
  lines = [f"[{RUN_NAME}] {result.dataset}/{result.config}{state}: {splits} images"]
  notes = [f"{len(result.skipped):,} unreadable images skipped",
           f"{len(result.missing):,} annotated images missing"]
  outside = sum(s.boxes_outside for s in result.splits.values())
  if outside:
    notes.append(f"{outside:,} boxes beyond their image (clipped)")
  listed = " (listed in the report)" if result.skipped or result.missing or outside else ""
  lines.append(f"[{RUN_NAME}] {', '.join(notes)}{listed}")
  lines.append(f"[{RUN_NAME}] dataset: {directory}")
  lines.append(f"[{RUN_NAME}] report: {epath.Path(directory) / report.FILENAME}")
  return "\n".join(lines)
