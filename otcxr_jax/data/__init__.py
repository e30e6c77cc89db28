"""Data: phantoms, augmentations, grain pipelines, DICOM decoding."""
