"""Localisation: pointing game, IoU and box rasterisation against hand-computed cases; CAM against
the gradient definition of Grad-CAM; the pretraining-network maps against numpy; the mode end to
end (tiny fine-tuning run and pretraining checkpoint), and its config validation."""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from otcxr_jax import config_lib
from otcxr_jax.data import augment, datasets
from otcxr_jax.evaluation import classifier
from otcxr_jax.evaluation import localization as loc
from otcxr_jax.modes import finetune, localize, pretrain
from tests.tiny import tiny_config

PATIENTS = 300  # test split: 84 images, 29 with boxes


# Scores against hand-computed cases.

def test_box_mask_marks_the_pixels_each_box_overlaps():
  expected = np.zeros((4, 4), bool)
  expected[1, 2:] = True                       # (0.25, 0.5)-(0.5, 1.0): row 1, columns 2-3
  expected[3, 0] = True                        # a box inside one pixel still marks it
  got = loc.box_mask(np.array([[0.25, 0.5, 0.5, 1.0], [0.8, 0.1, 0.85, 0.15]]), 4)
  np.testing.assert_array_equal(got, expected)
  np.testing.assert_array_equal(loc.box_mask(np.zeros((0, 4)), 3), np.zeros((3, 3), bool))
  with pytest.raises(ValueError, match="boxes must be"):
    loc.box_mask(np.array([[0.5, 0.0, 0.4, 1.0]]), 4)


def test_pointing_game_hand_cases():
  truth = np.zeros((3, 3), bool)
  truth[1, 2] = True
  heat = np.zeros((3, 3))
  heat[1, 2] = 5.0
  assert loc.pointing_hit(heat, truth)
  heat[0, 0] = 7.0                              # the maximum moves out of the box
  assert not loc.pointing_hit(heat, truth)
  heat[1, 2] = 7.0                              # tie: the first maximum in row-major order
  assert not loc.pointing_hit(heat, truth)
  assert loc.pointing_hit(heat, truth | np.eye(3, dtype=bool))
  assert not loc.pointing_hit(np.full((3, 3), 2.0), np.ones((3, 3), bool))  # constant: no point


def test_threshold_and_iou_hand_cases():
  heat = np.array([[0.0, 1.0], [2.0, 4.0]])    # min-max normalised: 0, .25, .5, 1
  np.testing.assert_array_equal(loc.threshold(heat, "fraction_of_max", 0.5),
                                [[False, False], [True, True]])
  np.testing.assert_array_equal(loc.threshold(heat, "fraction_of_max", 0.2),
                                [[False, True], [True, True]])
  np.testing.assert_array_equal(loc.threshold(heat, "top_fraction", 0.25),
                                [[False, False], [False, True]])
  np.testing.assert_array_equal(loc.threshold(heat, "top_fraction", 0.3),   # ceil(1.2) = 2
                                [[False, False], [True, True]])
  tied = np.array([[1.0, 3.0], [3.0, 0.0]])    # the top 25% ties with another pixel
  np.testing.assert_array_equal(loc.threshold(tied, "top_fraction", 0.25),
                                [[False, True], [True, False]])
  assert not loc.threshold(np.ones((2, 2)), "top_fraction", 1.0).any()
  truth = np.array([[False, True], [False, True]])
  assert loc.iou(loc.threshold(heat, "fraction_of_max", 0.5), truth) == pytest.approx(1 / 3)
  assert loc.iou(truth, truth) == 1.0
  assert loc.iou(np.zeros((2, 2), bool), np.zeros((2, 2), bool)) == 0.0
  with pytest.raises(ValueError, match=r"value must be in \(0, 1\]"):
    loc.threshold(heat, "top_fraction", 0.0)
  with pytest.raises(ValueError, match="mode must be one of"):
    loc.threshold(heat, "otsu", 0.5)


def test_upsample_is_half_pixel_bilinear():
  maps = np.array([[[0.0, 4.0], [8.0, 12.0]]])
  expected = np.array([[0, 1, 3, 4], [2, 3, 5, 6], [6, 7, 9, 10], [8, 9, 11, 12]], np.float32)
  np.testing.assert_allclose(loc.upsample(maps, 4)[0], expected, atol=1e-6)


