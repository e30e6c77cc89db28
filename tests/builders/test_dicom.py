"""DICOM decoding against the standard's formulas (PS3.3 C.11), computed here in plain numpy."""

import pathlib

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from PIL import Image

from builders import dicom_writer
from tfds_builders.cxr_base import dicom


def _ramp(bits: int, shape=(16, 24), signed: bool = False) -> np.ndarray:
  """Every corner value of the stored range plus a ramp between them."""
  lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
  values = np.linspace(lo, hi, shape[0] * shape[1]).round().astype(np.int64)
  return values.reshape(shape)


def _scale(values, lo, hi, top=255) -> np.ndarray:
  return np.rint((np.asarray(values, np.float64) - lo) / (hi - lo) * top).astype(np.int64)


@pytest.mark.parametrize("bits", [8, 10, 12, 15, 16])
def test_stored_range_comes_from_bits_stored(bits):
  pixels = _ramp(bits)
  ds = dicom_writer.make_dataset(pixels, bits_stored=bits)
  out = dicom.to_grayscale(ds)
  assert out.dtype == np.uint8
  np.testing.assert_array_equal(out, _scale(pixels, 0, 2**bits - 1))
  assert out.min() == 0 and out.max() == 255


def test_sixteen_bit_output():
  pixels = _ramp(12)
  out = dicom.to_grayscale(dicom_writer.make_dataset(pixels, bits_stored=12), bit_depth=16)
  assert out.dtype == np.uint16
  np.testing.assert_array_equal(out, _scale(pixels, 0, 4095, 65535))


def test_monochrome1_is_inverted():
  pixels = _ramp(12)
  ds = dicom_writer.make_dataset(pixels, bits_stored=12, photometric="MONOCHROME1")
  np.testing.assert_array_equal(dicom.to_grayscale(ds), _scale(4095 - pixels, 0, 4095))


def test_signed_pixels_use_the_signed_stored_range():
  pixels = _ramp(12, signed=True)
  ds = dicom_writer.make_dataset(pixels, bits_stored=12, signed=True)
  np.testing.assert_array_equal(dicom.to_grayscale(ds), _scale(pixels, -2048, 2047))


def test_rescale_maps_the_range_too():
  # A negative slope turns the stored range around: y = 4095 - x over [0, 4095].
  pixels = _ramp(12)
  ds = dicom_writer.make_dataset(pixels, bits_stored=12, RescaleSlope=-1, RescaleIntercept=4095)
  assert dicom.modality_range(ds) == (0.0, 4095.0)
  np.testing.assert_array_equal(dicom.to_grayscale(ds), _scale(4095 - pixels, 0, 4095))


def _linear_window(x, center, width, y_min, y_max):
  """PS3.3 C.11.2.1.2.1, VOI LUT Function LINEAR."""
  x = np.asarray(x, np.float64)
  y = ((x - (center - 0.5)) / (width - 1) + 0.5) * (y_max - y_min) + y_min
  y = np.where(x <= center - 0.5 - (width - 1) / 2, y_min, y)
  return np.where(x > center - 0.5 + (width - 1) / 2, y_max, y)


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_linear_window(photometric):
  pixels = _ramp(12)
  center, width = 1500.0, 1200.0
  ds = dicom_writer.make_dataset(pixels, bits_stored=12, photometric=photometric,
                                 WindowCenter=center, WindowWidth=width)
  y = _linear_window(pixels, center, width, 0, 4095)
  if photometric == "MONOCHROME1":
    y = 4095 - y
  np.testing.assert_array_equal(dicom.to_grayscale(ds), _scale(y, 0, 4095))


def test_sigmoid_window():
  pixels = _ramp(12)
  center, width = 2000.0, 800.0
  ds = dicom_writer.make_dataset(pixels, bits_stored=12, WindowCenter=center, WindowWidth=width,
                                 VOILUTFunction="SIGMOID")
  y = 4095 / (1 + np.exp(-4 * (pixels - center) / width))  # PS3.3 C.11.2.1.3.1
  np.testing.assert_array_equal(dicom.to_grayscale(ds), _scale(y, 0, 4095))


def test_first_of_several_windows_is_used():
  pixels = _ramp(12)
  ds = dicom_writer.make_dataset(pixels, bits_stored=12, WindowCenter=[1000.0, 3000.0],
                                 WindowWidth=[500.0, 100.0])
  expected = _scale(_linear_window(pixels, 1000.0, 500.0, 0, 4095), 0, 4095)
  np.testing.assert_array_equal(dicom.to_grayscale(ds), expected)


