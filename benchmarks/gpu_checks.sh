#!/usr/bin/env bash
# The measurements that need a GPU, one stage at a time, results under OUTDIR:
#
#   bash benchmarks/gpu_checks.sh STAGE OUTDIR [--config.FIELD=VALUE ...]
#
#   compare   JAX against PyTorch on the card (benchmarks/compare_pytorch.py): the whole OTCXR
#             step, then the encoder step, ResNet-50 at 224x224, bfloat16 (PyTorch: channels-last
#             + autocast) and float32 (both sides TF32), with model FLOP utilisation. Batch
#             COMPARE_BATCH, by default 256 (the paper's scale) on a card of at least 120 GiB and
#             128 on a smaller one: both frameworks hold their step's memory on the one card
#             (about 85 GB at batch 256 in float32)
#   runtime   OTCXR against VICReg at the paper's scale in bfloat16 (benchmarks/method_runtime.py)
#   pipeline  grain reading synthetic_cxr 224x224 ArrayRecord files against the OTCXR step's rate
#             measured by `compare` (benchmarks/input_pipeline.py)
#   benchmark the synthetic benchmark at its GPU scale (configs/benchmark_synthetic.py:gpu) in
#             OUTDIR/benchmark_gpu, the runs of BENCHMARK_RUNS (default: the six methods) for
#             BENCHMARK_SEEDS seeds (default 1), evaluations of BENCHMARK_EVALUATIONS (default: the
#             linear probes of the pooled features and of the dense map); then
#             OUTDIR/benchmark_gpu.tgz holds its results without checkpoints.
#             A run or evaluation whose metrics.json is there is skipped: unpack an earlier
#             archive into OUTDIR/benchmark_gpu to go on from it.
#
# Run from the repository root with a Python that has the project's requirements, jax with CUDA
# and torch (PYTHON, default python3). PyTorch and JAX share the card, so JAX does not preallocate.
set -euo pipefail
usage="usage: gpu_checks.sh compare|runtime|pipeline|benchmark OUTDIR"
stage=${1:?$usage}
out=${2:?$usage}
shift 2  # what follows OUTDIR goes to the benchmark stage's command (--config.FIELD=VALUE ...)
py=${PYTHON:-python3}
mkdir -p "$out"
export XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
case "$stage" in
  compare)
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv \
      | tee "$out/gpu.txt"
    mib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -n 1)
    batch=${COMPARE_BATCH:-$(( ${mib%%.*} >= 120 * 1024 ? 256 : 128 ))}
    echo "batch $batch (card memory $mib MiB)" | tee -a "$out/gpu.txt"
    for step in otcxr encoder; do
      "$py" benchmarks/compare_pytorch.py --setting resnet50_224 --batch "$batch" --step "$step" \
        --precision bfloat16,float32 --tf32 --rounds 3 --steps 5 --warmup 2 \
        --json "$out/compare_resnet50_224_$step.json" | tee "$out/compare_resnet50_224_$step.txt"
    done ;;
  runtime)
    "$py" benchmarks/method_runtime.py --config configs/pretrain_nih.py --workdir "$out/runtime_bf16" \
      --runs otcxr,vicreg --config.train.compute_dtype=bfloat16 ;;
  pipeline)
    rate=$("$py" -c "import json, sys; cases = json.load(open(sys.argv[1]))['cases']; \
print(next(c['jax_images_per_s'] for c in cases if c['precision'] == 'bfloat16'))" \
      "$out/compare_resnet50_224_otcxr.json")
    "$py" benchmarks/input_pipeline.py --data-dir /tmp/tfds --resolution 224 --patients 1000 \
      --batch 256 --threads 1,4,8,16 --batches 20 --step-images-per-second "$rate" \
      --json "$out/input_pipeline_224.json" | tee "$out/input_pipeline_224.txt" ;;
  benchmark)
    runs=${BENCHMARK_RUNS:-"('otcxr','vicreg','simclr','byol','barlow_twins','vicregl')"}
    "$py" benchmarks/benchmark_synthetic.py --config configs/benchmark_synthetic.py:gpu \
      --workdir "$out/benchmark_gpu" --config.data.data_dir="${TFDS_DATA_DIR:-/tmp/tfds}" \
      "--config.benchmark.runs=$runs" --config.benchmark.seeds="${BENCHMARK_SEEDS:-1}" \
      "--config.benchmark.references=('random_init','raw_pixels')" \
      "--config.benchmark.evaluations=${BENCHMARK_EVALUATIONS:-('linear_probe','linear_probe_map')}" "$@" \
      || status=$?
    tar czf "$out/benchmark_gpu.tgz" -C "$out" --exclude=checkpoints --exclude=jax_cache benchmark_gpu
    exit "${status:-0}" ;;
  *) echo "unknown stage $stage (compare, runtime, pipeline, benchmark)" >&2; exit 2 ;;
esac
