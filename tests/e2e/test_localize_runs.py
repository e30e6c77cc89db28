"""Localisation: pointing game, IoU and box rasterisation against hand-computed cases; CAM against
the gradient definition of Grad-CAM; the pretraining-network maps against numpy; the mode end to
end (tiny fine-tuning run and pretraining checkpoint), and its config validation.

End to end: the runs (the unit tests are in tests/modes/test_localize.py)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from otcxr_jax import modes
from otcxr_jax.data import augment, datasets
from otcxr_jax.evaluation import classifier
from otcxr_jax.evaluation import localization as loc
from otcxr_jax.modes import localize
from tests.e2e.shared_runs import COHORT_GROUP
from tests.tiny import tiny_config
from tests.modes.test_localize import PATIENTS

pytestmark = pytest.mark.xdist_group(COHORT_GROUP)


@pytest.fixture(scope="module")
def runs(cohort, cohort_finetuning):
  """The cohort's 2-step pretraining run and a fine-tuning run from it (tests/e2e/conftest.py):
  the root folder, the classifier's workdir and the pretraining checkpoint directory."""
  root, checkpoint_dir, _ = cohort
  _, classifier_workdir, _ = cohort_finetuning
  return root, classifier_workdir, checkpoint_dir


def _localize_config(runs, **fields):
  root, classifier_workdir, checkpoint_dir = runs
  c = tiny_config(root / "tfds", mode="localize")
  c.data.synthetic_patients = PATIENTS
  l = c.localize
  l.classifier_workdir = str(classifier_workdir)
  l.checkpoint_dir = str(checkpoint_dir)
  l.num_references = 3
  l.batch_size = 8
  l.num_examples = 4
  for name, value in fields.items():
    l[name] = value
  modes.validate(c)
  return c


def test_end_to_end_writes_metrics_and_figure(runs):
  root, classifier_workdir, _ = runs
  config = _localize_config(runs, threshold_mode="top_fraction", threshold=0.2)
  workdir = root / "localize"
  localize.run(config, str(workdir))
  result = json.loads((workdir / "metrics.json").read_text())

  source = datasets.split_source(config, config.data.test_split)
  boxed = [i for i in range(len(source)) if len(source[i]["box_labels"])]
  pairs = [(i, k) for i in boxed for k in sorted(set(source[i]["box_labels"].tolist()))]
  assert result["num_images"] == len(boxed) and result["num_instances"] == len(pairs)
  assert list(result["methods"]) == ["cam", "attention", "transport"]
  assert result["methods"]["transport"]["source"] == {
      "init": "pretrained", "checkpoint_dir": config.localize.checkpoint_dir,
      "checkpoint_step": 2, "num_references": 3, "grid": [4, 4]}
  assert result["methods"]["cam"]["source"]["classifier_workdir"] == str(classifier_workdir)

  # CAM scores recomputed here: the selected classifier, each instance's class, plain numpy;
  # the weights of the pooled features are the gradient of the (standardising) head's logits.
  _, encoder, head = classifier.load_classifier(classifier_workdir)
  assert np.asarray(head.feature_std[...]).std() > 0  # fitted statistics, not the identity
  weights = np.asarray(jax.jacobian(lambda p: head(p[None])[0])(
      jnp.zeros((encoder.num_features,))))                            # (K, C)
  size = config.data.image_size
  hits, ious = {}, {}
  for i, k in pairs:
    record = source[i]
    x = augment.center_view(jnp.asarray(record["image"][None], jnp.float32) / 255.0, size)
    cam = np.einsum("hwc,c->hw", np.asarray(encoder(x).dense[0]), weights[k])
    heat = np.asarray(jax.image.resize(cam, (size, size), "bilinear"))
    truth = loc.box_mask(record["boxes"][record["box_labels"] == k], size)
    top = heat >= np.sort(heat.ravel())[-int(np.ceil(0.2 * size * size))]
    hits.setdefault(k, []).append(bool(truth.flat[np.argmax(heat)]))
    ious.setdefault(k, []).append((top & truth).sum() / (top | truth).sum())
  cam_result = result["methods"]["cam"]
  names = datasets.class_names(config)
  for k in hits:
    got = cam_result["per_class"][names[k]]
    assert got["num_instances"] == len(hits[k])
    assert got["pointing_game"] == pytest.approx(np.mean(hits[k]))
    assert got["iou"] == pytest.approx(np.mean(ious[k]), abs=1e-6)
  assert cam_result["pointing_game"] == pytest.approx(np.mean([np.mean(v) for v in hits.values()]))
  for method in ("attention", "transport"):
    m = result["methods"][method]
    assert 0.0 <= m["pointing_game"] <= 1.0 and 0.0 <= m["iou"] <= 1.0
    assert m["chance"] == pytest.approx(cam_result["chance"])

  with Image.open(workdir / result["figure"]) as png:
    png.verify()
    assert png.size[0] > 200 and png.size[1] > 200


def test_random_pretraining_network_needs_no_checkpoint(runs):
  config = _localize_config(runs, methods=("transport",), init="random", checkpoint_dir="",
                            num_examples=0)
  result = localize.run(config, str(runs[0] / "random"))
  assert result["methods"]["transport"]["source"]["init"] == "random"
  assert result["figure"] is None and not (runs[0] / "random" / localize.FIGURE_FILE).exists()


def test_classifier_of_another_dataset_is_refused(runs, tmp_path):
  other = tmp_path / "other"
  other.mkdir()
  saved = json.loads((runs[1] / "config.json").read_text())
  saved["data"]["name"] = "nih_chest_xray14"
  (other / "config.json").write_text(json.dumps(saved))
  config = _localize_config(runs, methods=("cam",), classifier_workdir=str(other))
  with pytest.raises(ValueError, match=r"holds a classifier of 'nih_chest_xray14', not of "
                                       r"config.data.name='synthetic_cxr'"):
    localize.run(config, str(tmp_path / "out"))
