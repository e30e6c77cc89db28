"""16-bit images are scaled by the bit depth of their data (``tfds_builders/cxr_base/images.py``):
an ``sBIT`` chunk's significant bits, else the smallest common depth holding the largest value."""

import io

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from tfds_builders.cxr_base import images


def _save_16_bit(path, values: np.ndarray, significant_bits: int | None = None, *,
                 text: bool = False):
  """``values`` as a 16-bit grayscale PNG, with an ``sBIT`` chunk when ``significant_bits``."""
  info = PngImagePlugin.PngInfo()
  if text:  # a chunk before sBIT, which the reader skips
    info.add_text("Comment", "chest X-ray" * 50)
  if significant_bits is not None:
    info.add(b"sBIT", bytes([significant_bits]))
  Image.fromarray(values.astype(np.uint16)).save(path, pnginfo=info)
  with Image.open(path) as pil:
    assert pil.mode == "I;16"
  return path


def _eight_bit_reference() -> np.ndarray:
  """8-bit pixels covering 0..255, 255 included."""
  pixels = np.random.default_rng(0).integers(0, 256, (24, 20)).astype(np.uint8)
  pixels[0, 0], pixels[0, 1] = 255, 0
  return pixels


@pytest.mark.parametrize("significant_bits", [None, 12])
@pytest.mark.parametrize("text", [False, True])
def test_twelve_bit_data_in_a_16_bit_png_reads_as_twelve_bit(tmp_path, significant_bits, text):
  pixels = _eight_bit_reference()
  twelve_bit = np.rint(pixels.astype(np.float64) * 4095 / 255)  # brightness p/255 at 12 bits
  path = _save_16_bit(tmp_path / "image.png", twelve_bit, significant_bits, text=text)
  with path.open("rb") as f:
    assert images.png_significant_bits(f) == significant_bits
  decoded = images.load(path).pixels
  np.testing.assert_array_equal(decoded, (twelve_bit / 4095).astype(np.float32))
  np.testing.assert_allclose(decoded, pixels / 255, atol=0.5 / 4095)
  np.testing.assert_array_equal(images.to_uint8(decoded), pixels)  # the 8-bit image itself


def test_sbit_settles_a_dark_twelve_bit_image(tmp_path):
  """Values below 1024: 10-bit data unless an sBIT chunk says 12."""
  values = np.arange(0, 1000, 5).reshape(10, 20)
  with_sbit = images.load(_save_16_bit(tmp_path / "sbit.png", values, 12)).pixels
  without = images.load(_save_16_bit(tmp_path / "plain.png", values)).pixels
  np.testing.assert_array_equal(with_sbit, (values / 4095).astype(np.float32))
  np.testing.assert_array_equal(without, (values / 1023).astype(np.float32))


def test_samples_scaled_to_16_bits_read_at_16_bits(tmp_path):
  """Full-range data (8-bit values times 257), with or without an sBIT chunk of 8 bits."""
  pixels = _eight_bit_reference()
  for name, bits in (("plain.png", None), ("sbit.png", 8)):
    decoded = images.load(_save_16_bit(tmp_path / name, pixels.astype(np.uint16) * 257,
                                       bits)).pixels
    np.testing.assert_allclose(decoded, pixels / 255, atol=1e-6)
    np.testing.assert_array_equal(images.to_uint8(decoded), pixels)


@pytest.mark.parametrize("peak, depth", [
    (0, 8), (255, 8), (256, 10), (1023, 10), (1024, 12), (4095, 12), (4096, 14), (16383, 14),
    (16384, 15), (32767, 15), (32768, 16), (65535, 16)])
def test_depth_without_sbit_is_the_smallest_that_holds_the_largest_value(peak, depth):
  assert images.sixteen_bit_depth(np.array([[0, peak]])) == depth


@pytest.mark.parametrize("significant_bits, peak, depth", [
    (12, 4095, 12), (12, 100, 12), (12, 4096, 16), (14, 9000, 14), (16, 200, 16), (5, 31, 5)])
def test_depth_with_sbit(significant_bits, peak, depth):
  assert images.sixteen_bit_depth(np.array([peak]), significant_bits) == depth


def test_sbit_that_cannot_apply_is_ignored(tmp_path):
  values = np.full((4, 4), 3000)
  for bits in (0, 17):  # outside 1..16
    path = _save_16_bit(tmp_path / f"sbit_{bits}.png", values, bits)
    with path.open("rb") as f:
      assert images.png_significant_bits(f) is None
    np.testing.assert_array_equal(images.load(path).pixels, np.float32(3000 / 4095))
  rgb = io.BytesIO()
  info = PngImagePlugin.PngInfo()
  info.add(b"sBIT", bytes([5, 6, 5]))
  Image.new("RGB", (4, 4)).save(rgb, format="PNG", pnginfo=info)
  assert images.png_significant_bits(io.BytesIO(rgb.getvalue())) is None
  assert images.png_significant_bits(io.BytesIO(b"GIF89a" + bytes(20))) is None


def test_eight_bit_png_is_divided_by_255(tmp_path):
  pixels = np.array([[0, 10, 100]], np.uint8)
  Image.fromarray(pixels).save(tmp_path / "dark.png")
  np.testing.assert_array_equal(images.load(tmp_path / "dark.png").pixels,
                                (pixels / np.float32(255)))
