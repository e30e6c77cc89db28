"""No function of the package, the dataset builders or the benchmarks is longer than
``MAX_LINES`` lines (from its ``def`` to its last line, docstring and nested functions included):
a longer one is split into named steps."""

import ast
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]
TOPS = ("otcxr_jax", "tfds_builders", "benchmarks")
MAX_LINES = 120


def function_lengths(source: str, filename: str = "<source>") -> list[tuple[str, int, int]]:
  """``(qualified name, first line, number of lines)`` of every function in ``source``."""
  found = []

  def visit(node, prefix):
    for child in ast.iter_child_nodes(node):
      if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
        name = f"{prefix}{child.name}"
        found.append((name, child.lineno, child.end_lineno - child.lineno + 1))
        visit(child, f"{name}.")
      elif isinstance(child, ast.ClassDef):
        visit(child, f"{prefix}{child.name}.")
      else:
        visit(child, prefix)

  visit(ast.parse(source, filename), "")
  return found


def test_lengths_run_from_the_def_to_the_last_line_of_every_function():
  source = ("class A:\n"
            "  def f(self):\n"
            "    def g():\n"
            "      pass\n"
            "    return g\n"
            "\n"
            "async def h():\n"
            "  pass\n")
  assert function_lengths(source) == [("A.f", 2, 4), ("A.f.g", 3, 2), ("h", 7, 2)]


def test_no_function_is_longer_than_the_limit():
  files = [p for top in TOPS for p in sorted((REPO / top).rglob("*.py"))]
  assert files
  too_long = [f"{path.relative_to(REPO)}:{line} {name} ({length} lines)"
              for path in files for name, line, length in function_lengths(path.read_text(),
                                                                           str(path))
              if length > MAX_LINES]
  assert not too_long, (f"functions longer than {MAX_LINES} lines (split them into named "
                        "steps):\n" + "\n".join(too_long))
