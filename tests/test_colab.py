"""The Colab install keeps the runtime's accelerator jax and installs only what is missing; the
notebook's set-up cell installs through it."""

from pathlib import Path

import nbformat
import pytest

from otcxr_jax import colab

REPO = Path(__file__).resolve().parents[1]
REQUIREMENTS = (REPO / "requirements.txt").read_text()
NOTEBOOK = REPO / "notebooks" / "otcxr_demo.ipynb"
PINNED = dict((n.lower(), s[2:]) for n, _, s in colab.requirements(REQUIREMENTS)
              if s.startswith("=="))


def _colab(jax_version: str) -> dict[str, str]:
  """A Colab runtime's packages: every requirement at its pin, but its own jax and TensorFlow."""
  installed = {n.lower(): PINNED.get(n.lower(), "2.0") for n, _, _ in
               colab.requirements(REQUIREMENTS)}  # unpinned ones (numpy>=2.0,<3, ...) at 2.0
  installed.update({"jax": jax_version, "jaxlib": jax_version, "tensorflow": "2.19.0"})
  for name in ("tensorflow-cpu", "tensorboard"):
    installed.pop(name)
  return {**installed, "tensorboard": "2.19.0"}


@pytest.mark.parametrize("device", ["cpu", "gpu", "tpu"])
def test_the_pinned_jax_already_there_is_kept_with_colabs_tensorflow(device):
  assert colab.pip_args(REQUIREMENTS, installed=_colab(PINNED["jax"]), device=device) == []


@pytest.mark.parametrize("device, expected", [
    ("gpu", ["jax[cuda12]==0.10.2"]),
    ("tpu", ["jax[tpu]==0.10.2"]),
    ("cpu", ["jax==0.10.2", "jaxlib==0.10.2"]),
])
def test_another_jax_is_replaced_by_the_pinned_build_for_the_accelerator(device, expected):
  assert colab.pip_args(REQUIREMENTS, installed=_colab("0.5.3"), device=device) == expected


def test_missing_and_other_versions_are_installed_nothing_else():
  installed = _colab(PINNED["jax"])
  del installed["ott-jax"]
  installed["flax"] = "0.10.0"
  args = colab.pip_args(REQUIREMENTS, installed=installed, device="gpu")
  assert args == [f"flax=={PINNED['flax']}", f"ott-jax=={PINNED['ott-jax']}"]


def test_a_bare_runtime_gets_every_requirement_with_the_accelerator_jax():
  args = colab.pip_args(REQUIREMENTS, installed={}, device="tpu")
  assert args[0] == "jax[tpu]==0.10.2" and "jaxlib==0.10.2" not in args
  assert "tensorflow-cpu==2.21.0" in args and "etils[epath]>=1.7" in args
  assert len(args) == len(colab.requirements(REQUIREMENTS)) - 1  # all but jaxlib


def test_requirements_are_parsed_with_extras_and_without_comments():
  parsed = colab.requirements("# c\njax==1.0  # pin\netils[epath]>=1.7\n-r other.txt\n\nnumpy>=2,<3\n")
  assert parsed == [("jax", "", "==1.0"), ("etils", "[epath]", ">=1.7"), ("numpy", "", ">=2,<3")]


def test_colab_install_keeps_the_runtimes_jax():
  """The set-up cell installs what ``otcxr_jax.colab.pip_args`` lists, never the requirements
  file as is (its CPU jax, jaxlib and tensorflow-cpu would replace Colab's accelerator builds)."""
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  [setup] = [c.source for c in notebook.cells if "def find_repo" in c.source]
  assert "colab.pip_args((repo / \"requirements.txt\").read_text())" in setup
  assert "-r" not in setup and "requirements.txt\")], check=True" not in setup
  intro = notebook.cells[0].source
  assert "Runtime > Change runtime type" in intro and "TPU" in intro and "GPU" in intro
