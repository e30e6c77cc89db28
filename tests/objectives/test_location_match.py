"""Location-matched MSE (the OT ablation): matches and values on crops of known overlap, by hand."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from otcxr_jax import config_lib
from otcxr_jax.data import augment
from otcxr_jax.objectives import location_match, otcxr, regularizers
from tests.tiny import tiny_config

# Two crops of the full image height: s covers x in [0, 0.5], t covers x in [0.25, 0.75]. On a
# 2x2 grid (row-major) the cells' source positions (y, x) are
#   s: (.25, .125) (.25, .375) (.75, .125) (.75, .375)
#   t: (.25, .375) (.25, .625) (.75, .375) (.75, .625)
BOX_S = (0.0, 0.0, 1.0, 0.5)
BOX_T = (0.0, 0.25, 1.0, 0.75)
MATCH_S_TO_T = [0, 0, 2, 2]  # s0 -> t0 (0.25 away), s1 -> t0 (same place), s2, s3 -> t2 likewise
MATCH_T_TO_S = [1, 1, 3, 3]  # t0 -> s1 (same place), t1 -> s1 (0.25 away), t2, t3 -> s3


def _positions(box, flip=False):
  pos = augment.positions_in_source(jnp.array([box]), jnp.zeros(1), (2, 2),
                                    flip=jnp.array([flip]))
  return pos.reshape(1, 4, 2)


def test_cells_are_matched_to_the_nearest_source_position():
  pos_s, pos_t = _positions(BOX_S), _positions(BOX_T)
  np.testing.assert_allclose(pos_s[0], [[.25, .125], [.25, .375], [.75, .125], [.75, .375]])
  np.testing.assert_array_equal(location_match.nearest_position_matches(pos_s, pos_t)[0],
                                MATCH_S_TO_T)
  np.testing.assert_array_equal(location_match.nearest_position_matches(pos_t, pos_s)[0],
                                MATCH_T_TO_S)


def test_a_mirrored_view_matches_mirrored_cells():
  # The same crop, t flipped left-right: t's left column sees s's right column.
  pos_s, pos_t = _positions(BOX_S), _positions(BOX_S, flip=True)
  np.testing.assert_array_equal(location_match.nearest_position_matches(pos_s, pos_t)[0],
                                [1, 0, 3, 2])


def test_mse_over_both_directions_by_hand():
  q_s = jnp.array([[[1.0], [2.0], [3.0], [4.0]]])
  q_t = jnp.array([[[10.0], [20.0], [30.0], [40.0]]])
  # s -> t: (1-10)² + (2-10)² + (3-30)² + (4-30)² = 1550 over 4 tokens;
  # t -> s: (10-2)² + (20-2)² + (30-4)² + (40-4)² = 2360 over 4 tokens.
  expected = 0.5 * (1550 / 4 + 2360 / 4)
  value = location_match.location_matched_mse(q_s, q_t, _positions(BOX_S), _positions(BOX_T))
  np.testing.assert_allclose(value, expected, rtol=1e-6)


def test_feature_dimensions_are_averaged():
  rs = np.random.RandomState(0)
  q_s, q_t = rs.randn(2, 1, 4, 3).astype(np.float32)
  pos_s, pos_t = _positions(BOX_S), _positions(BOX_T)
  s_to_t = np.mean((q_s[0] - q_t[0][MATCH_S_TO_T]) ** 2)
  t_to_s = np.mean((q_t[0] - q_s[0][MATCH_T_TO_S]) ** 2)
  np.testing.assert_allclose(location_match.location_matched_mse(q_s, q_t, pos_s, pos_t),
                             0.5 * (s_to_t + t_to_s), rtol=1e-6)


def test_otcxr_loss_with_location_mse_alignment():
  rs = np.random.RandomState(1)
  q_s, q_t = (jnp.asarray(x) for x in rs.randn(2, 3, 4, 5).astype(np.float32))
  pos_s = jnp.repeat(_positions(BOX_S), 3, axis=0)
  pos_t = jnp.repeat(_positions(BOX_T), 3, axis=0)
  config = dataclasses.replace(otcxr.OTCXRObjectiveConfig(), alignment="location_mse",
                               alpha=2.0, beta=3.0, eta=5.0).validate()
  loss, aux = otcxr.otcxr_loss(q_s, q_t, positions=(pos_s, pos_t),
                               **dataclasses.asdict(config))
  assert set(aux) == set(otcxr.LOCATION_MSE_METRIC_KEYS)
  mse = location_match.location_matched_mse(q_s, q_t, pos_s, pos_t)
  var = regularizers.variance_loss(q_s) + regularizers.variance_loss(q_t)
  cov = regularizers.covariance_loss(q_s) + regularizers.covariance_loss(q_t)
  np.testing.assert_allclose(aux["location_mse"], mse, rtol=1e-6)
  np.testing.assert_allclose(loss, 2.0 * mse + 3.0 * var + 5.0 * cov, rtol=1e-5)
  with pytest.raises(ValueError, match="positions"):
    otcxr.otcxr_loss(q_s, q_t, **dataclasses.asdict(config))


def test_bad_shapes_and_alignment_are_refused(tmp_path):
  with pytest.raises(ValueError, match="pos_a must have shape"):
    location_match.nearest_position_matches(jnp.zeros((1, 4, 3)), jnp.zeros((1, 4, 2)))
  with pytest.raises(ValueError, match="q_s must be"):
    location_match.location_matched_mse(jnp.zeros((1, 3, 2)), jnp.zeros((1, 4, 2)),
                                        jnp.zeros((1, 4, 2)), jnp.zeros((1, 4, 2)))
  config = tiny_config(tmp_path)
  config.objective.alignment = "nearest"
  with pytest.raises(config_lib.ConfigError, match=r"OTCXRObjectiveConfig\.alignment"):
    config_lib.validate(config)
