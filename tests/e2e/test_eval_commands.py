"""Each evaluation mode run as its documented command line, ``python -m otcxr_jax.main --config
configs/<mode>.py:dataset=synthetic``, at tiny size (tiny overrides on the command line,
random-init encoders of the config's own network, no run named, so no pretraining run is needed):
exit 0 and a metrics.json. The finetune run is then the classifier that localize's CAM
explains."""

import json
import pathlib
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

REPO = pathlib.Path(__file__).resolve().parents[2]
TINY = ["--config.data.config=32", "--config.data.image_size=32",
        "--config.data.synthetic_patients=16", "--config.model.width=0.125",
        # Two stages: the smallest network whose segmentation decoder has a level (stride 1); the
        # five commands take about 3/4 of the CPU time of a four-stage tiny network.
        "--config.model.stem=small", "--config.model.stem_stride=1", "--config.model.num_stages=2",
        "--config.model.projector_hidden=32",
        "--config.model.projector_dim=16", "--config.model.cvsim_heads=2",
        "--config.objective.num_iters=5", "--config.train.tensorboard=False",
        "--config.train.log_every=1", "--config.probe.batch_size=8", "--config.probe.num_steps=4",
        "--config.probe.weight_decays=(0.001,)", "--config.probe.init=random",
        "--config.probe.train_examples=12",  # the probes' labelled subset (configs/demo.py's)
        "--config.probe.checkpoint_dir="]  # no run named: the network is the config's own
MODES = {
    "linear_probe": [],
    "knn": ["--config.knn.k=3"],
    "finetune": ["--config.finetune.init=random", "--config.finetune.checkpoint_dir=",
                 "--config.finetune.split=train", "--config.finetune.batch_size=4",
                 "--config.finetune.num_steps=2", "--config.finetune.eval_every=1",
                 "--config.finetune.warmup_steps=0", "--config.finetune.linear_probe_epochs=2",
                 "--config.train.checkpoint_every=2"],
    "segment": ["--config.segment.batch_size=4", "--config.segment.num_steps=2",
                "--config.segment.eval_every=1", "--config.segment.warmup_steps=0",
                "--config.segment.patience=0", "--config.segment.decoder_channels=(8,)",
                "--config.segment.selection_metric=dice_all", "--config.train.checkpoint_every=2"],
    "localize": ["--config.localize.init=random", "--config.localize.checkpoint_dir=",
                 "--config.localize.batch_size=4", "--config.localize.num_examples=2",
                 "--config.localize.num_references=2"],
}


def test_every_evaluation_command_runs(tmp_path):
  data = f"--config.data.data_dir={tmp_path / 'data'}"
  for mode, extra in MODES.items():
    workdir = tmp_path / mode
    if mode == "localize":
      extra = extra + [f"--config.localize.classifier_workdir={tmp_path / 'finetune'}"]
    out = subprocess.run(
        [sys.executable, "-m", "otcxr_jax.main", "--config", f"configs/{mode}.py:dataset=synthetic",
         f"--workdir={workdir}", data, *TINY, *extra],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, f"{mode}:\n{out.stdout[-1500:]}\n{out.stderr[-3000:]}"
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics, mode
