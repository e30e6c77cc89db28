"""pipeline.array_batches: in-memory examples in shuffled, per-process, resumable batches."""

import numpy as np
import pytest

from otcxr_jax.data import pipeline


def _arrays(n=20):
  return {"x": np.arange(n, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32),
          "y": np.arange(n)}


def _take(it, steps):
  return [next(it) for _ in range(steps)]


def test_each_epoch_sees_every_full_batch_example_once_in_a_new_order():
  it = pipeline.array_batches(_arrays(), global_batch_size=6, seed=0)
  batches = _take(it, 9)  # 3 full batches per epoch of 20: 18 examples, 2 dropped
  epochs = [np.concatenate([b["y"] for b in batches[i:i + 3]]) for i in (0, 3, 6)]
  for ids in epochs:
    assert len(ids) == 18 and len(set(ids.tolist())) == 18 and set(ids.tolist()) <= set(range(20))
  assert not np.array_equal(epochs[0], epochs[1])
  for b in batches:  # rows stay together
    np.testing.assert_array_equal(b["x"][:, 0], b["y"].astype(np.float32))


def test_process_slices_make_up_the_single_process_batches():
  single = _take(pipeline.array_batches(_arrays(), global_batch_size=8, seed=3), 5)
  parts = [_take(pipeline.array_batches(_arrays(), global_batch_size=8, seed=3,
                                        process_index=p, process_count=2), 5) for p in (0, 1)]
  for step in range(5):
    assert parts[0][step]["y"].shape == (4,)
    np.testing.assert_array_equal(
        np.concatenate([parts[0][step]["y"], parts[1][step]["y"]]), single[step]["y"])


def test_a_restored_iterator_continues_with_the_same_batches():
  it = pipeline.array_batches(_arrays(), global_batch_size=6, seed=1)
  _take(it, 4)
  state = it.get_state()
  expected = _take(it, 4)
  resumed = pipeline.array_batches(_arrays(), global_batch_size=6, seed=1)
  resumed.set_state(state)
  for a, b in zip(_take(resumed, 4), expected):
    np.testing.assert_array_equal(a["y"], b["y"])


def test_other_seeds_give_other_orders():
  a = next(pipeline.array_batches(_arrays(), global_batch_size=10, seed=0))["y"]
  b = next(pipeline.array_batches(_arrays(), global_batch_size=10, seed=1))["y"]
  assert not np.array_equal(a, b)


@pytest.mark.parametrize("arrays, match", [
    ({"x": np.zeros(5), "y": np.zeros(4)}, "one length"),
    ({"x": np.zeros(3), "y": np.zeros(3)}, "fewer than one global batch"),
])
def test_bad_inputs_are_refused(arrays, match):
  with pytest.raises(ValueError, match=match):
    pipeline.array_batches(arrays, global_batch_size=4, seed=0)
