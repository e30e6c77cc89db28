"""Reads TensorBoard event files back (for tests of what runs write there)."""


def read_events(folder) -> tuple[dict[str, float], dict[str, tuple[int, int]], set[int]]:
  """(scalar tag -> value, image tag -> (width, height), steps) of the event files in ``folder``."""
  import tensorflow as tf
  from tensorboard.backend.event_processing import event_accumulator
  acc = event_accumulator.EventAccumulator(str(folder), size_guidance={"tensors": 0})
  acc.Reload()
  scalars, images, steps = {}, {}, set()
  for tag in acc.Tags()["tensors"]:
    for event in acc.Tensors(tag):
      steps.add(event.step)
      value = tf.make_ndarray(event.tensor_proto)
      if value.dtype == object:  # an image summary: width, height, then the encoded images
        width, height = int(value[0]), int(value[1])
        decoded = tf.io.decode_png(value[2]).numpy()
        assert decoded.shape[:2] == (height, width)
        images[tag] = (width, height)
      else:
        scalars[tag] = float(value)
  return scalars, images, steps
