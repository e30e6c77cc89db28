"""The Colab demo notebook runs top to bottom (at its tiny size) and draws its figures."""

import os
import re

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                        "notebooks", "otcxr_demo.ipynb")


@pytest.mark.slow
def test_demo_notebook_runs_at_tiny_size(tmp_path, monkeypatch):
  monkeypatch.setenv("OTCXR_NOTEBOOK_TINY", "1")
  monkeypatch.setenv("OTCXR_NOTEBOOK_WORKDIR", str(tmp_path / "run"))
  monkeypatch.setenv("OTCXR_NOTEBOOK_DATA_DIR", str(tmp_path / "tfds"))
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  # Runs where Jupyter runs it, in notebooks/; everything it writes goes to tmp_path.
  NotebookClient(notebook, timeout=300, kernel_name="python3",
                 resources={"metadata": {"path": os.path.dirname(NOTEBOOK)}}).execute()

  outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
  assert not [o for o in outputs if o.output_type == "error"]
  text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
  figures = [o for o in outputs if "image/png" in o.get("data", {})]
  # Samples of the dataset, training curves, AUC bars, transport plan, CV-SIM attention.
  assert len(figures) == 5, text[-2000:]
  assert "[pretrain] step 2/2" in text
  assert re.search(r"backend cpu, \d+ device\(s\):\n  0: cpu \(cpu\)\n", text)  # its devices
  assert "OTCXR: test mean AUC" in text and "random init: test mean AUC" in text
  assert "ONNX and JAX features differ by at most" in text
  run = tmp_path / "run"
  assert (run / "checkpoints" / "pretrain" / "2").is_dir()
  assert {p.name for p in (run / "figures").iterdir()} == {
      "pretrain_curves.png", "auc_per_class.png", "transport_plan.png", "cvsim_attention.png"}
  assert (run / "encoder.safetensors").stat().st_size > 0 and (run / "encoder.onnx").exists()