def test_instances_scores_and_summary():
  boxes = [np.array([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0], [0.0, 0.5, 0.5, 1.0]]),
           np.array([[0.5, 0.0, 1.0, 0.5]])]
  labels = [np.array([2, 2, 0]), np.array([2])]
  instances = loc.instances(boxes, labels, 2)
  assert [(u.image, u.label) for u in instances] == [(0, 0), (0, 2), (1, 2)]
  np.testing.assert_array_equal(instances[1].truth, [[True, False], [False, True]])  # union
  heat = np.array([[[0.0, 1.0], [0.0, 0.0]],    # image 0, class 0: max top-right: hit, IoU 1
                   [[0.0, 1.0], [0.0, 0.0]],    # image 0, class 2: miss, IoU 0
                   [[0.0, 0.0], [3.0, 2.0]]])   # image 1, class 2: hit; region {3, 2}: IoU 1/2
  scores = loc.score_instances(heat, [u.truth for u in instances], mode="fraction_of_max",
                               value=0.5)
  np.testing.assert_array_equal(scores.hits, [True, False, True])
  np.testing.assert_allclose(scores.ious, [1.0, 0.0, 0.5])
  np.testing.assert_allclose(scores.chance, [0.25, 0.5, 0.25])
  s = loc.summarise(scores, [u.label for u in instances], ["a", "b", "c"])
  assert s["per_class"] == {
      "a": {"num_instances": 1, "pointing_game": 1.0, "iou": 1.0, "chance": 0.25},
      "c": {"num_instances": 2, "pointing_game": 0.5, "iou": 0.25, "chance": 0.375}}
  assert s["pointing_game"] == pytest.approx(0.75) and s["iou"] == pytest.approx(0.625)
  assert s["pointing_game_all"] == pytest.approx(2 / 3) and s["iou_all"] == pytest.approx(0.5)
  assert s["chance"] == pytest.approx(0.3125) and s["num_instances"] == 3


# Heatmap definitions against independent computations.

def test_cam_is_grad_cam_before_its_relu(tmp_path):
  config = tiny_config(tmp_path)
  model = classifier.build_classifier(config, num_classes=3)
  kernel = jax.random.normal(jax.random.key(1), model.head.linear.kernel[...].shape)
  model.head.linear.kernel[...] = kernel  # not the N(0, 0.01) init: signs vary across positions
  model.head.linear.bias[...] = jnp.asarray([0.3, -0.2, 0.1])
  model.eval()
  images = jax.random.uniform(jax.random.key(2), (2, 32, 32, 1))
  dense = model.encoder(images).dense
  h, w = dense.shape[1:3]
  # The head standardises the pooled features with fixed statistics (fine-tuning's): CAM must
  # weigh the raw dense map by what the whole head does to it.
  pooled = np.asarray(dense.mean(axis=(1, 2)))
  rng = np.random.default_rng(3)
  model.head.set_standardization(
      pooled.mean(0) + rng.normal(0, 0.1, pooled.shape[1]),
      rng.uniform(0.05, 2.0, pooled.shape[1]))
  cam = loc.class_activation_maps(dense, model.head.affine()[0])
  assert cam.shape == (2, h, w, 3)
  np.testing.assert_allclose(model(images), model.head(dense.mean(axis=(1, 2))), rtol=1e-5)
  for k in range(3):
    # Grad-CAM (Selvaraju et al., Eq. 1-2) from the gradient of logit k at the dense map.
    grads = jax.grad(lambda a: model.head(a.mean(axis=(1, 2)))[:, k].sum())(dense)
    alpha = grads.mean(axis=(1, 2))                                   # (B, C)
    weighted = np.einsum("bhwc,bc->bhw", np.asarray(dense, np.float64), np.asarray(alpha))
    np.testing.assert_allclose(cam[..., k] / (h * w), weighted, rtol=1e-4, atol=1e-6)
    assert (weighted < 0).any() and (weighted > 0).any()
    # and CAM averages to the logit minus a per-class constant (Zhou et al.): the logit of the
    # zero map, the head's bias on raw features.
    zero_logit = model.head(jnp.zeros((1, pooled.shape[1])))[0, k]
    np.testing.assert_allclose(cam[..., k].mean(axis=(1, 2)) + zero_logit,
                               model(images)[:, k], rtol=1e-4, atol=1e-4)
  # The raw linear weights alone would rank positions otherwise.
  raw = loc.class_activation_maps(dense, model.head.linear.kernel[...])
  assert not np.allclose(raw, cam, rtol=0.1)


def test_attention_received_and_transport_cost_match_numpy():
  rng = np.random.default_rng(0)
  attention = rng.uniform(size=(2, 3, 4, 6))
  attention /= attention.sum(-1, keepdims=True)
  got = loc.attention_received(jnp.asarray(attention), (2, 3))
  expected = np.zeros((2, 6))
  for b in range(2):
    for j in range(6):
      expected[b, j] = sum(attention[b, h, i, j] for h in range(3) for i in range(4)) / 12
  np.testing.assert_allclose(got, expected.reshape(2, 2, 3), rtol=1e-5)

  plan, cost = rng.uniform(size=(2, 6, 5)), rng.uniform(size=(2, 6, 5))
  got = loc.position_transport_cost(jnp.asarray(plan), jnp.asarray(cost), (3, 2))
  expected = np.array([[sum(plan[b, i, j] * cost[b, i, j] for j in range(5)) / plan[b, i].sum()
                        for i in range(6)] for b in range(2)])
  np.testing.assert_allclose(got, expected.reshape(2, 3, 2), rtol=1e-5)


