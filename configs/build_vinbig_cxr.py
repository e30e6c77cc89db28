"""Builds the vinbig_cxr TFDS dataset from its manual download (docs/datasets.md).

    python -m otcxr_jax.main --config configs/build_vinbig_cxr.py \
        --config.data.manual_dir=/path/to/download [--config.data.config=512]

``data.manual_dir`` (the extracted download) is required; ``build_dataset`` says what it expects
when it is missing. Writes ArrayRecord files and build_report.json to
<data_dir>/vinbig_cxr/<config>/1.0.0/.
"""

from otcxr_jax import config_lib


def get_config():
  c = config_lib.base_config()
  c.mode = "build_dataset"
  c.data.name = "vinbig_cxr"
  c.data.config = "224"  # stored resolution: "224", "256", "512" (or any other integer)
  c.data.data_dir = "~/tensorflow_datasets"
  return c
