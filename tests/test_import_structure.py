"""The import structure of ``otcxr_jax`` and ``tfds_builders``, read from the source with ``ast``
(function-local imports included): no module imports itself back through others, and the layers
depend one way.

Layers, from the ground up: ``objectives`` and ``models`` (arrays and networks) know nothing of
configs, data, training, evaluation, reporting or modes; ``evaluation`` (metrics, probes, kNN,
localisation) knows nothing of ``reporting`` (tables, plots, reports), which reads its results;
``tfds_builders`` (the datasets) never imports ``otcxr_jax``, which reads the datasets through
it. ``preflight`` (run on TPU workers before a
launch, possibly without the requirements) and ``colab`` (the notebook's set-up, run before they
are installed) import no other project module.

``from package import name`` counts as importing ``package.name`` where that is a module, and the
package's ``__init__.py`` otherwise.
"""

import ast
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("otcxr_jax", "tfds_builders")
# prefix of the importing module -> prefixes it must not import
FORBIDDEN = {
    "otcxr_jax.objectives": ("otcxr_jax.models", "otcxr_jax.data", "otcxr_jax.training",
                             "otcxr_jax.evaluation", "otcxr_jax.reporting", "otcxr_jax.modes",
                             "otcxr_jax.config_lib", "otcxr_jax.methods", "otcxr_jax.main",
                             "tfds_builders"),
    "otcxr_jax.models": ("otcxr_jax.objectives", "otcxr_jax.data", "otcxr_jax.training",
                         "otcxr_jax.evaluation", "otcxr_jax.reporting", "otcxr_jax.modes",
                         "otcxr_jax.config_lib", "otcxr_jax.methods", "otcxr_jax.main",
                         "tfds_builders"),
    "otcxr_jax.training": ("otcxr_jax.evaluation", "otcxr_jax.reporting", "otcxr_jax.modes",
                           "otcxr_jax.methods", "otcxr_jax.main"),
    "otcxr_jax.evaluation": ("otcxr_jax.reporting", "otcxr_jax.modes", "otcxr_jax.main"),
    "otcxr_jax.reporting": ("otcxr_jax.modes", "otcxr_jax.main"),
    "otcxr_jax.config_lib": ("otcxr_jax.methods", "otcxr_jax.modes", "otcxr_jax.evaluation",
                             "otcxr_jax.reporting", "otcxr_jax.main"),
    "otcxr_jax.methods": ("otcxr_jax.evaluation", "otcxr_jax.reporting", "otcxr_jax.modes",
                          "otcxr_jax.main"),
    "otcxr_jax.preflight": ("otcxr_jax", "tfds_builders"),
    "otcxr_jax.colab": ("otcxr_jax", "tfds_builders"),
    "tfds_builders": ("otcxr_jax",),
}


def _module_name(path: pathlib.Path) -> str:
  parts = list(path.relative_to(REPO).with_suffix("").parts)
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, pathlib.Path]:
  return {_module_name(p): p for top in PACKAGES for p in sorted((REPO / top).rglob("*.py"))}


def _imports(name: str, path: pathlib.Path, modules: dict) -> set[str]:
  """The project modules that ``name`` imports anywhere in its file."""
  package = name if path.name == "__init__.py" else name.rpartition(".")[0]

  def known(dotted: str) -> str:
    while dotted and dotted not in modules:
      dotted = dotted.rpartition(".")[0]
    return dotted

  found = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      targets = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
        base = ".".join(anchor + ([base] if base else []))
      targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                 for a in node.names]
    else:
      continue
    found |= {known(t) for t in targets if t.split(".")[0] in PACKAGES}
  return found - {"", name}


def import_graph() -> dict[str, set[str]]:
  modules = _modules()
  return {name: _imports(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """The strongly connected components of more than one module (Tarjan's algorithm)."""
  index, low, stack, on_stack, found = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(graph[v]):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        found.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return found


def _within(name: str, prefix: str) -> bool:
  return name == prefix or name.startswith(prefix + ".")


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
  """The project's import graph, parsed once for the module's tests."""
  return import_graph()


def test_the_graph_sees_function_local_imports(graph):
  assert "otcxr_jax.training.loop" in graph["otcxr_jax.modes.pretrain"]  # module level
  assert "tfds_builders.cxr_base.errors" in graph["otcxr_jax.errors"]    # inside a function
  assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle(graph):
  found = cycles(graph)
  assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layers_import_one_way(graph, layer):
  wrong = sorted(f"{name} -> {target}" for name, targets in graph.items() if _within(name, layer)
                 for target in targets for banned in FORBIDDEN[layer] if _within(target, banned))
  assert not wrong, f"{layer} imports above itself:\n" + "\n".join(wrong)
