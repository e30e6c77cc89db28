r"""Builds a real dataset's TFDS package from its manual download (docs/datasets.md).

    python -m otcxr_jax.main --config configs/build.py:dataset=nih \
        --config.data.manual_dir=/path/to/download [--config.data.config=512]
    # dataset=nih (nih_chest_xray14) | vinbig (vinbig_cxr) | rsna (rsna_pneumonia)
    #         | siim (siim_acr_pneumothorax)

``data.manual_dir`` (the extracted download) is required; ``build_dataset`` says what it expects
when it is missing. The stored resolution ``data.config`` is 224 ("224", "256", "512" or any other
integer). Writes ArrayRecord files and build_report.json to
<data_dir>/<dataset>/<config>/1.0.0/ (``data.data_dir``, default ~/tensorflow_datasets). The
synthetic dataset needs no build: every run that reads it builds it when absent.
"""

from configs import common
from otcxr_jax import config_lib

VARIANTS = ("dataset=nih", "dataset=vinbig", "dataset=rsna", "dataset=siim")


def get_config(arg=None):
  arg = common.parse_arg(arg, "configs/build.py", dataset=("nih", "vinbig", "rsna", "siim"))
  c = config_lib.base_config()
  c.mode = "build_dataset"
  c.data.name = common.DATASETS[arg.dataset]
  c.data.config = str(common.REAL_RESOLUTION)
  return c
