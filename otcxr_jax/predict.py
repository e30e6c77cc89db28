r"""Per-class probabilities and a heatmap for chest X-ray files, from a fine-tuning run.

    python -m otcxr_jax.predict --checkpoint workdirs/finetune_nih_10pct \
        image1.png image2.dcm ... [--json] [--out predictions]

``--checkpoint`` is the workdir of a fine-tuning run (``mode='finetune'``); its selected
classifier is loaded with ``classifier.load_classifier``. Each file is read and preprocessed as the
dataset builders store images and as evaluation then views them, through the same functions:

1. decoded to grayscale floats in [0, 1] by ``tfds_builders.cxr_base.images.load`` (DICOM through
   ``otcxr_jax.data.dicom`` at 16 bits: Modality and VOI LUTs, MONOCHROME1 inverted, scaled from
   the stored range; PNG/JPEG of 8 or 16 bits);
2. resized to the run's dataset resolution (``data.config``) and quantised to 8 bits
   (``images.resize``, ``images.to_uint8``), as the builders store them;
3. scored by ``classifier.predict``: the whole image resized to ``data.image_size`` by the
   evaluation view, the sigmoid of the classifier's logits.

Prints a table of probabilities (rows: classes, columns: files) or, with ``--json``, one JSON
object (schema in :func:`predict`). Writes ``<out>/<file stem>_heatmap.png`` per file: the class
activation map (``evaluation/localization.py``) of the most probable class over the image. A
missing checkpoint directory or an unreadable file stops with a message naming it (exit status 2).
The checkpoint and output directories may be remote (``gs://...``, through ``etils.epath``); the
image files are local.
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import pathlib
import sys
from typing import Any, Sequence

import ml_collections
import numpy as np
from etils import epath

from otcxr_jax import errors
from otcxr_jax.data import datasets
from otcxr_jax.evaluation import classifier, localization
from otcxr_jax.training import checkpoint as ckpt_lib
from tfds_builders.cxr_base import images as image_io


class PredictError(errors.UserError, ValueError):
  """An input the command cannot use (the message names it)."""


def stored_resolution(config: ml_collections.ConfigDict) -> int:
  """The side of the images the run's dataset stores (its builder config's resolution)."""
  import tensorflow_datasets as tfds
  builder_config = datasets.builder_config(config)
  if isinstance(builder_config, str):
    importlib.import_module(f"tfds_builders.{config.data.name}")  # registers the builder
    builder_config = tfds.builder_cls(config.data.name).config_for(builder_config)
  return int(builder_config.resolution)


def load_image(path: str | pathlib.Path, resolution: int) -> np.ndarray:
  """``(resolution, resolution, 1)`` uint8: a DICOM, PNG or JPEG file as the builders store it.

  Raises:
    PredictError: the file is missing or cannot be decoded (the message names it).
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise PredictError(f"{path}: no such file.")
  try:
    pixels = image_io.load(path).pixels
  except Exception as e:  # noqa: BLE001 - any decoder failure is reported with the file's name
    raise PredictError(f"{path}: cannot read it as a DICOM, PNG or JPEG image "
                       f"({type(e).__name__}: {e}).") from e
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


def _output_names(paths: Sequence[pathlib.Path]) -> list[str]:
  """``<stem>_heatmap.png`` per file; repeated stems get ``_2``, ``_3``, ... in order."""
  seen: dict[str, int] = {}
  names = []
  for p in paths:
    seen[p.stem] = seen.get(p.stem, 0) + 1
    suffix = "" if seen[p.stem] == 1 else f"_{seen[p.stem]}"
    names.append(f"{p.stem}{suffix}_heatmap.png")
  return names


def predict(checkpoint: str | epath.PathLike, files: Sequence[str | pathlib.Path], *,
            out: str | epath.PathLike | None = None) -> dict[str, Any]:
  """Probabilities of every class for each file, and heatmap PNGs in ``out`` (None: none).

  Returns:
    ``{'checkpoint': str, 'dataset': str, 'image_size': int, 'classes': [str],
    'predictions': [{'file': str, 'probabilities': {class: float}, 'top_class': str,
    'heatmap': str | None}]}``, predictions in the order of ``files``.

  Raises:
    PredictError: ``checkpoint`` is not a fine-tuning run's workdir, or a file is unreadable.
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
  paths = [pathlib.Path(f) for f in files]
  resolution = stored_resolution(config)
  stored = np.stack([load_image(p, resolution) for p in paths])

  import jax
  devices = jax.device_count()
  batch = devices * -(-min(len(stored), 32) // devices)
  source = [{"image": x, "labels": np.zeros(len(class_names), np.float32)} for x in stored]
  probabilities, _ = classifier.predict(classifier.Classifier(loaded.encoder, loaded.head), source,
                                        image_size=config.data.image_size, batch_size=batch)
  cams = targets = None
  if out is not None:
    cam = localize.cam_fn(loaded)
    cams = localize.batched(lambda x: {"cam": cam(x)}, stored, batch)["cam"]
    targets = [epath.Path(out) / name for name in _output_names(paths)]
  builder = datasets.builder_config(config)
  result = {
      "checkpoint": str(checkpoint),
      "dataset": f"{config.data.name}/{getattr(builder, 'name', builder)}",
      "image_size": int(config.data.image_size),
      "classes": class_names,
      "predictions": [],
  }
  for i, path in enumerate(paths):
    top = int(np.argmax(probabilities[i]))
    heatmap = None
    if out is not None:
      heatmap = str(targets[i])
      view = np.asarray(localize.eval_view(stored[i][None], config.data.image_size))[0]
      _heatmap_png(view, cams[i, ..., top],
                   f"{path.name}\nCAM of {class_names[top]} (p = {probabilities[i, top]:.3f})",
                   targets[i])
    result["predictions"].append({
        "file": str(path),
        "probabilities": {c: float(p) for c, p in zip(class_names, probabilities[i])},
        "top_class": class_names[top],
        "heatmap": heatmap,
    })
  return result


def format_table(result: dict[str, Any]) -> str:
  """Rows: classes; columns: files (names), probabilities to 3 decimals."""
  from otcxr_jax.evaluation import report
  files = [pathlib.Path(p["file"]).name for p in result["predictions"]]
  rows = [[c] + [f"{p['probabilities'][c]:.3f}" for p in result["predictions"]]
          for c in result["classes"]]
  return report.markdown_table(["class"] + files, rows)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m otcxr_jax.predict",
      description="Per-class probabilities and heatmaps of chest X-ray images (PNG, JPEG, DICOM) "
                  "from a fine-tuning run's selected classifier.")
  parser.add_argument("--checkpoint", required=True,
                      help="workdir of a fine-tuning run (mode='finetune')")
  parser.add_argument("files", nargs="+", help="image files: .png, .jpg, .dcm, .dicom")
  parser.add_argument("--json", action="store_true", help="print one JSON object")
  parser.add_argument("--out", default="predictions",
                      help="directory of the heatmap PNGs (default: ./predictions)")
  args = parser.parse_args(argv)
  try:
    result = predict(args.checkpoint, args.files, out=args.out)
  except PredictError as e:
    print(f"predict: {e}", file=sys.stderr)
    return 2
  if args.json:
    print(json.dumps(result, indent=2))
  else:
    print(format_table(result))
    print(f"heatmaps: {ckpt_lib.absolute(args.out)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
