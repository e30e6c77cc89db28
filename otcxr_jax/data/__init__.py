"""Data: augmentations, grain pipelines, TFDS data sources (the datasets themselves, DICOM
decoding and the synthetic phantom are ``tfds_builders``')."""
