"""The demo's pair figures read the training loss itself: ``visualize.pair_examples`` (jitted)
against the eager ``pretraining_loss`` on the same images, views and key."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from otcxr_jax import config_lib, methods
from otcxr_jax.methods.otcxr import pretraining_loss
from otcxr_jax.objectives import otcxr as otcxr_objective
from otcxr_jax.reporting import visualize
from tests.tiny import tiny_config


def test_pair_examples_are_the_training_losss_views_plans_and_attention(tmp_path):
  config = tiny_config(tmp_path)
  model = methods.build_model(config, nnx.Rngs(0))
  aug, objective = config_lib.augment_config(config), config_lib.objective_config(config)
  images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 1), dtype=np.uint8)
  got = visualize.pair_examples(model, images, aug=aug, objective=objective, seed=5)

  model.eval()  # the reference jitted too (compiled once, not hundreds of eager operations)
  _, aux, views, out = jax.jit(lambda x: pretraining_loss(
      model, x, jax.random.key(5), aug, dataclasses.asdict(objective), return_attention=True))(
          jnp.asarray(images, jnp.float32) / 255.0)
  np.testing.assert_allclose(got.views_s, views.view_s, atol=1e-5)
  np.testing.assert_allclose(got.views_t, views.view_t, atol=1e-5)
  np.testing.assert_allclose(got.plans, aux[otcxr_objective.PLAN_KEY], atol=1e-5)
  np.testing.assert_allclose(got.attention_s, out.attention_s, atol=1e-5)
  h, w = got.grid
  assert got.grid == tuple(out.grid) and got.plans.shape == (3, h * w, h * w)
  np.testing.assert_allclose(got.plans.sum(axis=(1, 2)), 1.0, rtol=1e-4)
  assert got.attention_s.shape[:2] == (3, config.model.cvsim_heads)