# The mode end to end.

# The runs of this module compile the same steps: one persistent cache (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("shared_compilation")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """A 2-step pretraining run and a 2-step fine-tuning run from it, on a 300-patient cohort."""
  root = tmp_path_factory.mktemp("localize")
  config = tiny_config(root / "tfds")
  config.data.synthetic_patients = PATIENTS
  pretrain.run(config, str(root / "pretrain"))
  c = tiny_config(root / "tfds", mode="finetune")
  c.data.synthetic_patients = PATIENTS
  c.train.checkpoint_every = 100
  f = c.finetune
  f.split, f.init, f.checkpoint_dir = "train_10pct", "pretrained", str(
      root / "pretrain/checkpoints/pretrain")
  f.batch_size, f.num_steps, f.eval_every, f.warmup_steps = 4, 2, 2, 1
  config_lib.validate(c)
  finetune.run(c, str(root / "finetune"))
  return root


def _localize_config(root, **fields):
  c = tiny_config(root / "tfds", mode="localize")
  c.data.synthetic_patients = PATIENTS
  l = c.localize
  l.classifier_workdir = str(root / "finetune")
  l.checkpoint_dir = str(root / "pretrain/checkpoints/pretrain")
  l.num_references = 3
  l.batch_size = 8
  l.num_examples = 4
  for name, value in fields.items():
    l[name] = value
  config_lib.validate(c)
  return c


def test_end_to_end_writes_metrics_and_figure(runs):
  config = _localize_config(runs, threshold_mode="top_fraction", threshold=0.2)
  workdir = runs / "localize"
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
  assert result["methods"]["cam"]["source"]["classifier_workdir"] == str(runs / "finetune")

  # CAM scores recomputed here: the selected classifier, each instance's class, plain numpy;
  # the weights of the pooled features are the gradient of the (standardising) head's logits.
  _, encoder, head = classifier.load_classifier(runs / "finetune")
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
  result = localize.run(config, str(runs / "random"))
  assert result["methods"]["transport"]["source"]["init"] == "random"
  assert result["figure"] is None and not (runs / "random" / localize.FIGURE_FILE).exists()


def test_classifier_of_another_dataset_is_refused(runs, tmp_path):
  other = tmp_path / "other"
  other.mkdir()
  saved = json.loads((runs / "finetune/config.json").read_text())
  saved["data"]["name"] = "nih_chest_xray14"
  (other / "config.json").write_text(json.dumps(saved))
  config = _localize_config(runs, methods=("cam",), classifier_workdir=str(other))
  with pytest.raises(ValueError, match=r"holds a classifier of 'nih_chest_xray14', not of "
                                       r"config.data.name='synthetic_cxr'"):
    localize.run(config, str(tmp_path / "out"))


@pytest.mark.parametrize("field,value,expected", [
    ("localize.methods", ("cam", "gradients"), "a non-empty tuple of distinct methods"),
    ("localize.methods", (), "a non-empty tuple of distinct methods"),
    ("localize.classifier_workdir", "", "the workdir of a fine-tuning run (method 'cam')"),
    ("localize.init", "imagenet", "one of ('pretrained', 'random')"),
    ("localize.threshold_mode", "otsu", "one of ('fraction_of_max', 'top_fraction')"),
    ("localize.threshold", 0.0, "a number in (0, 1]"),
    ("localize.num_references", 0, "an int >= 1"),
    ("localize.num_examples", -1, "an int >= 0"),
    ("model.cvsim", False, "True for method 'attention'"),
    ("data.name", "siim_acr_pneumothorax", "a dataset with boxes"),
])
def test_validate_names_bad_localize_fields(field, value, expected):
  c = config_lib.base_config()
  c.mode = "localize"
  c.localize.classifier_workdir = "workdirs/finetune"
  config_lib.validate(c)
  section, name = field.split(".")
  c[section][name] = value
  with pytest.raises(config_lib.ConfigError,
                     match=re.escape(f"config.{field}={value!r}: expected {expected}")):
    config_lib.validate(c)


def test_localize_nih_config_validates():
  from configs import localize_nih
  c = localize_nih.get_config()
  config_lib.validate(c)
  assert (c.mode, c.data.name, c.data.test_split) == ("localize", "nih_chest_xray14", "test")
