"""DICOM radiographs to 8- or 16-bit grayscale arrays.

The canonical conversion of a projection radiograph (DICOM PS3.3 C.11, "Look Up Tables and
Presentation States"; PS3.3 C.7.6.3.1.2, "Photometric Interpretation"):

1. decode *Pixel Data*: native, or compressed (JPEG baseline, JPEG lossless, JPEG 2000, JPEG-LS,
   RLE) through pydicom's pixel-data plugins (pylibjpeg with its libjpeg and openjpeg backends);
2. the *Modality LUT*: *Rescale Slope/Intercept* or a *Modality LUT Sequence* (C.11.1);
3. the first *VOI LUT*: a *VOI LUT Sequence* if present, else the first *Window Center/Width*
   with its *VOI LUT Function* (LINEAR, LINEAR_EXACT, SIGMOID; C.11.2.1.2);
4. MONOCHROME1 (minimum value displayed white) is inverted within the output range, so that
   larger values are always brighter;
5. the output range is mapped linearly to ``[0, 2**bit_depth - 1]``.

The output range of step 5 is, with ``scaling="stored"`` (the default), the range the standard
assigns to the output of steps 2-3, derived from *Bits Stored* and *Pixel Representation* and never
from an assumed bit depth: the VOI LUT's entry range ``[0, 2**n - 1]`` (n the third value of its
*LUT Descriptor*); otherwise the Modality LUT output range, i.e. ``[0, 2**n - 1]`` for a Modality
LUT Sequence, or the stored range ``[0, 2**BitsStored - 1]`` (unsigned) or
``[-2**(BitsStored-1), 2**(BitsStored-1) - 1]`` (signed) mapped through the rescale. Windowing
outputs span this same range (C.11.2.1.2.1, as pydicom implements it). With ``scaling="minmax"``
the image's own minimum and maximum after step 4 are used instead (a per-image contrast stretch).
"""

from __future__ import annotations

import dataclasses
import os
from typing import BinaryIO, Literal

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut, apply_voi_lut

Scaling = Literal["stored", "minmax"]
_GRAYSCALE = ("MONOCHROME1", "MONOCHROME2")


@dataclasses.dataclass(frozen=True)
class DicomImage:
  """A decoded radiograph and the header fields the dataset builders use.

  Attributes:
    pixels: ``(Rows, Columns)`` array, ``uint8`` or ``uint16`` (see ``bit_depth``), larger values
      brighter whatever the photometric interpretation.
    photometric_interpretation: MONOCHROME1 or MONOCHROME2 as stored.
    bits_stored: *Bits Stored* of the file.
    patient_id: *Patient ID*, "" when absent.
    view_position: *View Position* (e.g. "PA", "AP"), "" when absent.
  """

  pixels: np.ndarray
  photometric_interpretation: str
  bits_stored: int
  patient_id: str
  view_position: str


@dataclasses.dataclass(frozen=True)
class DicomHeader:
  """Header fields read without decoding the pixel data (``read_header``)."""

  rows: int
  columns: int
  patient_id: str
  view_position: str


def read_dicom(
    source: str | os.PathLike[str] | BinaryIO, *, bit_depth: int = 8, scaling: Scaling = "stored"
) -> DicomImage:
  """Reads a single-frame grayscale DICOM file and converts it with ``to_grayscale``.

  Raises:
    pydicom.errors.InvalidDicomError: ``source`` is not a DICOM file.
    ValueError: not a single-frame MONOCHROME1/MONOCHROME2 image, or no pixel data.
    (plugin errors): the pixel data cannot be decoded.
  """
  ds = pydicom.dcmread(source)
  return DicomImage(
      pixels=to_grayscale(ds, bit_depth=bit_depth, scaling=scaling),
      photometric_interpretation=str(ds.PhotometricInterpretation),
      bits_stored=int(ds.BitsStored),
      patient_id=_text(ds, "PatientID"),
      view_position=_text(ds, "ViewPosition"),
  )


def read_header(source: str | os.PathLike[str] | BinaryIO) -> DicomHeader:
  """Reads *Rows*, *Columns*, *Patient ID* and *View Position*, stopping before the pixel data.

  Raises:
    pydicom.errors.InvalidDicomError: ``source`` is not a DICOM file.
    ValueError: *Rows* or *Columns* is missing.
  """
  ds = pydicom.dcmread(source, stop_before_pixels=True)
  if ds.get("Rows") is None or ds.get("Columns") is None:
    raise ValueError("the DICOM header has no Rows (0028,0010) or Columns (0028,0011)")
  return DicomHeader(rows=int(ds.Rows), columns=int(ds.Columns),
                     patient_id=_text(ds, "PatientID"), view_position=_text(ds, "ViewPosition"))


