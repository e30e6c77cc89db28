"""Linear probe of the synthetic demo's pretrained encoder (run configs/demo.py first).

    python -m otcxr_jax.main --config configs/linear_probe_synthetic.py \
        --workdir workdirs/linear_probe_synthetic

Reads the latest checkpoint of workdirs/demo/checkpoints/pretrain (the demo's model: change
`model.*` together with `probe.checkpoint_dir` to probe another run). The random-init floor:
`--config.probe.init=random`.
"""

from configs import demo


def get_config():
  c = demo.get_config()
  c.mode = "linear_probe"
  c.probe.init = "pretrained"
  c.probe.checkpoint_dir = "workdirs/demo/checkpoints/pretrain"
  return c
