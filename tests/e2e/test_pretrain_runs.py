"""Pretraining runs end to end: OTCXR resumes and its data path never imports TensorFlow; BYOL
checkpoints its target network (the unit tests are in tests/modes/test_pretrain.py and
tests/modes/test_pretrain_methods.py)."""

import subprocess
import sys
import textwrap

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from otcxr_jax import config_lib
from otcxr_jax.models import target as target_lib
from otcxr_jax.modes import pretrain
from otcxr_jax.training import checkpoint as ckpt_lib
from otcxr_jax.training import state as state_lib
from tests.tiny import tiny_config


def test_pretrain_run_resumes_and_data_path_never_imports_tensorflow(tmp_path):
  script = textwrap.dedent(f"""
      import sys, json
      sys.path.insert(0, {str(config_lib.__file__).rsplit('/otcxr_jax/', 1)[0]!r})
      from tests.tiny import tiny_config
      from otcxr_jax.modes import pretrain
      config = tiny_config({str(tmp_path / 'tfds')!r})
      first = pretrain.run(config, {str(tmp_path / 'wd')!r})
      with config.unlocked():
        config.train.num_steps = 3
      second = pretrain.run(config, {str(tmp_path / 'wd')!r})
      print(json.dumps(dict(tf='tensorflow' in sys.modules, resumed=second.resumed_from,
                            steps=[h['step'] for h in second.history])))
  """)
  out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  result = __import__("json").loads(out.stdout.strip().splitlines()[-1])
  assert result == {"tf": False, "resumed": 2, "steps": [3]}


def test_byol_run_checkpoints_its_target_and_restores_for_evaluation(tmp_path):
  config = tiny_config(tmp_path / "tfds")
  config.method = "byol"
  result = pretrain.run(config, str(tmp_path / "run"))
  model = result.model()
  # The target network was checkpointed with the run and differs from the online network.
  step_dir = tmp_path / "run" / "checkpoints" / "pretrain" / "2"
  metadata = ocp.StandardCheckpointHandler().metadata(step_dir / "state")
  paths = ["/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)
           for path, _ in jax.tree_util.tree_flatten_with_path(metadata)[0]]
  assert any(p.startswith("model_state/target/encoder/") for p in paths), paths[:5]
  target = jax.tree.leaves(nnx.state(model.target.encoder, target_lib.TargetParam))
  online = jax.tree.leaves(nnx.state(model.encoder, nnx.Param))
  assert any(not np.array_equal(a, b) for a, b in zip(target, online))
  # Evaluations read the trained encoder alone, whatever else the BYOL run's state holds.
  encoder = ckpt_lib.restore_network(tmp_path / "run", config).module
  restored = nnx.to_flat_state(nnx.state(encoder))
  trained = dict(nnx.to_flat_state(nnx.state(model.encoder)))
  assert len(restored) == len(trained)
  for path, var in restored:
    np.testing.assert_array_equal(var.get_value(), trained[path].get_value())
  assert "target" not in state_lib.split_model(model)[1]
