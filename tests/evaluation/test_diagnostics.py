"""Feature-spread diagnostics against hand-built features."""

import numpy as np
import pytest
from flax import nnx

from otcxr_jax.evaluation import diagnostics


def test_variance_shares_of_pure_position_and_pure_image_features():
  rng = np.random.default_rng(0)
  layout = rng.normal(size=(1, 4, 4, 3))          # the same map in every image
  offsets = rng.normal(size=(8, 1, 1, 3))         # one constant per image
  assert diagnostics.variance_shares(np.repeat(layout, 8, 0)) == pytest.approx((1, 0, 0))
  assert diagnostics.variance_shares(np.repeat(np.repeat(offsets, 4, 1), 4, 2)) == pytest.approx(
      (0, 1, 0))


def test_variance_shares_match_a_hand_decomposition():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(6, 5, 2)) + rng.normal(size=(1, 5, 2)) * 3
  grand = x.mean((0, 1))
  pos, img = x.mean(0), x.mean(1)
  resid = x - pos[None] - img[:, None] + grand
  total = ((x - grand) ** 2).mean((0, 1)).sum()
  expected = (((pos - grand) ** 2).mean(0).sum() / total, ((img - grand) ** 2).mean(0).sum() / total,
              (resid ** 2).mean((0, 1)).sum() / total)
  assert diagnostics.variance_shares(x) == pytest.approx(expected)
  assert sum(diagnostics.variance_shares(x)) == pytest.approx(1.0)


def test_pooled_std_over_mean():
  pooled = np.array([[1.0, 10.0], [3.0, 10.2], [5.0, 9.8]])
  std = pooled.std(0)
  assert diagnostics.pooled_std_over_mean(pooled) == pytest.approx(
      np.median(std / np.abs(pooled.mean(0))))


def test_feature_spread_of_an_encoder_matches_its_outputs():
  from otcxr_jax.models import factory
  from tests.tiny import tiny_config
  config = tiny_config("/nonexistent")
  encoder = factory.build_encoder(config, nnx.Rngs(0))
  images = np.random.default_rng(0).integers(0, 256, size=(10, 32, 32, 1), dtype=np.uint8)
  records = [{"image": image} for image in images]
  # The first 7 records (limit), in batches of 4: the last batch padded, the padding dropped.
  spread = diagnostics.feature_spread(encoder, records, image_size=32, batch_size=4, limit=7)
  out = encoder(images[:7].astype(np.float32) / 255.0)
  assert (spread.position_share, spread.image_share, spread.interaction_share) == pytest.approx(
      diagnostics.variance_shares(np.asarray(out.dense)), abs=1e-5)
  assert spread.pooled_std_over_mean == pytest.approx(
      diagnostics.pooled_std_over_mean(np.asarray(out.pooled)), rel=1e-4)
