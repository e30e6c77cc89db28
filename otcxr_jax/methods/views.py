"""Where the cells of the two augmented views lie in the source image (from their crop boxes,
rotations and flips): VICRegL's location matching and OTCXR's location prior read them."""

from __future__ import annotations

import jax

from otcxr_jax.data import augment


def view_positions(views: augment.Views, grid: tuple[int, int]) -> tuple[jax.Array, jax.Array]:
  """``(pos_s, pos_t)``: ``(B, h*w, 2)`` source-image positions of both views' grid cells."""
  batch = views.box_s.shape[0]
  pos_s = augment.positions_in_source(views.box_s, views.angle_s, grid, flip=views.flip_s)
  pos_t = augment.positions_in_source(views.box_t, views.angle_t, grid, flip=views.flip_t)
  return pos_s.reshape(batch, -1, 2), pos_t.reshape(batch, -1, 2)
