"""Pretraining methods as a config choice: the losses, the config checks, evaluation restores."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from otcxr_jax import config_lib
from otcxr_jax import methods
from otcxr_jax.data import augment
from otcxr_jax.objectives import barlow_twins, byol, simclr, vicreg, vicregl
from tests.tiny import tiny_config

IMAGES = np.random.RandomState(0).randint(0, 256, (8, 32, 32, 1)).astype(np.uint8)


def _positions(box, angle, flip, grid):
  """(B, h*w, 2) cell centres in the source image, straight from the crop geometry."""
  pos = augment.positions_in_source(box, angle, grid, flip=flip)
  return pos.reshape(box.shape[0], -1, 2)


# Non-default hyperparameters, and each method's objective written out with them.
CASES = {
    "simclr": ({"temperature": 0.5},
               lambda out, v: simclr.nt_xent_loss(out.z_s, out.z_t, temperature=0.5)),
    "byol": ({"base_tau": 0.9},
             lambda out, v: byol.byol_loss(out.p_s, out.p_t, out.z_s_target, out.z_t_target)),
    "barlow_twins": ({"lambda_offdiag": 0.02, "eps": 1e-3},
                     lambda out, v: barlow_twins.barlow_twins_loss(
                         out.z_s, out.z_t, lambda_offdiag=0.02, eps=1e-3)),
    "vicreg": ({"sim_coeff": 3.0, "std_coeff": 5.0, "cov_coeff": 7.0},
               lambda out, v: vicreg.vicreg_loss(out.z_s, out.z_t, sim_coeff=3.0, std_coeff=5.0,
                                                 cov_coeff=7.0)),
    "vicregl": ({"alpha": 0.5, "num_matches": (3, 2)},
                lambda out, v: vicregl.vicregl_loss(
                    out.z_s, out.z_t, out.maps_s, out.maps_t,
                    _positions(v.box_s, v.angle_s, v.flip_s, out.grid),
                    _positions(v.box_t, v.angle_t, v.flip_t, out.grid), alpha=0.5,
                    num_matches=(3, 2))),
}


@pytest.mark.parametrize("method", list(CASES))
def test_loss_is_the_method_objective_of_the_network_outputs(tmp_path, method):
  hparams, objective = CASES[method]
  config = tiny_config(tmp_path)
  config.method = method
  config[method].update(hparams)
  config_lib.validate(config)
  model = methods.build_model(config, nnx.Rngs(0))
  model.train()
  rng = jax.random.key_data(jax.random.key(3))
  loss, _ = methods.make_loss_fn(config)(model, {"image": IMAGES}, rng)
  views = augment.two_views(rng, jnp.asarray(IMAGES, jnp.float32) / 255.0,
                            config_lib.augment_config(config))
  expected, _ = objective(model(views.view_s, views.view_t), views)
  np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_every_method_starts_from_the_same_encoder(tmp_path):
  config = tiny_config(tmp_path)
  reference = nnx.state(methods.build_model(config, nnx.Rngs(0)).encoder)
  for method in config_lib.METHODS[1:]:
    config.method = method
    encoder = nnx.state(methods.build_model(config, nnx.Rngs(0)).encoder)
    for a, b in zip(jax.tree.leaves(reference), jax.tree.leaves(encoder)):
      np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("field, value, message", [
    ("method", "mocov3", r"config\.method='mocov3'"),
    ("vicreg.sim_coeff", -1.0, r"config\.vicreg: VICRegConfig\.sim_coeff"),
    ("simclr.temperature", 0.0, r"config\.simclr: SimCLRConfig\.temperature"),
    ("byol.base_tau", 1.5, r"config\.byol: BYOLConfig\.base_tau"),
    ("vicregl.num_matches", (20, 4), r"config\.vicregl\.num_matches=\(20, 4\): expected at most "
                                     r"the 16 cells of the 4x4 dense map"),
])
def test_bad_method_fields_are_refused_by_name(tmp_path, field, value, message):
  config = tiny_config(tmp_path)
  config.method = "vicregl"
  section, _, name = field.rpartition(".")
  (config[section] if section else config)[name] = value
  with pytest.raises(config_lib.ConfigError, match=message):
    config_lib.validate(config)


def test_demo_mode_needs_otcxr(tmp_path):
  config = tiny_config(tmp_path, mode="demo")
  config.method = "simclr"
  with pytest.raises(config_lib.ConfigError, match=r"config\.method='simclr'.*'demo'"):
    config_lib.validate(config)
