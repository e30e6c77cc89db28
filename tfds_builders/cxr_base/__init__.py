"""What the real chest X-ray builders share: manual-directory discovery, CSV reading, image
decoding and resizing, PNG encoding, patient-disjoint splits and label fractions, build reports,
and the expected build failures (``BuildError`` and its subclasses)."""

from tfds_builders.cxr_base.builder import (RESOLUTIONS, Annotations, CxrBuilder, Record,
                                            ResolutionConfig, boxes_outside, multi_hot,
                                            normalise_boxes)
from tfds_builders.cxr_base.errors import AnnotationError, BuildError, OptionError
from tfds_builders.cxr_base.manual_dir import FileIndex, ManualDirError, check_manual_dir
from tfds_builders.cxr_base.report import BuildReport, SplitCounts
from tfds_builders.cxr_base.splits import (LABEL_FRACTIONS, RANDOM_SPLIT, SEED,
                                           fraction_split_name, label_fractions, split_patients)
from tfds_builders.cxr_base.tables import read_id_list, read_table

__all__ = [
    "RESOLUTIONS", "Annotations", "CxrBuilder", "Record", "ResolutionConfig", "boxes_outside",
    "multi_hot", "normalise_boxes", "AnnotationError", "BuildError", "FileIndex",
    "ManualDirError", "OptionError", "check_manual_dir", "BuildReport",
    "SplitCounts", "LABEL_FRACTIONS", "RANDOM_SPLIT", "SEED", "fraction_split_name",
    "label_fractions", "split_patients", "read_id_list", "read_table",
]
