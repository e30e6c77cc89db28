"""XLA:CPU flags under which the tests compile quickly.

The tests' programs are tiny and most are compiled once or twice, so compiling dominates the
suite's time. At LLVM's optimisation level 0 and with XLA:CPU's classic (not fusion-emitter) code
generation they compile in about half the CPU time of XLA's defaults: a ResNet-50's initialisation
(33 small programs) and its gradient in 1.1 s and 2.5 s of CPU instead of 3.7 s each.
``tests/conftest.py`` adds the flags to ``XLA_FLAGS`` before JAX's CPU backend starts, so the test
processes and the commands they start compile this way; a flag already in ``XLA_FLAGS`` is kept
as given.
"""

import os

FLAGS = {"xla_backend_optimization_level": "0", "xla_cpu_use_fusion_emitters": "false"}


def add_to_environ() -> None:
  """Adds each of `FLAGS` that ``XLA_FLAGS`` does not set to ``os.environ['XLA_FLAGS']``."""
  given = os.environ.get("XLA_FLAGS", "")
  added = [f"--{flag}={value}" for flag, value in FLAGS.items() if flag not in given]
  os.environ["XLA_FLAGS"] = " ".join([given, *added]).strip()
