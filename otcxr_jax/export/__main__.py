"""``python -m otcxr_jax.export --workdir <run> --format safetensors|onnx --out <file>``."""

from __future__ import annotations

import argparse
import sys

from otcxr_jax.export import workdir as workdir_lib


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m otcxr_jax.export",
      description="Export the model of a pretraining run (encoder) or of a fine-tuning run "
                  "(encoder + linear head) for PyTorch (safetensors) or ONNX runtimes.")
  parser.add_argument("--workdir", required=True, help="the run's workdir (local or gs://...)")
  parser.add_argument("--format", required=True, choices=workdir_lib.FORMATS)
  parser.add_argument("--out", required=True, help="the file to write (local or gs://...)")
  args = parser.parse_args(argv)
  try:
    path = workdir_lib.export(args.workdir, args.format, args.out)
  except (FileNotFoundError, ValueError) as e:
    print(f"export failed: {e}", file=sys.stderr)
    return 2
  print(f"wrote {path}", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
