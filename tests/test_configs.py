"""Every experiment file in configs/, with every argument of its family (``VARIANTS``), builds its
config and passes the run's validation (``otcxr_jax.modes.validate``: the mode, the shared
sections, the mode's own section), after an evaluation has taken the network of the run it names
(``modes.resolve``; that run's config.json is written here from configs/demo.py or
configs/pretrain_nih.py). Evaluation configs state no network of their own, config files restate
no default, and each variant has its own default workdir."""

import ast
import importlib.util
import json
import pathlib

import pytest

from otcxr_jax import config_lib, main, modes
from otcxr_jax.modes import network

REPO = pathlib.Path(__file__).resolve().parents[1]
FILES = sorted(p for p in (REPO / "configs").glob("*.py") if "def get_config" in p.read_text())
# Files that build on another experiment's config, so that a value equal to a default may be a
# change (the benchmark starts from the demo and sets some of its fields back).
BUILDS_ON_ANOTHER = ("benchmark_synthetic",)


def _module(path: pathlib.Path):
  spec = importlib.util.spec_from_file_location(f"configs.{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _variants():
  return [(path, arg) for path in FILES for arg in getattr(_module(path), "VARIANTS", (None,))]


VARIANTS = _variants()


def _id(path, arg):
  return path.stem + (f":{arg}" if arg else "")


@pytest.fixture(scope="module")
def pretraining_runs(tmp_path_factory):
  """A directory holding the config.json of the runs the evaluation configs name
  (``workdirs/demo``, ``workdirs/pretrain_nih``)."""
  root = tmp_path_factory.mktemp("configs")
  for name in ("demo", "pretrain_nih"):
    (root / "workdirs" / name).mkdir(parents=True)
    config = _module(REPO / "configs" / f"{name}.py").get_config()
    (root / "workdirs" / name / "config.json").write_text(config.to_json_best_effort())
  return root


def test_every_config_file_is_found():
  names = {p.stem for p in FILES}
  assert {"demo", "pretrain_nih", "linear_probe", "finetune", "localize", "segment", "knn",
          "build"} <= names
  assert "common" not in names  # what the files share, not an experiment
  assert len(VARIANTS) >= 25


@pytest.mark.parametrize("path,arg", VARIANTS, ids=[_id(*v) for v in VARIANTS])
def test_config_validates(path, arg, pretraining_runs, monkeypatch):
  monkeypatch.chdir(pretraining_runs)  # the named runs' relative paths
  config = _module(path).get_config(arg) if arg else _module(path).get_config()
  assert config.mode in modes.MODES, path.name
  resolved = modes.resolve(config, pretraining_runs / "workdirs" / "eval")
  modes.validate(resolved)
  named = network.named_run(config, pretraining_runs / "workdirs" / "eval")
  if named is not None:
    # An evaluation names its run, not the network: the run's config.json gives it.
    defaults = config_lib.base_config()
    for section in ("model", "objective"):
      assert config[section].to_dict() == defaults[section].to_dict(), (path.name, section)
    assert config.method == defaults.method
    run = json.loads((pretraining_runs / named / "config.json").read_text())
    assert json.loads(resolved.to_json_best_effort())["model"] == run["model"]


def test_default_workdirs_are_distinct_and_named_by_the_arguments():
  workdirs = [main.default_workdir(f"configs/{p.name}" + (f":{a}" if a else "")) for p, a in
              VARIANTS]
  assert len(set(workdirs)) == len(workdirs), workdirs
  assert main.default_workdir("configs/finetune.py:dataset=nih,fraction=1pct") == \
      "workdirs/finetune_nih_1pct"
  assert main.default_workdir("configs/finetune.py:dataset=synthetic,supervised") == \
      "workdirs/finetune_synthetic_supervised"
  assert main.default_workdir("configs/demo.py") == "workdirs/demo"


def test_the_paper_report_reads_the_default_workdirs_of_the_paper_configs():
  report = _module(REPO / "configs" / "report_paper.py").get_config()
  defaults = {main.default_workdir(f"configs/{p.name}" + (f":{a}" if a else "")) for p, a in
              VARIANTS}
  assert set(report.report.workdirs) <= defaults


@pytest.mark.parametrize("name", sorted(p.stem for p in FILES if hasattr(_module(p), "VARIANTS")))
def test_a_family_names_its_arguments(name):
  module = _module(REPO / "configs" / f"{name}.py")
  with pytest.raises(ValueError, match=rf"configs/{name}.py: argument dataset= is required"):
    module.get_config()
  with pytest.raises(ValueError, match=rf"configs/{name}.py: unknown argument 'size'"):
    module.get_config("dataset=nih,size=3")
  with pytest.raises(ValueError, match=rf"configs/{name}.py: dataset='mnist': expected one of"):
    module.get_config("dataset=mnist")


def _literal_assignments(path: pathlib.Path):
  """``(line, 'section.field', value)`` of each assignment of a literal to a config field in
  ``path`` (``c.model.width = 0.25``, or through an alias ``f = c.finetune; f.patience = 4``)."""
  aliases, found = {}, []

  def dotted(node):
    parts = []
    while isinstance(node, ast.Attribute):
      parts.append(node.attr)
      node = node.value
    if not isinstance(node, ast.Name):
      return None
    parts.append(node.id)
    parts.reverse()
    if parts[0] in aliases:
      return aliases[parts[0]] + parts[1:]
    return parts[1:] if parts[0] == "c" else None

  for node in ast.walk(ast.parse(path.read_text())):
    if not isinstance(node, ast.Assign):
      continue
    for target in node.targets:
      targets, values = [target], [node.value]
      if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
        targets, values = target.elts, node.value.elts
      for t, v in zip(targets, values):
        if isinstance(t, ast.Name) and isinstance(v, ast.Attribute) and dotted(v):
          aliases[t.id] = dotted(v)
          continue
        field = dotted(t)
        try:
          value = ast.literal_eval(v)
        except ValueError:
          continue
        if field:
          found.append((node.lineno, ".".join(field), value))
  return found


@pytest.mark.parametrize("path", [p for p in FILES if p.stem not in BUILDS_ON_ANOTHER],
                         ids=lambda p: p.stem)
def test_no_config_restates_a_default(path):
  defaults = json.loads(config_lib.base_config().to_json_best_effort())
  restated = []
  for line, field, value in _literal_assignments(path):
    node = defaults
    for part in field.split("."):
      node = node.get(part, KeyError) if isinstance(node, dict) else KeyError
    if node is not KeyError and json.loads(json.dumps(value)) == node:
      restated.append(f"{path.name}:{line}: {field} = {value!r}")
  assert not restated, "assignments of config_lib's defaults:\n" + "\n".join(restated)
