"""Bad downloads: clear errors for missing or malformed annotations; unreadable or missing images
skipped, counted and listed in the build report, never a crash mid-build."""

import dataclasses
import pathlib
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds

from builders import dicom_writer, helpers, layouts
from tfds_builders import nih_chest_xray14, rsna_pneumonia, siim_acr_pneumothorax, vinbig_cxr
from tfds_builders.cxr_base import parallel
from tfds_builders.cxr_base import (AnnotationError, BuildError, BuildReport, ManualDirError,
                                    splits)

BUILDERS = {"nih_chest_xray14": nih_chest_xray14.Builder, "vinbig_cxr": vinbig_cxr.Builder,
            "rsna_pneumonia": rsna_pneumonia.Builder,
            "siim_acr_pneumothorax": siim_acr_pneumothorax.Builder}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
  """One fixture download per dataset (and layout), generated once and copied per test."""
  cache = {}

  def get(name: str, layout: str) -> tuple[pathlib.Path, layouts.Truth]:
    if (name, layout) not in cache:
      root = tmp_path_factory.mktemp(f"{name}_{layout}") / "manual"
      cache[name, layout] = root, layouts.LAYOUTS[name](root, layout=layout)
    return cache[name, layout]
  return get


@pytest.fixture
def download(pristine, tmp_path):
  def copy(name: str, layout: str = "dicom") -> tuple[pathlib.Path, layouts.Truth]:
    layout = {"nih_chest_xray14": "kaggle"}.get(name, layout)
    source, truth = pristine(name, layout)
    manual = layouts.copy_tree(source, tmp_path / "manual")
    files = {k: manual / p.relative_to(source) for k, p in truth.files.items()}
    return manual, dataclasses.replace(truth, files=files)
  return copy


def _build(name, manual, tmp_path):
  return helpers.build(name, manual, tmp_path / "data")


def _check_points_to_instructions(error: ManualDirError, name: str) -> None:
  """One line that names where the download instructions are; the builder's own instructions
  travel with the exception."""
  assert "\n" not in str(error)
  assert f"docs/datasets.md, section `{name}`" in str(error)
  assert error.instructions == BUILDERS[name].MANUAL_DOWNLOAD_INSTRUCTIONS


def test_docs_have_the_sections_errors_point_to():
  docs = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "datasets.md").read_text()
  headings = [line for line in docs.splitlines() if line.startswith("## ")]
  for name in BUILDERS:
    assert any(line.endswith(f"(`{name}`)") for line in headings), name


@pytest.mark.parametrize("name", BUILDERS)
def test_missing_or_empty_manual_dir(name, tmp_path):
  with pytest.raises(ManualDirError) as e:
    _build(name, tmp_path / "nowhere", tmp_path)
  assert str(tmp_path / "nowhere") in str(e.value) and "does not exist" in str(e.value)
  _check_points_to_instructions(e.value, name)
  (tmp_path / "empty").mkdir()
  with pytest.raises(ManualDirError, match="is empty"):
    _build(name, tmp_path / "empty", tmp_path)


@pytest.mark.parametrize("name, file_name", [
    ("nih_chest_xray14", "BBox_List_2017.csv"), ("nih_chest_xray14", "test_list.txt"),
    ("nih_chest_xray14", "Data_Entry_2017_v2020.csv"), ("vinbig_cxr", "train.csv"),
    ("rsna_pneumonia", "stage_2_detailed_class_info.csv"),
    ("siim_acr_pneumothorax", "train-rle.csv")])
def test_missing_annotation_file(download, tmp_path, name, file_name):
  manual, _ = download(name)
  (manual / file_name).unlink()
  with pytest.raises(ManualDirError) as e:
    _build(name, manual, tmp_path)
  assert file_name in str(e.value) and str(manual) in str(e.value)
  _check_points_to_instructions(e.value, name)


def test_older_nih_data_entry_file_is_accepted_with_a_warning(download, tmp_path):
  manual, truth = download("nih_chest_xray14")
  (manual / "Data_Entry_2017_v2020.csv").rename(manual / "Data_Entry_2017.csv")
  builder = _build("nih_chest_xray14", manual, tmp_path)
  report = BuildReport.read(pathlib.Path(builder.data_dir))
  assert sum(s.images for n, s in report.splits.items() if n in helpers.MAIN_SPLITS) == len(
      truth.labels)
  assert any("Data_Entry_2017.csv" in w for w in report.warnings)


