"""Weighted kNN evaluation of the synthetic demo's pretrained encoder (run configs/demo.py first).

    python -m otcxr_jax.main --config configs/knn_synthetic.py --workdir workdirs/knn_synthetic

Reads the latest checkpoint of workdirs/demo/checkpoints/pretrain with the demo's model; the
training split is the neighbour bank, similarity the cosine of pooled features centred on the
bank's mean (DINO's weighted vote, k = 20, T = 0.07). The random-init floor:
`--config.probe.init=random`.
"""

from configs import demo


def get_config():
  c = demo.get_config()
  c.mode = "knn"
  c.probe.init = "pretrained"
  c.probe.checkpoint_dir = "workdirs/demo/checkpoints/pretrain"
  c.knn.k = 20
  c.knn.temperature = 0.07
  return c
