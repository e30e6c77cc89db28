"""CSV and list-file reading with the strict column checks the builders need.

Column names and values are stripped of surrounding whitespace (SIIM's ``" EncodedPixels"``).
NIH's CSVs write bracketed names with commas and no quotes (``OriginalImage[Width,Height]``,
``Bbox [x,y,w,h]``): such a name spans several comma-separated fields, and so do its values; a
logical column's value is then those fields joined by commas (``"2682,2749"``). Columns without a
name (NIH's trailing ``,,,``, an unnamed index column) and empty trailing value fields are
ignored.
"""

from __future__ import annotations

import csv
import pathlib
import re
from typing import Collection

Row = dict[str, str]


def normalise_name(name: str) -> str:
  """A column name without surrounding whitespace or whitespace around commas."""
  return re.sub(r"\s*,\s*", ",", name.strip())


def read_table(path: pathlib.Path, columns: Collection[str]) -> list[Row]:
  """Rows of ``path`` as dicts keyed by ``columns`` (each given in ``normalise_name`` form).

  Raises:
    ValueError: the header has unexpected or missing columns (both are named), or a row has more
      non-empty fields than the header.
  """
  with open(path, newline="", encoding="utf-8-sig") as f:
    reader = csv.reader(f)
    try:
      header = next(reader)
    except StopIteration:
      raise ValueError(f"{path} is empty; expected a header with columns {sorted(columns)}")
    spans, width = _column_spans(header)
    found = [name for name, _ in spans]
    unexpected = [n for n in found if n not in columns]
    missing = [n for n in columns if n not in found]
    repeated = sorted({n for n in found if found.count(n) > 1})
    if unexpected or missing or repeated:
      raise ValueError(
          f"{path} has unexpected columns {unexpected} and lacks columns {missing}"
          f"{f' and repeats columns {repeated}' if repeated else ''}; expected exactly "
          f"{sorted(columns)}, found {found}")
    rows = []
    for line, fields in enumerate(reader, start=2):
      if not any(v.strip() for v in fields):
        continue
      if any(v.strip() for v in fields[width:]):
        raise ValueError(f"{path}:{line} has {len(fields)} fields, more than the header's {width}")
      fields = fields + [""] * (width - len(fields))
      rows.append({name: ",".join(v.strip() for v in fields[span])
                   for name, span in spans})
  return rows


def read_id_list(path: pathlib.Path) -> list[str]:
  """Non-empty stripped lines of a text file (NIH's ``train_val_list.txt``, ``test_list.txt``)."""
  with open(path, encoding="utf-8-sig") as f:
    return [line.strip() for line in f if line.strip()]


def _column_spans(header: list[str]) -> tuple[list[tuple[str, slice]], int]:
  """Named logical columns of a raw header, ``(name, slice of raw fields)`` with bracket groups
  merged, and the number of raw fields up to the last named one."""
  while header and not header[-1].strip():
    header = header[:-1]
  spans, start = [], 0
  while start < len(header):
    stop = start + 1
    if "[" in header[start] and "]" not in header[start]:
      while stop < len(header) and "]" not in header[stop - 1]:
        stop += 1
    name = normalise_name(",".join(header[start:stop]))
    if name:
      spans.append((name, slice(start, stop)))
    start = stop
  return spans, len(header)
