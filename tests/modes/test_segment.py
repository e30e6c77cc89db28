"""Segmentation transfer: U-Net decoder shapes, BCE + soft Dice, joint augmentation, the mode."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from otcxr_jax import config_lib, models, modes
from otcxr_jax.data import augment
from otcxr_jax.modes import segment
from otcxr_jax.objectives import segmentation as seg_loss
from tests.tiny import tiny_config

SEGMENT_PATIENTS = 100  # the smallest synthetic cohort found with positives in validation and test


def _segment_config(data_dir, *, init="random", checkpoint_dir=""):
  c = tiny_config(data_dir, mode="segment")
  c.data.synthetic_patients = SEGMENT_PATIENTS
  c.probe.init = init
  c.probe.checkpoint_dir = checkpoint_dir
  s = c.segment
  s.batch_size = 8
  s.num_steps = 2
  s.eval_every = 1
  s.patience = 0
  s.warmup_steps = 1
  s.decoder_channels = (16, 8, 8)   # tiny encoder (tests/tiny.py): levels 4, 2, 1
  return c


# --- decoder -------------------------------------------------------------------------------------

def _abstract_apply(build, input_shape):
  """The abstract model ``build`` returns and the shape of its logits, nothing computed."""
  model = nnx.eval_shape(build)
  graphdef, state = nnx.split(model)
  logits = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x), state,
                          jax.ShapeDtypeStruct(input_shape, jnp.float32))
  return model, logits


@pytest.mark.parametrize("kwargs,hw,strides,skips", [
    (dict(stem="imagenet"), (36, 52), (16, 8, 4, 2, 1),
     ("stage3", "stage2", "stage1", "stem", None)),
    (dict(stem="small", stem_stride=2), (32, 32), (8, 4, 2, 1),
     ("stage3", "stage2", "stage1", None)),         # stem and stage1 share stride 2: the deeper
    (dict(stem="small", stem_stride=1), (20, 28), (4, 2, 1), ("stage3", "stage2", "stage1")),
])
def test_resnet_decoder_returns_input_sized_logits(kwargs, hw, strides, skips):
  def build():
    encoder = models.build_encoder("resnet18", width=0.125, rngs=nnx.Rngs(0), **kwargs)
    return models.build_segmentation_model(encoder, [8] * len(strides), rngs=nnx.Rngs(1))

  model, logits = _abstract_apply(build, (2, *hw, 1))
  assert logits.shape == (2, *hw, 1) and logits.dtype == jnp.float32
  assert model.decoder.strides == strides and model.decoder.skip_names == skips


def test_vit_decoder_uses_intermediate_blocks_as_a_pyramid():
  vit = nnx.eval_shape(lambda: models.vit_b16(image_size=224, rngs=nnx.Rngs(0)))
  assert models.decoder_strides(vit.stage_strides) == (8, 4, 2, 1)

  def build():
    encoder = models.ViT(patch_size=16, dim=32, depth=4, num_heads=2, image_size=32,
                         rngs=nnx.Rngs(0))
    return models.build_segmentation_model(encoder, [16, 8, 8, 8], rngs=nnx.Rngs(1))

  model, logits = _abstract_apply(build, (2, 32, 48, 1))
  assert logits.shape == (2, 32, 48, 1)
  # block4 is the bottleneck; block k-th from the deepest is upsampled k times to stride 16/2^k.
  assert model.decoder.bottleneck_name == "block4"
  assert model.decoder.skip_names == ("block3", "block2", "block1", None)


@pytest.mark.parametrize("encoder_fn", [
    lambda: models.build_encoder("resnet18", width=0.125, stem="small", rngs=nnx.Rngs(0)),
    lambda: models.ViT(patch_size=8, dim=16, depth=2, num_heads=2, image_size=16,
                       rngs=nnx.Rngs(0)),
])
def test_every_decoder_parameter_receives_gradient(encoder_fn):
  encoder = encoder_fn()
  n = len(models.decoder_strides(encoder.stage_strides))
  model = models.build_segmentation_model(encoder, [8] * n, rngs=nnx.Rngs(1))
  images = jax.random.uniform(jax.random.key(0), (2, 16, 16, 1))
  target = (images > 0.5).astype(jnp.float32)

  @nnx.jit
  def grads(model):
    return nnx.grad(lambda m: seg_loss.segmentation_loss(m(images), target,
                                                         dice_weight=1.0)[0])(model)

  g = nnx.state(grads(model), nnx.Param)["decoder"]
  for path, leaf in jax.tree_util.tree_leaves_with_path(g):
    assert float(jnp.abs(leaf).max()) > 0, jax.tree_util.keystr(path)


def test_decoder_refuses_wrong_channel_count():
  encoder = nnx.eval_shape(lambda: models.build_encoder("resnet50", rngs=nnx.Rngs(0)))
  with pytest.raises(ValueError, match=r"decoder_channels=\(8, 8\): expected 5 positive ints"):
    models.UNetDecoder(encoder.stage_channels, encoder.stage_strides, channels=(8, 8),
                       rngs=nnx.Rngs(0))


# --- loss ----------------------------------------------------------------------------------------

def _numpy_loss(logits, masks, dice_weight, smooth):
  z, t = logits.astype(np.float64), masks.astype(np.float64)
  p = 1.0 / (1.0 + np.exp(-z))
  bce = np.mean(-t * np.log(p) - (1 - t) * np.log(1 - p))
  dice = 1.0 - (2.0 * np.sum(p * t) + smooth) / (np.sum(p) + np.sum(t) + smooth)
  return bce + dice_weight * dice, bce, dice


@pytest.mark.parametrize("dice_weight,smooth", [(1.0, 1.0), (0.5, 0.0), (3.0, 10.0)])
def test_loss_matches_numpy(dice_weight, smooth):
  rng = np.random.default_rng(int(dice_weight * 10))
  logits = rng.normal(scale=3.0, size=(3, 8, 8, 1)).astype(np.float32)
  masks = (rng.uniform(size=(3, 8, 8, 1)) < 0.2).astype(np.float32)
  loss, aux = seg_loss.segmentation_loss(jnp.asarray(logits), jnp.asarray(masks),
                                         dice_weight=dice_weight, smooth=smooth)
  want, bce, dice = _numpy_loss(logits, masks, dice_weight, smooth)
  np.testing.assert_allclose(float(aux["bce"]), bce, rtol=1e-5)
  np.testing.assert_allclose(float(aux["dice_loss"]), dice, rtol=1e-5)
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)


def test_soft_dice_hand_case_pools_the_batch():
  # Saturated predictions [1, 1, 0, 0] against [1, 0, 1, 0] in two images of two pixels:
  # overlap 1, |P| = |T| = 2 -> 1 - (2 + 1) / (4 + 1) = 0.4 with s = 1.
  logits = jnp.array([[40.0, 40.0], [-40.0, -40.0]])
  masks = jnp.array([[1.0, 0.0], [1.0, 0.0]])
  np.testing.assert_allclose(float(seg_loss.soft_dice_loss(logits, masks)), 0.4, rtol=1e-6)
  with pytest.raises(ValueError, match="same shape"):
    seg_loss.bce_loss(logits, masks[:, :1])


# --- augmentation and optimiser -----------------------------------------------------------------

def test_augment_pair_moves_mask_with_image():
  rng = np.random.default_rng(0)
  masks = np.zeros((6, 24, 24, 1), np.float32)
  for i in range(6):  # one bright square per image, at a random place
    y, x = rng.integers(2, 14, size=2)
    masks[i, y:y + 8, x:x + 8] = 1.0
  cfg = augment.AugmentConfig(out_size=24, crop_scale=(0.5, 1.0), rotation_deg=20.0,
                              brightness=0.0, contrast=0.0, gamma=(1.0, 1.0), blur_prob=0.0,
                              noise_prob=0.0)
  views, moved = segment.augment_pair(jax.random.key(3), jnp.asarray(masks), jnp.asarray(masks),
                                      cfg)
  # Without photometric changes the image view is the interpolated mask: thresholding it gives
  # the moved mask, pixel for pixel.
  np.testing.assert_array_equal(np.asarray(views) >= 0.5, np.asarray(moved) == 1.0)
  assert set(np.unique(np.asarray(moved))) <= {0.0, 1.0}
  assert not np.array_equal(np.asarray(moved), masks)  # the geometry did change the masks


def test_encoder_and_decoder_learning_rates_are_separate():
  class Tiny(nnx.Module):
    def __init__(self):
      self.encoder = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
      self.decoder = nnx.Linear(2, 1, rngs=nnx.Rngs(1))

  c = config_lib.base_config()
  c.segment.encoder_learning_rate, c.segment.decoder_learning_rate = 1e-4, 3e-2
  c.segment.warmup_steps, c.segment.weight_decay = 0, 0.0
  tx, schedule = segment.make_optimizer(c)
  params = nnx.state(Tiny(), nnx.Param)
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  # AdamW's first step moves every parameter by -lr * g / |g| (up to its epsilon).
  for group, lr in (("encoder", 1e-4), ("decoder", 3e-2)):
    for leaf in jax.tree.leaves(updates[group]):
      np.testing.assert_allclose(np.asarray(leaf), -lr, rtol=1e-5)
  assert float(schedule(0)) == pytest.approx(3e-2)


# --- config --------------------------------------------------------------------------------------

def test_config_refuses_bad_segment_fields(tmp_path):
  modes.validate(_segment_config(tmp_path))
  for field, value, expected in [
      ("threshold", 1.0, "a probability"),
      ("selection_metric", "iou", "one of"),
      ("eval_every", 3, "at most segment.num_steps=2"),
      ("decoder_channels", (16, 8), "3 positive ints, one per decoder level"),
      ("patience", -1, "an int >= 0"),
  ]:
    c = _segment_config(tmp_path)
    c.segment[field] = value
    with pytest.raises(config_lib.ConfigError,
                       match=rf"config\.segment\.{field}=.*expected {re.escape(expected)}"):
      modes.validate(c)
  c = _segment_config(tmp_path)
  c.segment.crop_scale = (0.0, 1.0)
  with pytest.raises(config_lib.ConfigError, match=r"config\.segment: .*crop_scale"):
    modes.validate(c)


# --- the mode end to end -------------------------------------------------------------------------