def to_grayscale(
    ds: pydicom.Dataset, *, bit_depth: int = 8, scaling: Scaling = "stored"
) -> np.ndarray:
  """Canonical conversion of ``ds``'s pixel data (steps 1-5 of the module docstring).

  Args:
    ds: a dataset with *Pixel Data* of one MONOCHROME1/MONOCHROME2 frame.
    bit_depth: 8 (returns ``uint8``) or 16 (returns ``uint16``).
    scaling: "stored" (standard output range) or "minmax" (the image's own range).

  Returns:
    ``(Rows, Columns)`` array in ``[0, 2**bit_depth - 1]``, larger values brighter.
  """
  if bit_depth not in (8, 16):
    raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
  if scaling not in ("stored", "minmax"):
    raise ValueError(f"scaling must be 'stored' or 'minmax', got {scaling!r}")
  _check_grayscale_single_frame(ds)
  raw = ds.pixel_array
  values = apply_modality_lut(raw, ds)
  voi = _voi_kind(ds)
  if voi == "lut" and not np.issubdtype(values.dtype, np.integer):
    values = np.rint(values).astype(np.int64)  # a VOI LUT indexes integer values
  values = np.asarray(apply_voi_lut(values, ds, index=0, prefer_lut=True), np.float64)
  lo, hi = output_range(ds)
  if ds.PhotometricInterpretation == "MONOCHROME1":
    values = lo + hi - values
  if scaling == "minmax":
    lo, hi = float(values.min()), float(values.max())
  top = 2**bit_depth - 1
  if hi <= lo:  # a constant image (minmax) or a degenerate header
    return np.zeros(values.shape, np.uint8 if bit_depth == 8 else np.uint16)
  scaled = np.rint((values - lo) * (top / (hi - lo)))
  return np.clip(scaled, 0, top).astype(np.uint8 if bit_depth == 8 else np.uint16)


def output_range(ds: pydicom.Dataset) -> tuple[float, float]:
  """Range ``(lo, hi)`` of values after the Modality and first VOI LUT (module docstring)."""
  if _voi_kind(ds) == "lut":
    return 0.0, float(2 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1)
  return modality_range(ds)


def modality_range(ds: pydicom.Dataset) -> tuple[float, float]:
  """Range ``(lo, hi)`` of the Modality LUT output, from *Bits Stored* (PS3.3 C.11.1)."""
  if ds.get("ModalityLUTSequence"):
    return 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
  bits = int(ds.BitsStored)
  if int(ds.PixelRepresentation) == 0:
    lo, hi = 0.0, float(2**bits - 1)
  else:
    lo, hi = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
  if "RescaleSlope" in ds and "RescaleIntercept" in ds:
    slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    lo, hi = sorted((lo * slope + intercept, hi * slope + intercept))
  return lo, hi


def _voi_kind(ds: pydicom.Dataset) -> Literal["lut", "window", "none"]:
  """Which VOI transform ``apply_voi_lut(..., prefer_lut=True)`` applies to ``ds``."""
  if ds.get("VOILUTSequence"):
    item = ds.VOILUTSequence[0]
    if item.get("LUTDescriptor") is not None and item.get("LUTData") is not None:
      return "lut"
  if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
    return "window"
  return "none"


def _text(ds: pydicom.Dataset, keyword: str) -> str:
  return str(ds.get(keyword, "") or "").strip()


def _check_grayscale_single_frame(ds: pydicom.Dataset) -> None:
  if "PixelData" not in ds:
    raise ValueError("the DICOM file has no Pixel Data (7FE0,0010)")
  photometric = str(ds.get("PhotometricInterpretation", ""))
  if photometric not in _GRAYSCALE:
    raise ValueError(
        f"expected a grayscale radiograph (PhotometricInterpretation MONOCHROME1 or MONOCHROME2), "
        f"got {photometric!r}")
  frames = int(ds.get("NumberOfFrames", 1) or 1)
  if frames != 1:
    raise ValueError(f"expected a single-frame image, got NumberOfFrames={frames}")