def _add_column(path: pathlib.Path) -> None:
  lines = path.read_text().splitlines()
  path.write_text("\n".join([lines[0] + ",Extra"] + [line + ",1" for line in lines[1:]]) + "\n")


@pytest.mark.parametrize("name, file_name", [
    ("nih_chest_xray14", "Data_Entry_2017_v2020.csv"), ("nih_chest_xray14", "BBox_List_2017.csv"),
    ("vinbig_cxr", "train.csv"), ("rsna_pneumonia", "stage_2_train_labels.csv"),
    ("siim_acr_pneumothorax", "train-rle.csv")])
def test_unexpected_csv_column_is_named(download, tmp_path, name, file_name):
  manual, _ = download(name)
  _add_column(manual / file_name)
  with pytest.raises(AnnotationError, match=r"unexpected columns \['Extra'\]") as e:
    _build(name, manual, tmp_path)
  # An expected failure (a BuildError) that names the file; still a ValueError.
  assert isinstance(e.value, BuildError) and isinstance(e.value, ValueError)
  assert file_name in str(e.value)


def test_duplicate_image_id_in_data_entry(download, tmp_path):
  manual, _ = download("nih_chest_xray14")
  path = manual / "Data_Entry_2017_v2020.csv"
  lines = path.read_text().splitlines()
  path.write_text("\n".join(lines + [lines[3]]) + "\n")
  stem = lines[3].split(",")[0]
  with pytest.raises(ValueError, match=f"duplicate image id '{stem}'"):
    _build("nih_chest_xray14", manual, tmp_path)


def test_duplicate_image_id_in_siim_png_index(download, tmp_path):
  manual, _ = download("siim_acr_pneumothorax", "png")
  path = manual / "stage_1_test_images.csv"
  lines = path.read_text().splitlines()
  path.write_text("\n".join(lines + [lines[1]]) + "\n")
  with pytest.raises(ValueError, match="duplicate image id"):
    _build("siim_acr_pneumothorax", manual, tmp_path)


@pytest.mark.parametrize("name", BUILDERS)
def test_one_image_in_two_files(download, tmp_path, name):
  manual, truth = download(name)
  image_id, path = next(iter(truth.files.items()))
  (manual / "copy").mkdir()
  shutil.copy(path, manual / "copy" / path.name)
  with pytest.raises(ManualDirError, match=f"(?s)more than one file, e.g. {image_id}"):
    _build(name, manual, tmp_path)