def test_voi_lut_sequence_output_range_is_the_lut_depth():
  pixels = _ramp(8)
  ds = dicom_writer.make_dataset(pixels, bits_stored=8, WindowCenter=10.0, WindowWidth=5.0)
  item = Dataset()
  item.LUTDescriptor = [256, 0, 10]
  item.LUTData = [4 * (255 - v) for v in range(256)]  # inverts, in [0, 1020] of a 10-bit range
  ds.VOILUTSequence = [item]
  assert dicom.output_range(ds) == (0.0, 1023.0)
  np.testing.assert_array_equal(dicom.to_grayscale(ds), _scale(4 * (255 - pixels), 0, 1023))


def test_minmax_scaling_stretches_the_image_range():
  pixels = np.linspace(1000, 2000, 16 * 16).round().reshape(16, 16).astype(np.int64)
  ds = dicom_writer.make_dataset(pixels, bits_stored=12)
  np.testing.assert_array_equal(dicom.to_grayscale(ds, scaling="minmax"),
                                _scale(pixels, 1000, 2000))
  constant = dicom_writer.make_dataset(np.full((4, 4), 7), bits_stored=12)
  np.testing.assert_array_equal(dicom.to_grayscale(constant, scaling="minmax"), 0)


@pytest.mark.parametrize("compression, bits", [
    ("none", 16), ("jpeg_lossless", 12), ("jpeg_lossless", 16), ("jpeg2000", 12),
    ("jpeg2000", 16), ("jpeg_lossless", 8)])
def test_lossless_transfer_syntaxes_decode_exactly(tmp_path, compression, bits):
  rng = np.random.default_rng(bits)
  pixels = rng.integers(0, 2**bits, (40, 56))
  pixels[0, :2] = 0, 2**bits - 1
  path = dicom_writer.write_radiograph(tmp_path / "x.dcm", pixels, bits_stored=bits,
                                       photometric="MONOCHROME1", compression=compression)
  image = dicom.read_dicom(path, bit_depth=16)
  np.testing.assert_array_equal(image.pixels, _scale(2**bits - 1 - pixels, 0, 2**bits - 1, 65535))
  assert (image.photometric_interpretation, image.bits_stored) == ("MONOCHROME1", bits)


def test_jpeg_baseline_decodes_like_pillow(tmp_path):
  yy, xx = np.mgrid[:64, :64]
  pixels = (40 + 2 * yy + xx).astype(np.uint8)
  path = dicom_writer.write_radiograph(tmp_path / "x.dcm", pixels, compression="jpeg_baseline")
  assert pydicom.dcmread(path).file_meta.TransferSyntaxUID.name == "JPEG Baseline (Process 1)"
  frame = next(pydicom.encaps.generate_frames(pydicom.dcmread(path).PixelData))
  (tmp_path / "frame.jpg").write_bytes(frame)
  reference = np.asarray(Image.open(tmp_path / "frame.jpg"), np.int64)
  decoded = dicom.read_dicom(path).pixels.astype(np.int64)
  assert np.abs(decoded - reference).max() <= 1  # two JPEG decoders' rounding
  assert np.abs(decoded - pixels).mean() < 1.0


def test_header_fields_and_header_only_reading(tmp_path):
  path = dicom_writer.write_radiograph(tmp_path / "x.dcm", np.zeros((30, 20), np.uint8),
                                       patient_id="P-7", view_position="AP")
  image = dicom.read_dicom(path)
  assert (image.patient_id, image.view_position, image.pixels.shape) == ("P-7", "AP", (30, 20))
  # Truncating the pixel data breaks decoding but not the header.
  data = path.read_bytes()
  path.write_bytes(data[:-300])
  assert dicom.read_header(path) == dicom.DicomHeader(30, 20, "P-7", "AP")
  with pytest.raises(Exception):
    dicom.read_dicom(path)


def test_bad_input_is_refused(tmp_path):
  with pytest.raises(ValueError, match="MONOCHROME1 or MONOCHROME2"):
    dicom.read_dicom(dicom_writer.write_rgb(tmp_path / "rgb.dcm"))
  frames = dicom_writer.make_dataset(np.zeros((8, 8)), bits_stored=8, NumberOfFrames=2)
  with pytest.raises(ValueError, match="single-frame"):
    dicom.to_grayscale(frames)
  no_pixels = dicom_writer.make_dataset(np.zeros((8, 8)), bits_stored=8)
  del no_pixels.PixelData
  with pytest.raises(ValueError, match="no Pixel Data"):
    dicom.to_grayscale(no_pixels)
  with pytest.raises(ValueError, match="bit_depth"):
    dicom.to_grayscale(dicom_writer.make_dataset(np.zeros((8, 8)), bits_stored=8), bit_depth=12)
  png = pathlib.Path(tmp_path / "x.png")
  Image.fromarray(np.zeros((8, 8), np.uint8)).save(png)
  with pytest.raises(InvalidDicomError):
    dicom.read_dicom(png)
