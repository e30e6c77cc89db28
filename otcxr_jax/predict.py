r"""Per-class probabilities and a heatmap for chest X-ray files, from a fine-tuning run.

    python -m otcxr_jax.predict --checkpoint workdirs/finetune_nih_10pct \
        image1.png image2.dcm images/ ... [--json] [--out predictions] [--verbose]

``--checkpoint`` is the workdir of a fine-tuning run (``mode='finetune'``); its selected
classifier is loaded with ``classifier.load_classifier``. Each argument is an image file or a
directory: a directory stands for the ``.png``, ``.jpg``, ``.jpeg``, ``.dcm`` and ``.dicom`` files
directly inside it (not in its subdirectories), sorted by name. Each file is read and preprocessed
as the dataset builders store images and as evaluation then views them, through the same
functions:

1. decoded to grayscale floats in [0, 1] by ``tfds_builders.cxr_base.images.load`` (DICOM through
   ``cxr_base.dicom`` at 16 bits: Modality and VOI LUTs, MONOCHROME1 inverted, scaled from
   the stored range; PNG/JPEG of 8 or 16 bits). A 16-bit PNG is divided by ``2**b - 1``, ``b``
   its data's bit depth (``images.sixteen_bit_depth``): with an ``sBIT`` chunk, its significant
   bits if every value fits in them, else 16 (samples scaled up to 16 bits); without one, the
   smallest of 8, 10, 12, 14, 15, 16 bits that holds the largest value (so 12-bit data in a
   16-bit PNG is divided by 4095, and a 12-bit image whose values all stay below 1024 reads as
   10-bit unless an ``sBIT`` chunk says 12);
2. resized to the run's dataset resolution (``data.config``) and quantised to 8 bits
   (``images.resize``, ``images.to_uint8``), as the builders store them;
3. scored by ``classifier.predict``: the whole image resized to ``data.image_size`` by the
   evaluation view, the sigmoid of the classifier's logits.

Files are decoded and scored in batches, so any number of them fits in memory. Prints a table of
probabilities (rows: classes, columns: files) or, with ``--json``, one JSON object (schema in
:func:`predict`). Writes ``<out>/<file stem>_heatmap.png`` per file: the class activation map
(``evaluation/localization.py``) of the most probable class over the image (ResNet encoders
only; for another encoder no heatmaps are written, and a line says so).

A file that cannot be used (missing, not an image, a directory without images) is reported on
stderr in one line, ``<path>: <why>``, when it is reached; every other file is still scored and
printed. Exit status: 0 when every file was scored, 1 when some could not be, 2 when nothing could
be tried (``--checkpoint`` is not a fine-tuning run's workdir, ``--out`` cannot be created), with
one ``Error: ...`` line. ``--verbose`` adds the traceback of each failure. The checkpoint and
output directories may be remote (``gs://...``, through ``etils.epath``); the image files are
local.
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import pathlib
import sys
import traceback
from typing import Any, Callable, Iterator, Sequence

import ml_collections
import numpy as np
from etils import epath

from otcxr_jax import errors
from otcxr_jax.data import augment, datasets
from otcxr_jax.evaluation import classifier, localization
from otcxr_jax.training import checkpoint as ckpt_lib
from tfds_builders.cxr_base import images as image_io

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg") + image_io.DICOM_SUFFIXES
# Files decoded, scored and drawn at a time (rounded up to a multiple of the device count).
MAX_BATCH = 32


class PredictError(errors.UserError, ValueError):
  """An input the command cannot use (the message names it)."""


class FileError(PredictError):
  """One input file or directory the command cannot use: ``'<path>: <reason>'``."""

  def __init__(self, path: str | pathlib.Path, reason: str):
    super().__init__(f"{path}: {reason}")
    self.path, self.reason = str(path), reason


# Called with (path, reason, exception) for each input that fails, when it is reached.
ErrorCallback = Callable[[str, str, BaseException], None]


def stored_resolution(config: ml_collections.ConfigDict) -> int:
  """The side of the images the run's dataset stores (its builder config's resolution)."""
  import tensorflow_datasets as tfds
  builder_config = datasets.builder_config(config)
  if isinstance(builder_config, str):
    importlib.import_module(f"tfds_builders.{config.data.name}")  # registers the builder
    builder_config = tfds.builder_cls(config.data.name).config_for(builder_config)
  return int(builder_config.resolution)


def expand_inputs(inputs: Sequence[str | pathlib.Path]
                  ) -> Iterator[tuple[pathlib.Path, FileError | None]]:
  """``(file, None)`` for each image file the arguments name, or ``(argument, error)``.

  A directory stands for the files with an :data:`IMAGE_SUFFIXES` suffix directly inside it,
  sorted by name (subdirectories are not searched); one without any is an error. A named file is
  taken whatever its suffix (its decoder decides).
  """
  for arg in inputs:
    path = pathlib.Path(arg)
    if path.is_dir():
      try:
        files = sorted((p for p in path.iterdir()
                        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()), key=str)
      except OSError as e:
        yield path, FileError(path, f"cannot list this directory ({e.strerror or e}).")
        continue
      if not files:
        yield path, FileError(path, f"no {_suffix_list()} file in this directory (its "
                                    f"subdirectories are not searched).")
      for f in files:
        yield f, None
    elif not path.exists():
      yield path, FileError(path, "no such file or directory.")
    elif not path.is_file():
      yield path, FileError(path, "not a regular file (expected an image file or a directory).")
    else:
      yield path, None


def _suffix_list() -> str:
  return ", ".join(IMAGE_SUFFIXES[:-1]) + " or " + IMAGE_SUFFIXES[-1]


def load_image(path: str | pathlib.Path, resolution: int) -> np.ndarray:
  """``(resolution, resolution, 1)`` uint8: a DICOM, PNG or JPEG file as the builders store it.

  Raises:
    FileError: the file is missing or cannot be decoded (the message names it).
  """
  path = pathlib.Path(path)
  if path.is_dir():
    raise FileError(path, "a directory (expected an image file).")
  if not path.is_file():
    raise FileError(path, "no such file.")
  try:
    pixels = image_io.load(path).pixels
  except Exception as e:  # noqa: BLE001 - any decoder failure is reported with the file's name
    detail = str(e).replace(f" '{path}'", "").replace(f" {path}", "")  # named once, in front
    raise FileError(path, f"cannot read it as a DICOM, PNG or JPEG image "
                          f"({type(e).__name__}: {detail}).") from e
  return image_io.to_uint8(image_io.resize(pixels, resolution))[..., None]


def _heatmap_png(image: np.ndarray, heatmap: np.ndarray, title: str, path: epath.Path) -> None:
  """The evaluation view of ``image`` with ``heatmap`` (upsampled, min-max normalised) over it."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  size = image.shape[0]
  heat = localization.upsample(heatmap[None], size)[0]
  span = np.ptp(heat)
  fig, ax = plt.subplots(figsize=(3.2, 3.4))
  ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=1)
  ax.imshow((heat - heat.min()) / span if span > 0 else np.zeros_like(heat), cmap="jet",
            alpha=0.45, vmin=0, vmax=1)
  ax.set_title(title, fontsize=8)
  ax.set_axis_off()
  fig.tight_layout()
  png = io.BytesIO()
  fig.savefig(png, format="png", dpi=110, bbox_inches="tight")
  plt.close(fig)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(png.getvalue())


