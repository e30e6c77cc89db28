"""Writes small DICOM radiographs for tests: native, JPEG baseline, JPEG lossless, JPEG 2000."""

from __future__ import annotations

import io
import pathlib
from typing import Any, Literal

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (CTImageStorage, ComputedRadiographyImageStorage, ExplicitVRLittleEndian,
                         JPEG2000Lossless, JPEGBaseline8Bit, JPEGLosslessSV1, generate_uid)

from builders import jpeg_lossless

Compression = Literal["none", "jpeg_baseline", "jpeg_lossless", "jpeg2000"]


def make_dataset(
    pixels: np.ndarray, *, bits_stored: int, photometric: str = "MONOCHROME2",
    signed: bool = False, patient_id: str = "", view_position: str = "",
    sop_instance_uid: str | None = None, **attributes: Any
) -> pydicom.Dataset:
  """A native (uncompressed) single-frame grayscale dataset holding ``pixels``.

  ``pixels`` is stored as is (no masking to ``bits_stored``); ``attributes`` are extra keywords
  (e.g. ``WindowCenter=..., RescaleSlope=...``).
  """
  rows, columns = pixels.shape
  bits_allocated = 8 if bits_stored <= 8 else 16
  dtype = {(8, False): np.uint8, (8, True): np.int8, (16, False): np.uint16,
           (16, True): np.int16}[(bits_allocated, signed)]
  meta = FileMetaDataset()
  meta.MediaStorageSOPClassUID = ComputedRadiographyImageStorage
  meta.MediaStorageSOPInstanceUID = sop_instance_uid or generate_uid()
  meta.TransferSyntaxUID = ExplicitVRLittleEndian
  ds = pydicom.Dataset()
  ds.file_meta = meta
  ds.SOPClassUID = meta.MediaStorageSOPClassUID
  ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
  ds.StudyInstanceUID = generate_uid()
  ds.SeriesInstanceUID = generate_uid()
  ds.Modality = "CR"
  ds.PatientID = patient_id
  ds.ViewPosition = view_position
  ds.Rows, ds.Columns = rows, columns
  ds.SamplesPerPixel = 1
  ds.PhotometricInterpretation = photometric
  ds.BitsAllocated = bits_allocated
  ds.BitsStored = bits_stored
  ds.HighBit = bits_stored - 1
  ds.PixelRepresentation = int(signed)
  for keyword, value in attributes.items():
    setattr(ds, keyword, value)
  ds.PixelData = np.ascontiguousarray(pixels.astype(dtype)).tobytes()
  return ds


def compress(ds: pydicom.Dataset, compression: Compression) -> pydicom.Dataset:
  """Re-encodes ``ds``'s pixel data in place with the given transfer syntax; returns ``ds``."""
  if compression == "none":
    return ds
  pixels = np.frombuffer(ds.PixelData, np.uint8 if ds.BitsAllocated == 8 else np.uint16)
  pixels = pixels.reshape(ds.Rows, ds.Columns)
  if compression == "jpeg2000":
    ds.compress(JPEG2000Lossless, pixels, generate_instance_uid=False)
    return ds
  if compression == "jpeg_baseline":
    if ds.BitsStored != 8:
      raise ValueError("JPEG baseline holds 8-bit samples")
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), "L").save(buffer, "JPEG", quality=90)
    frame, syntax = buffer.getvalue(), JPEGBaseline8Bit
  elif compression == "jpeg_lossless":
    frame, syntax = jpeg_lossless.encode(pixels, ds.BitsStored), JPEGLosslessSV1
  else:
    raise ValueError(f"unknown compression {compression!r}")
  ds.file_meta.TransferSyntaxUID = syntax
  ds.PixelData = encapsulate([frame])
  ds["PixelData"].VR = "OB"
  ds["PixelData"].is_undefined_length = True
  return ds


def write(ds: pydicom.Dataset, path: pathlib.Path) -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  ds.save_as(path, enforce_file_format=True)
  return path


def write_radiograph(
    path: pathlib.Path, pixels: np.ndarray, *, bits_stored: int = 8,
    photometric: str = "MONOCHROME2", compression: Compression = "none", **kwargs: Any
) -> pathlib.Path:
  """``make_dataset`` + ``compress`` + ``write`` in one call."""
  ds = make_dataset(pixels, bits_stored=bits_stored, photometric=photometric, **kwargs)
  return write(compress(ds, compression), path)


def write_rgb(path: pathlib.Path, size: int = 8) -> pathlib.Path:
  """A colour (RGB) secondary capture, which a radiograph reader must refuse."""
  ds = make_dataset(np.zeros((size, size), np.uint8), bits_stored=8)
  ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = CTImageStorage
  ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
  ds.PixelData = np.zeros((size, size, 3), np.uint8).tobytes()
  return write(ds, path)
