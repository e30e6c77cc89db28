r"""How fast the pretraining input pipeline reads images, against how fast a train step eats them.

    python benchmarks/input_pipeline.py [--resolution 224] [--patients 2000] [--batch 256] \
        [--threads 1,2,4,8,16] [--batches 30] [--step-images-per-second 1826] [--json out.json]

Builds (or finds) a ``synthetic_cxr`` cohort at ``--resolution`` in ``--data-dir`` (ArrayRecord
files of PNG images, like the real datasets' builders write), then reads its training split with
pretraining's own iterator (``data.pipeline.train_iterator``: shuffled, repeated, batched, the
``image`` field kept, the records decoded by TFDS's features) for each grain reader thread count
in ``--threads`` (``data.num_threads`` of a config). Each count gets a fresh iterator, ``--warmup``
untimed batches, then ``--batches`` timed ones: images/s is the batches' images over their wall
time. With ``--step-images-per-second`` (a train step's rate, e.g. from ``method_runtime.py``) the
table also gives how many times faster the pipeline reads than the step consumes: a pipeline at
less than 1x starves the accelerator, and 2x leaves room for the host's other work.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import sys
import time
from typing import Any, Sequence

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


def build(data_dir: str, resolution: int, patients: int):
  """The training split's source of a ``resolution``^2 cohort of ``patients`` (built if absent),
  and the build's wall time in seconds (0 where it was found)."""
  from otcxr_jax.data import tfds_source  # noqa: PLC0415
  from tfds_builders.synthetic_cxr import SyntheticCxrConfig  # noqa: PLC0415

  config = SyntheticCxrConfig(name=f"{resolution}_p{patients}", resolution=resolution,
                              num_patients=patients)
  start = time.perf_counter()
  builder = tfds_source._builder("synthetic_cxr", data_dir=data_dir, config=config,
                                 builder_kwargs=None)
  was_built = builder.is_prepared()
  tfds_source.ensure_built("synthetic_cxr", data_dir=data_dir, config=config)
  seconds = 0.0 if was_built else time.perf_counter() - start
  return tfds_source.data_source("synthetic_cxr", "train", data_dir=data_dir, config=config), seconds


def read_rate(source, *, batch: int, threads: int, batches: int, warmup: int,
              prefetch: int = 4) -> dict[str, Any]:
  """Images/s of ``batches`` batches from a fresh pretraining iterator with ``threads`` readers."""
  from otcxr_jax.data import pipeline  # noqa: PLC0415

  it = pipeline.train_iterator(source, global_batch_size=batch, seed=0,
                               transform=pipeline.select_keys(["image"]),
                               num_threads=threads, prefetch=prefetch)
  for _ in range(warmup):
    images = next(it)["image"]
  start = time.perf_counter()
  for _ in range(batches):
    images = next(it)["image"]
  seconds = time.perf_counter() - start
  return {"threads": threads, "batches": batches, "seconds": seconds,
          "images_per_s": batches * batch / seconds, "shape": list(images.shape),
          "dtype": str(images.dtype)}


def format_table(result: dict[str, Any]) -> str:
  step = result.get("step_images_per_s")
  lines = [f"{'threads':>8}{'images/s':>11}" + (f"{'x step':>9}" if step else "")]
  for row in result["rows"]:
    lines.append(f"{row['threads']:>8}{row['images_per_s']:>11.0f}"
                 + (f"{row['images_per_s'] / step:>8.2f}x" if step else ""))
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data-dir", default=os.path.expanduser("~/tensorflow_datasets"))
  parser.add_argument("--resolution", type=int, default=224)
  parser.add_argument("--patients", type=int, default=2000)
  parser.add_argument("--batch", type=int, default=256)
  parser.add_argument("--threads", default="1,2,4,8,16",
                      help="comma-separated grain reader thread counts")
  parser.add_argument("--batches", type=int, default=30, help="timed batches per thread count")
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--step-images-per-second", type=float, default=None,
                      help="a train step's images/s, for the 'x step' column")
  parser.add_argument("--json", default=None, help="write the result here")
  args = parser.parse_args(argv)
  try:
    threads = [int(t) for t in args.threads.split(",") if t.strip()]
  except ValueError:
    raise SystemExit(f"--threads: expected comma-separated ints, got {args.threads!r}") from None
  if not threads or min(threads) < 0:
    raise SystemExit(f"--threads: expected ints >= 0, got {args.threads!r}")
  if args.batches < 1 or args.warmup < 0 or args.batch < 1:
    raise SystemExit("--batches and --batch must be >= 1, --warmup >= 0")

  source, build_s = build(args.data_dir, args.resolution, args.patients)
  if len(source) < args.batch:
    raise SystemExit(f"the training split has {len(source)} images, fewer than --batch "
                     f"{args.batch}: raise --patients")
  print(f"synthetic_cxr {args.resolution}x{args.resolution}, {args.patients} patients: "
        f"{len(source):,} training images" + (f", built in {build_s:.1f} s" if build_s else "")
        + f"; {os.cpu_count()} CPUs; batch {args.batch}", file=sys.stderr, flush=True)
  result: dict[str, Any] = {
      "date": datetime.datetime.now().isoformat(timespec="seconds"), "cpus": os.cpu_count(),
      "resolution": args.resolution, "patients": args.patients, "train_images": len(source),
      "build_s": build_s, "batch": args.batch, "step_images_per_s": args.step_images_per_second,
      "rows": []}
  for t in threads:
    row = read_rate(source, batch=args.batch, threads=t, batches=args.batches, warmup=args.warmup)
    result["rows"].append(row)
    print(f"  {t} threads: {row['images_per_s']:.0f} images/s", file=sys.stderr, flush=True)
  result["load_average_end"] = list(os.getloadavg())
  print(format_table(result))
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(result, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
