"""Localisation: pointing game, IoU and box rasterisation against hand-computed cases; CAM against
the gradient definition of Grad-CAM; the pretraining-network maps against numpy; the mode end to
end (tiny fine-tuning run and pretraining checkpoint), and its config validation."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from otcxr_jax import config_lib, modes
from otcxr_jax.evaluation import classifier
from otcxr_jax.evaluation import localization as loc
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
  modes.validate(c)
  section, name = field.split(".")
  c[section][name] = value
  with pytest.raises(config_lib.ConfigError,
                     match=re.escape(f"config.{field}={value!r}: expected {expected}")):
    modes.validate(c)


def test_localize_nih_config_validates():
  from configs import localize
  c = localize.get_config("dataset=nih")
  modes.validate(c)
  assert (c.mode, c.data.name, c.data.test_split) == ("localize", "nih_chest_xray14", "test")
  assert (c.localize.checkpoint_dir, c.localize.classifier_workdir) == (
      "workdirs/pretrain_nih", "workdirs/finetune_nih_10pct")