def _corrupt(truth: layouts.Truth, name: str) -> dict[str, str]:
  """Breaks a few images in different ways; returns ``{image_id: expected reason}``."""
  ids = sorted(truth.files)
  broken = {}
  garbage, truncated, odd = ids[0], ids[1], ids[2]
  truth.files[garbage].write_bytes(b"not an image at all")
  broken[garbage] = "Error"
  data = truth.files[truncated].read_bytes()
  truth.files[truncated].write_bytes(data[:len(data) // 2])
  broken[truncated] = "Error"
  if name in ("rsna_pneumonia", "vinbig_cxr"):  # a colour DICOM is not a radiograph
    dicom_writer.write_rgb(truth.files[odd])
    broken[odd] = "MONOCHROME1 or MONOCHROME2"
  return broken


@pytest.mark.parametrize("name", BUILDERS)
def test_unreadable_images_are_skipped_and_reported(download, tmp_path, capsys, name):
  manual, truth = download(name)
  broken = _corrupt(truth, name)
  builder = _build(name, manual, tmp_path)
  data = helpers.read_all(builder)
  built = set().union(*(set(data[s]) for s in helpers.MAIN_SPLITS))
  assert built == set(truth.labels) - set(broken)
  report = BuildReport.read(pathlib.Path(builder.data_dir))
  assert [s["image_id"] for s in report.skipped] == sorted(broken)
  for entry in report.skipped:
    assert broken[entry["image_id"]] in entry["reason"]
    assert entry["path"] == str(truth.files[entry["image_id"]])
  assert sum(report.splits[s].skipped for s in helpers.MAIN_SPLITS) == len(broken)
  assert builder.info.metadata["build_report"]["skipped"] == len(broken)
  err = capsys.readouterr().err
  assert f"{len(broken)} unreadable images skipped" in err
  assert all(str(truth.files[i]) in err for i in broken)


def _split_ids(manual: pathlib.Path, truth: layouts.Truth, split: str) -> list[str]:
  """The image ids the seeded split puts into ``split`` (RSNA: one image per patient)."""
  patients = splits.group_by_patient({i: truth.patient[i] for i in truth.files})
  return splits.split_patients(patients, splits.RANDOM_SPLIT)[split]


def test_split_without_a_readable_image_fails_with_its_report(download, tmp_path, pristine):
  manual, truth = download("rsna_pneumonia")
  validation = _split_ids(manual, truth, "validation")
  for image_id in validation:
    truth.files[image_id].write_bytes(b"not a dicom")
  with pytest.raises(BuildError) as e:
    _build("rsna_pneumonia", manual, tmp_path)
  config_dir = tmp_path / "data" / "rsna_pneumonia" / "32"
  report_path = config_dir / "1.0.0.failed" / "build_report.json"
  message = str(e.value)
  assert "\n" not in message and "validation split" in message and str(report_path) in message
  assert str(truth.files[validation[0]]) in message
  assert not (config_dir / "1.0.0").exists()  # nothing TFDS would take for a built dataset
  report = BuildReport.read(report_path.parent)
  assert [s["image_id"] for s in report.skipped] == sorted(validation)
  assert all(s["path"] == str(truth.files[s["image_id"]]) and "InvalidDicomError" in s["reason"]
             for s in report.skipped)
  assert report.error == message
  assert report.splits["validation"].images == 0
  assert report.splits["validation"].skipped == len(validation)
  assert report.splits["train"].images > 0  # the splits read before it are counted
  # Mended, the download builds; the failed attempt's report goes away.
  source, _ = pristine("rsna_pneumonia", "dicom")
  for image_id in validation:
    shutil.copy(source / truth.files[image_id].relative_to(manual), truth.files[image_id])
  builder = _build("rsna_pneumonia", manual, tmp_path)
  assert BuildReport.read(pathlib.Path(builder.data_dir)).error is None
  assert not report_path.parent.exists()


@pytest.mark.parametrize("layout", ["dicom", "png_resized"])
def test_boxes_beyond_the_image_are_counted(download, tmp_path, capsys, layout):
  manual, truth = download("vinbig_cxr", layout)
  path = manual / "train.csv"
  lines = path.read_text().splitlines()
  row = next(i for i, line in enumerate(lines[1:], start=1) if ",No finding," not in line)
  fields = lines[row].split(",")
  image_id = fields[0]
  height, width = truth.original_size[image_id]
  fields[6] = str(width + 40)  # x_max 40 pixels right of the image
  lines[row] = ",".join(fields)
  path.write_text("\n".join(lines) + "\n")
  builder = _build("vinbig_cxr", manual, tmp_path)
  report = BuildReport.read(pathlib.Path(builder.data_dir))
  assert [(o["image_id"], o["boxes"], o["image_size"]) for o in report.boxes_outside] == [
      (image_id, 1, [height, width])]
  assert report.boxes_outside[0]["path"] == str(truth.files[image_id])
  assert report.boxes_outside[0]["extent"][3] == width + 40
  assert sum(report.splits[s].boxes_outside for s in helpers.MAIN_SPLITS) == 1
  assert builder.info.metadata["build_report"]["boxes_outside"] >= 1
  data = helpers.read_all(builder)
  example = next(d[image_id] for s, d in data.items() if s in helpers.MAIN_SPLITS and image_id in d)
  assert example["boxes"].max() == 1.0  # stored clipped to the image
  err = capsys.readouterr().err
  assert "1 images have boxes beyond the image" in err and str(truth.files[image_id]) in err


def test_invalid_rle_row_skips_its_image(download, tmp_path):
  manual, truth = download("siim_acr_pneumothorax")
  path = manual / "train-rle.csv"
  lines = path.read_text().splitlines()
  image_id = lines[1].split(",")[0]
  lines[1] = f"{image_id},5 2000000"  # a run past the 1024 x 1024 image
  path.write_text("\n".join(lines) + "\n")
  builder = _build("siim_acr_pneumothorax", manual, tmp_path)
  report = BuildReport.read(pathlib.Path(builder.data_dir))
  assert [(s["image_id"], "past the" in s["reason"]) for s in report.skipped] == [(image_id, True)]


@pytest.mark.parametrize("name", BUILDERS)
def test_missing_images_are_listed(download, tmp_path, capsys, name):
  manual, truth = download(name)
  gone = sorted(truth.files)[:2]
  for image_id in gone:
    truth.files[image_id].unlink()
  builder = _build(name, manual, tmp_path)
  report = BuildReport.read(pathlib.Path(builder.data_dir))
  assert report.missing == gone
  data = helpers.read_all(builder)
  assert not set(gone) & set().union(*(set(d) for d in data.values()))
  assert "2 annotated images are not below" in capsys.readouterr().err


def test_no_image_found_is_an_error(download, tmp_path):
  manual, _ = download("rsna_pneumonia")
  shutil.rmtree(manual / "stage_2_train_images")
  shutil.rmtree(manual / "stage_2_test_images")
  with pytest.raises(ManualDirError, match="none of the 24 annotated images was found"):
    _build("rsna_pneumonia", manual, tmp_path)


def test_resized_vinbig_pngs_need_the_size_table(download, tmp_path):
  manual, _ = download("vinbig_cxr", "png_resized")
  (manual / "train_meta.csv").unlink()
  with pytest.raises(ManualDirError, match="(?s)were resized.*image_id, dim0, dim1"):
    _build("vinbig_cxr", manual, tmp_path)


def test_vinbig_class_id_and_name_must_agree(download, tmp_path):
  manual, _ = download("vinbig_cxr")
  path = manual / "train.csv"
  path.write_text(path.read_text().replace(",No finding,14,", ",No finding,3,", 1))
  with pytest.raises(ValueError, match="class_id 3 with class_name"):
    _build("vinbig_cxr", manual, tmp_path)


def test_siim_without_either_annotation_layout(download, tmp_path):
  manual, _ = download("siim_acr_pneumothorax")
  (manual / "train-rle.csv").unlink()
  with pytest.raises(ManualDirError, match="train-rle.csv.*new_filename, ImageId, has_pneumo"):
    _build("siim_acr_pneumothorax", manual, tmp_path)


def test_nih_unknown_finding_and_inconsistent_lists(download, tmp_path):
  manual, truth = download("nih_chest_xray14")
  entry = manual / "Data_Entry_2017_v2020.csv"
  original = entry.read_text()
  entry.write_text(original.replace("No Finding", "Nothing", 1))
  with pytest.raises(ValueError, match=r"unknown finding\(s\) \['Nothing'\]"):
    _build("nih_chest_xray14", manual, tmp_path)
  entry.write_text(original)
  with open(manual / "train_val_list.txt", "a") as f:
    f.write(f"{truth.test_ids[0]}.png\n")
  with pytest.raises(ValueError, match="in both train_val_list.txt and test_list.txt"):
    _build("nih_chest_xray14", manual, tmp_path)


def test_rsna_target_must_match_the_class(download, tmp_path):
  manual, _ = download("rsna_pneumonia")
  path = manual / "stage_2_detailed_class_info.csv"
  path.write_text(path.read_text().replace(",Normal\n", ",Lung Opacity\n", 1))
  with pytest.raises(ValueError, match="Target and class disagreeing"):
    _build("rsna_pneumonia", manual, tmp_path)


def test_masks_stay_within_images(download, tmp_path):
  manual, truth = download("siim_acr_pneumothorax", "png")
  image_id = next(i for i, m in truth.masks.items() if m.any())
  mask_path = manual / "png_masks" / truth.files[image_id].name
  layouts.save_png(mask_path, np.zeros((512, 512), np.uint8))  # not the 1024 grid
  builder = _build("siim_acr_pneumothorax", manual, tmp_path)
  report = BuildReport.read(pathlib.Path(builder.data_dir))
  assert [s["image_id"] for s in report.skipped] == [image_id]
  assert "mask of shape (512, 512)" in report.skipped[0]["reason"]


def test_worker_processes_write_the_same_files_and_report(download, tmp_path, monkeypatch):
  """Decoding in two spawned worker processes (``processes=2``) gives the files and the build
  report of decoding in this one, unreadable images included."""
  manual, truth = download("siim_acr_pneumothorax")
  broken = _corrupt(truth, "siim_acr_pneumothorax")
  monkeypatch.setattr(parallel, "MIN_RECORDS", 1)  # the fixture's few images go to the workers
  built = {}
  for processes in (1, 2):
    data_dir = tmp_path / f"data_{processes}"
    builder = siim_acr_pneumothorax.Builder(
        config=siim_acr_pneumothorax.Builder.config_for(helpers.RESOLUTION),
        data_dir=str(data_dir), processes=processes)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
    path = pathlib.Path(builder.data_dir)
    built[processes] = ({p.name: p.read_bytes() for p in path.glob("*.array_record-*")},
                        BuildReport.read(path))
  (files_1, report_1), (files_2, report_2) = built[1], built[2]
  assert len(files_1) == 5 and files_1 == files_2
  assert report_1 == report_2
  assert [s["image_id"] for s in report_2.skipped] == sorted(broken)
