"""CSV reading (the releases' header quirks, strict columns) and finding files by name."""

import pathlib

import pytest

from tfds_builders.cxr_base import manual_dir, tables

NIH_COLUMNS = ("Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age",
               "Patient Gender", "View Position", "OriginalImage[Width,Height]",
               "OriginalImagePixelSpacing[x,y]")


def _write(path: pathlib.Path, text: str) -> pathlib.Path:
  path.write_text(text)
  return path


def test_unquoted_bracket_columns_and_trailing_commas(tmp_path):
  path = _write(tmp_path / "a.csv", (
      "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
      "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],\n"
      "00000001_000.png,Cardiomegaly,0,1,58,M,PA,2682,2749,0.143,0.143,\n"))
  (row,) = tables.read_table(path, NIH_COLUMNS)
  assert row["OriginalImage[Width,Height]"] == "2682,2749"
  assert row["OriginalImagePixelSpacing[x,y]"] == "0.143,0.143"
  assert row["View Position"] == "PA"


def test_quoted_bracket_columns_with_spaces(tmp_path):
  path = _write(tmp_path / "a.csv", (
      'Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,'
      'View Position,"OriginalImage[Width, Height]","OriginalImagePixelSpacing[x, y]"\n'
      '00000001_000.png,No Finding,0,1,58,M,PA,"2682,2749","0.143,0.143"\n'))
  (row,) = tables.read_table(path, NIH_COLUMNS)
  assert row["OriginalImage[Width,Height]"] == "2682,2749"
  assert row["Finding Labels"] == "No Finding"


def test_box_list_header_with_empty_trailing_fields(tmp_path):
  path = _write(tmp_path / "b.csv", (
      "Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
      "00013118_008.png,Atelectasis,225.08,547.02,86.78,79.19\n"
      "00014716_007.png,Infiltrate,10,20,30,40,,,\n\n"))
  rows = tables.read_table(path, ("Image Index", "Finding Label", "Bbox [x,y,w,h]"))
  assert [r["Bbox [x,y,w,h]"] for r in rows] == ["225.08,547.02,86.78,79.19", "10,20,30,40"]


def test_whitespace_is_stripped_from_names_and_values(tmp_path):
  path = _write(tmp_path / "r.csv", "ImageId, EncodedPixels\n1.2.3, -1\n 1.2.4 ,5 6\n")
  rows = tables.read_table(path, ("ImageId", "EncodedPixels"))
  assert rows == [{"ImageId": "1.2.3", "EncodedPixels": "-1"},
                  {"ImageId": "1.2.4", "EncodedPixels": "5 6"}]


def test_unexpected_and_missing_columns_are_named(tmp_path):
  path = _write(tmp_path / "t.csv", "patientId,x,y,width,height,Target,Score\n")
  with pytest.raises(ValueError, match=r"unexpected columns \['Score'\]"):
    tables.read_table(path, ("patientId", "x", "y", "width", "height", "Target"))
  path = _write(tmp_path / "t.csv", "patientId,x,y,width,Target\n")
  with pytest.raises(ValueError, match=r"lacks columns \['height'\]"):
    tables.read_table(path, ("patientId", "x", "y", "width", "height", "Target"))
  path = _write(tmp_path / "t.csv", "a,b,a\n")
  with pytest.raises(ValueError, match=r"repeats columns \['a'\]"):
    tables.read_table(path, ("a", "b"))
  with pytest.raises(ValueError, match="is empty"):
    tables.read_table(_write(tmp_path / "e.csv", ""), ("a",))


def test_unnamed_columns_are_ignored(tmp_path):
  path = _write(tmp_path / "t.csv", ",image_id,dim0,,dim1\n0,abc,3000,,2500\n")
  assert tables.read_table(path, ("image_id", "dim0", "dim1")) == [
      {"image_id": "abc", "dim0": "3000", "dim1": "2500"}]


def test_extra_non_empty_fields_are_an_error(tmp_path):
  path = _write(tmp_path / "t.csv", "a,b\n1,2\n1,2,3\n")
  with pytest.raises(ValueError, match=r"t.csv:3 has 3 fields"):
    tables.read_table(path, ("a", "b"))


def test_id_list(tmp_path):
  path = _write(tmp_path / "l.txt", "a.png\n\n b.png \n")
  assert tables.read_id_list(path) == ["a.png", "b.png"]


def _index(root):
  return manual_dir.FileIndex(root, dataset="demo", instructions="HOW TO DOWNLOAD")


def test_file_index_finds_files_anywhere_in_order_of_preference(tmp_path):
  (tmp_path / "x" / "y").mkdir(parents=True)
  _write(tmp_path / "x" / "y" / "old.csv", "")
  _write(tmp_path / "new.csv", "")
  assert _index(tmp_path).find(["new.csv", "old.csv"]) == tmp_path / "new.csv"
  assert _index(tmp_path).find(["none.csv", "old.csv"]) == tmp_path / "x" / "y" / "old.csv"
  assert _index(tmp_path).find(["none.csv"], required=False) is None
  with pytest.raises(manual_dir.ManualDirError, match="none.csv.*docs/datasets.md") as e:
    _index(tmp_path).find(["none.csv"])
  assert e.value.instructions == "HOW TO DOWNLOAD" and "\n" not in str(e.value)
  _write(tmp_path / "x" / "new.csv", "")
  with pytest.raises(manual_dir.ManualDirError, match="new.csv occurs 2 times"):
    _index(tmp_path).find(["new.csv"])


def test_file_index_images_by_stem(tmp_path):
  for rel in ["a/images/1.png", "b/images/2.JPG", "deep/1/2/3.dcm", "t/4.dicom", "notes.txt",
              "png_masks/1.png"]:
    (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
    _write(tmp_path / rel, "")
  index = _index(tmp_path)
  assert set(index.images(exclude_folder="png_masks")) == {"1", "2", "3", "4"}
  assert set(index.images(extensions=(".dcm", ".dicom"))) == {"3", "4"}
  assert index.images(folder="png_masks") == {"1": tmp_path / "png_masks" / "1.png"}
  with pytest.raises(manual_dir.ManualDirError, match="1 image ids occur in more than one"):
    index.images()


def test_csv_files_found_by_header(tmp_path):
  _write(tmp_path / "train.csv", "new_filename,ImageId,has_pneumo\n")
  _write(tmp_path / "other.csv", "new_filename,ImageId\n")
  found = _index(tmp_path).csv_files_with_columns(("new_filename", "ImageId", "has_pneumo"))
  assert found == [tmp_path / "train.csv"]


def test_check_manual_dir(tmp_path):
  with pytest.raises(manual_dir.ManualDirError) as e:
    manual_dir.check_manual_dir(tmp_path / "no", dataset="d", instructions="HOW")
  # One line naming the directory and where the instructions are; they stay on the exception.
  assert str(e.value) == (f"d: the manual directory {tmp_path / 'no'} does not exist. What to "
                          "download and where its files go: docs/datasets.md, section `d`.")
  assert e.value.instructions == "HOW" and isinstance(e.value, FileNotFoundError)
  with pytest.raises(manual_dir.ManualDirError, match="is empty"):
    manual_dir.check_manual_dir(tmp_path, dataset="d", instructions="HOW")
  with pytest.raises(manual_dir.ManualDirError, match="no manual directory"):
    manual_dir.check_manual_dir(None, dataset="d", instructions="HOW")
