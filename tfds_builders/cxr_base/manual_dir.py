"""Finding a manual download's files by name, wherever they sit below the manual directory."""

from __future__ import annotations

import collections
import os
import pathlib
from typing import Collection, Iterable, Sequence

from tfds_builders.cxr_base import tables
from tfds_builders.cxr_base.errors import BuildError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")
DOCS = "docs/datasets.md"  # what each download holds and how to lay it out, per dataset


class ManualDirError(BuildError, FileNotFoundError):
  """The manual directory, or a file the builder needs in it, is missing or ambiguous.

  The message is one line ending with where the download instructions are (``DOCS``); the
  builder's own instructions (``MANUAL_DOWNLOAD_INSTRUCTIONS``) are in ``instructions``.
  """

  def __init__(self, message: str, *, dataset: str, instructions: str = ""):
    super().__init__(f"{message}. What to download and where its files go: {DOCS}, section "
                     f"`{dataset}`.")
    self.dataset, self.instructions = dataset, instructions


def check_manual_dir(path: str | os.PathLike[str] | None, *, dataset: str,
                     instructions: str) -> pathlib.Path:
  """``path`` as an existing, non-empty directory; otherwise a ``ManualDirError``."""
  def error(message: str) -> ManualDirError:
    return ManualDirError(f"{dataset}: {message}", dataset=dataset, instructions=instructions)

  if path is None:
    raise error("no manual directory was given")
  root = pathlib.Path(path).expanduser()
  if not root.is_dir():
    raise error(f"the manual directory {root} does not exist")
  if not any(root.iterdir()):
    raise error(f"the manual directory {root} is empty")
  return root


class FileIndex:
  """Every file below ``root`` (symbolic links followed), looked up by name or by stem."""

  def __init__(self, root: pathlib.Path, *, dataset: str, instructions: str):
    self.root, self._dataset, self._instructions = root, dataset, instructions
    self._by_name: dict[str, list[pathlib.Path]] = collections.defaultdict(list)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
      dirnames.sort()
      for name in sorted(filenames):
        self._by_name[name].append(pathlib.Path(dirpath, name))

  def error(self, message: str) -> ManualDirError:
    """A ``ManualDirError`` for this download, pointing to its download instructions."""
    return ManualDirError(f"{self._dataset}: {message} (manual directory {self.root})",
                          dataset=self._dataset, instructions=self._instructions)

  def find(self, names: Sequence[str], *, required: bool = True) -> pathlib.Path | None:
    """The file with the first of ``names`` (in order of preference) present below the root.

    Raises:
      ManualDirError: none is present and ``required``, or the chosen name occurs more than once.
    """
    for name in names:
      paths = self._by_name.get(name, [])
      if len(paths) > 1:
        raise self.error(f"{name} occurs {len(paths)} times ({', '.join(map(str, paths[:4]))}); "
                         "keep one copy")
      if paths:
        return paths[0]
    if required:
      raise self.error(f"expected a file named {' or '.join(names)} somewhere below the manual "
                       "directory, found none")
    return None

  def csv_files_with_columns(self, columns: Collection[str]) -> list[pathlib.Path]:
    """Every ``*.csv`` below the root whose header holds exactly ``columns``."""
    found = []
    for name, paths in sorted(self._by_name.items()):
      if name.lower().endswith(".csv"):
        for path in paths:
          with open(path, newline="", encoding="utf-8-sig") as f:
            header = {tables.normalise_name(c) for c in f.readline().rstrip("\r\n").split(",")}
          if header - {""} == set(columns):
            found.append(path)
    return found

  def images(self, *, extensions: Iterable[str] = IMAGE_EXTENSIONS,
             folder: str | None = None, exclude_folder: str | None = None
             ) -> dict[str, pathlib.Path]:
    """Image files by stem (the image id), optionally only those in/outside a named folder.

    Raises:
      ManualDirError: two files share a stem (the same image twice, e.g. as DICOM and PNG).
    """
    extensions = tuple(e.lower() for e in extensions)
    by_stem: dict[str, list[pathlib.Path]] = collections.defaultdict(list)
    for name, paths in self._by_name.items():
      if name.lower().endswith(extensions):
        for path in paths:
          if folder is not None and path.parent.name != folder:
            continue
          if exclude_folder is not None and exclude_folder in path.relative_to(self.root).parts:
            continue
          by_stem[path.stem].append(path)
    duplicates = {stem: paths for stem, paths in by_stem.items() if len(paths) > 1}
    if duplicates:
      stem, paths = next(iter(sorted(duplicates.items())))
      raise self.error(
          f"{len(duplicates)} image ids occur in more than one file, e.g. {stem} in "
          f"{', '.join(map(str, paths))}; keep one copy of each image (one layout) below the "
          "manual directory")
    return {stem: paths[0] for stem, paths in by_stem.items()}
