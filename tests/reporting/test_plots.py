"""The image grids of the segmentation and localisation figures (``reporting/plots.py``), and the
dataset probe both modes read (``data/datasets.features``)."""

import numpy as np
from PIL import Image

from otcxr_jax.data import datasets
from otcxr_jax.modes import localize, segment
from otcxr_jax.reporting import plots
from tests.tiny import tiny_config


def test_image_rows_draws_every_panel_and_overlay(tmp_path):
  drawn = []
  image = np.linspace(0, 1, 64).reshape(8, 8)
  heat, mask = np.outer(np.arange(8), np.ones(8)), image > 0.5
  boxes = np.array([[0.1, 0.1, 0.5, 0.6]])
  rows = [[(image, "image", None),
           (image, "heatmap", plots.both(plots.heatmap_overlay(heat), plots.box_outlines(boxes, 8),
                                         lambda ax: drawn.append(len(ax.images))))],
          [(image, "mask", plots.mask_overlay(mask)),
           (image, "constant heatmap", plots.heatmap_overlay(np.zeros((8, 8))))]]
  name = plots.image_rows(rows, tmp_path / "grid.png", title_size=7)
  assert name == "grid.png"
  assert drawn == [2]  # the image and the heatmap over it, before the check ran
  with Image.open(tmp_path / "grid.png") as png:
    png.verify()


def test_segment_and_localize_read_the_datasets_features(tmp_path):
  c = tiny_config(tmp_path / "tfds")  # synthetic: boxes and masks
  assert {"image", "labels", "boxes", "box_labels", "mask"} <= datasets.features(c)
  assert segment.dataset_has_masks(c) and localize.dataset_has_boxes(c)
  assert datasets.dataset_name(c) == "synthetic_cxr/32_p16"
  c.data.name, c.data.config, c.data.synthetic_patients = "siim_acr_pneumothorax", "224", 0
  assert segment.dataset_has_masks(c) and not localize.dataset_has_boxes(c)
  c.data.name = "nih_chest_xray14"
  assert not segment.dataset_has_masks(c) and localize.dataset_has_boxes(c)
  assert datasets.dataset_name(c) == "nih_chest_xray14/224"


def test_training_curves_draw_the_logged_metrics_and_nothing_without_a_log(tmp_path):
  history = [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5, "ot": 0.3}]
  assert plots.training_curves(history, ["loss", "ot", "var"], tmp_path / "c.png") == "c.png"
  with Image.open(tmp_path / "c.png") as png:
    assert png.size[0] > png.size[1]  # two panels side by side ('var' was never logged)
  assert plots.training_curves([], ["loss"], tmp_path / "none.png") is None
  assert plots.training_curves(history, ["var"], tmp_path / "none.png") is None
  assert not (tmp_path / "none.png").exists()