class _OutputNames:
  """``<stem>_heatmap.png`` per file, in order; repeated stems get ``_2``, ``_3``, ..."""

  def __init__(self):
    self._seen: dict[str, int] = {}

  def __call__(self, path: pathlib.Path) -> str:
    self._seen[path.stem] = self._seen.get(path.stem, 0) + 1
    count = self._seen[path.stem]
    return f"{path.stem}{'' if count == 1 else f'_{count}'}_heatmap.png"


def predict(checkpoint: str | epath.PathLike, files: Sequence[str | pathlib.Path], *,
            out: str | epath.PathLike | None = None,
            on_error: ErrorCallback | None = None) -> dict[str, Any]:
  """Probabilities of every class for each file, and heatmap PNGs in ``out`` (None: none).

  Args:
    checkpoint: the workdir of a fine-tuning run.
    files: image files and directories (:func:`expand_inputs`).
    out: the directory of the heatmap PNGs; None writes none.
    on_error: called with ``(path, reason, exception)`` for each input that cannot be used, when
      it is reached (the others are still scored).

  Returns:
    ``{'checkpoint': str, 'dataset': str, 'image_size': int, 'classes': [str],
    'predictions': [{'file': str, 'probabilities': {class: float}, 'top_class': str,
    'heatmap': str | None}], 'errors': [{'file': str, 'error': str}]}``, predictions and errors
    in the order of ``files`` (a file whose heatmap could not be written has both). ``heatmap`` is
    None without ``out`` or for an encoder without class activation maps (not a ResNet).

  Raises:
    PredictError: ``checkpoint`` is not a fine-tuning run's workdir, ``files`` is empty, or
      ``out`` cannot be created.
  """
  from otcxr_jax.modes import localize
  checkpoint = ckpt_lib.absolute(checkpoint)
  if not checkpoint.is_dir():
    raise PredictError(f"--checkpoint {checkpoint}: no such directory (expected the workdir of a "
                       f"fine-tuning run).")
  if not files:
    raise PredictError("no image file given.")
  try:
    loaded = classifier.load_classifier(checkpoint)
  except (FileNotFoundError, ValueError) as e:
    raise PredictError(f"--checkpoint {checkpoint}: {e}") from e
  config = loaded.config
  class_names = list(datasets.class_names(config))
  resolution = stored_resolution(config)
  builder = datasets.builder_config(config)
  result = {
      "checkpoint": str(checkpoint),
      "dataset": f"{config.data.name}/{getattr(builder, 'name', builder)}",
      "image_size": int(config.data.image_size),
      "classes": class_names,
      "predictions": [],
      "errors": [],
  }

  def fail(error: FileError, exception: BaseException | None = None) -> None:
    result["errors"].append({"file": error.path, "error": error.reason})
    if on_error is not None:
      on_error(error.path, error.reason, exception or error)

  cam = None
  if out is not None:
    out = epath.Path(out)
    try:
      out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
      raise PredictError(f"--out {out}: cannot create the heatmap directory "
                         f"({getattr(e, 'strerror', None) or e}).") from e
    try:
      cam = localize.cam_fn(loaded)
    except ValueError as e:  # not a ResNet: no class activation maps
      print(f"No heatmaps: {e}", file=sys.stderr)

  import jax
  inputs = list(expand_inputs(files))
  count = sum(error is None for _, error in inputs)
  devices = jax.device_count()
  batch = devices * -(-max(1, min(count, MAX_BATCH)) // devices)
  scorer = classifier.Scorer(image_size=config.data.image_size, batch_size=batch)
  model = classifier.Classifier(loaded.encoder, loaded.head)
  names = _OutputNames()

  def score(pending: list[tuple[pathlib.Path, np.ndarray]]) -> None:
    if not pending:
      return
    stored = np.stack([image for _, image in pending])
    source = [{"image": x, "labels": np.zeros(len(class_names), np.float32)} for x in stored]
    probabilities, _ = scorer(model, source)
    cams = None if cam is None else localize.batched(lambda x: {"cam": cam(x)}, stored,
                                                     batch)["cam"]
    for i, (path, _) in enumerate(pending):
      top = int(np.argmax(probabilities[i]))
      heatmap = None
      if cams is not None:
        target = out / names(path)
        view = np.asarray(augment.whole_image_view(stored[i][None], config.data.image_size))[0]
        try:
          _heatmap_png(view, cams[i, ..., top],
                       f"{path.name}\nCAM of {class_names[top]} (p = {probabilities[i, top]:.3f})",
                       target)
          heatmap = str(target)
        except OSError as e:
          fail(FileError(path, f"cannot write its heatmap {target} ({e})."), e)
      result["predictions"].append({
          "file": str(path),
          "probabilities": {c: float(p) for c, p in zip(class_names, probabilities[i])},
          "top_class": class_names[top],
          "heatmap": heatmap,
      })

  pending = []
  for path, error in inputs:
    if error is None:
      try:
        pending.append((path, load_image(path, resolution)))
      except FileError as e:
        fail(e)
    else:
      fail(error)
    if len(pending) == batch:
      score(pending)
      pending = []
  score(pending)
  return result


def format_table(result: dict[str, Any]) -> str:
  """Rows: classes; columns: files (names), probabilities to 3 decimals."""
  from otcxr_jax.reporting import summary
  files = [pathlib.Path(p["file"]).name for p in result["predictions"]]
  rows = [[c] + [f"{p['probabilities'][c]:.3f}" for p in result["predictions"]]
          for c in result["classes"]]
  return summary.markdown_table(["class"] + files, rows)


def main(argv: Sequence[str] | None = None) -> int:
  """The command line; returns the exit status (0 all scored, 1 some failed, 2 none tried)."""
  parser = argparse.ArgumentParser(
      prog="python -m otcxr_jax.predict",
      description="Per-class probabilities and heatmaps of chest X-ray images (PNG, JPEG, DICOM) "
                  "from a fine-tuning run's selected classifier. Exit status: 0 every file "
                  "scored; 1 some could not be (each named on stderr, the others still scored); "
                  "2 nothing could be tried (e.g. a bad --checkpoint).")
  parser.add_argument("--checkpoint", required=True,
                      help="workdir of a fine-tuning run (mode='finetune')")
  parser.add_argument("files", nargs="+", metavar="FILE_OR_DIR",
                      help="image files (.png, .jpg, .jpeg, .dcm, .dicom) or directories: a "
                           "directory stands for the image files directly inside it, sorted by "
                           "name (not recursive)")
  parser.add_argument("--json", action="store_true", help="print one JSON object")
  parser.add_argument("--out", default="predictions",
                      help="directory of the heatmap PNGs (default: ./predictions)")
  parser.add_argument("--verbose", "-v", action="store_true",
                      help="print the traceback of each failure")
  args = parser.parse_args(argv)

  def report(path: str, reason: str, exception: BaseException) -> None:
    if args.verbose:
      traceback.print_exception(exception, file=sys.stderr)
    print(f"{path}: {reason}", file=sys.stderr, flush=True)

  try:
    result = predict(args.checkpoint, args.files, out=args.out, on_error=report)
  except (errors.UserError, *errors.external_expected()) as e:
    if args.verbose:
      raise
    print(f"Error: {e}", file=sys.stderr)
    return 2
  if args.json:
    print(json.dumps(result, indent=2))
  elif result["predictions"]:
    print(format_table(result))
    if any(p["heatmap"] for p in result["predictions"]):
      print(f"heatmaps: {ckpt_lib.absolute(args.out)}")
  if result["errors"]:
    print(f"{len(result['errors'])} failed (above), {len(result['predictions'])} scored.",
          file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
