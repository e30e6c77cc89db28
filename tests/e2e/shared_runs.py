"""Runs that several end-to-end modules read, made once per test process (session fixtures,
offered to tests/e2e/ by its conftest.py).

A module that uses one of these fixtures names the fixture's xdist group (``pytestmark``), so that
under ``pytest -n`` its tests run in the process that made the run; every other end-to-end module
is a group of its own (tests/conftest.py)."""

import jax
import pytest
from flax import nnx

from otcxr_jax.modes import finetune, pretrain
from tests.modes.test_finetune import PATIENTS, _config
from tests.tiny import tiny_config

#: The group of the modules that read `cohort` or `cohort_finetuning`.
COHORT_GROUP = "cohort_runs"
#: The group of the modules that read `tiny_pretraining`.
TINY_GROUP = "tiny_pretraining"


@pytest.fixture(scope="session")
def cohort(tmp_path_factory):
  """A 2-step tiny pretraining run on the 300-patient cohort (tests/modes/test_finetune.py, built
  in ``<root>/tfds``): the root folder, the run's checkpoint directory and its trained encoder's
  state."""
  root = tmp_path_factory.mktemp("cohort")
  config = tiny_config(root / "tfds")
  config.data.synthetic_patients = PATIENTS
  result = pretrain.run(config, str(root / "pretrain"))
  return (root, root / "pretrain/checkpoints/pretrain",
          jax.device_get(nnx.state(result.model().encoder)))


@pytest.fixture(scope="session")
def cohort_finetuning(cohort):
  """A fine-tuning run (train_10pct, 4 steps) from `cohort`'s encoder, long enough to change the
  encoder: its config, workdir and result."""
  root, checkpoint_dir, _ = cohort
  config = _config(root, split="train_10pct", init="pretrained",
                   checkpoint_dir=str(checkpoint_dir), encoder_learning_rate=0.05)
  workdir = root / "statistics"
  return config, workdir, finetune.run(config, str(workdir))


@pytest.fixture(scope="session")
def tiny_pretraining(tmp_path_factory):
  """A finished 2-step pretraining run of the tiny config (checkpoints at steps 1 and 2): its
  config, the root folder (data in ``<root>/tfds``), and the trained encoder's state. Tests copy
  the workdir ``<root>/pretrain`` before they change it."""
  root = tmp_path_factory.mktemp("tiny_pretraining")
  config = tiny_config(root / "tfds")
  result = pretrain.run(config, str(root / "pretrain"))
  return config, root, jax.device_get(nnx.state(result.model().encoder))
