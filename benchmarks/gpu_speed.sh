#!/usr/bin/env bash
# The speed measurements that need a GPU, one stage at a time, results under OUTDIR:
#
#   bash benchmarks/gpu_speed.sh STAGE OUTDIR
#
#   compare   JAX against PyTorch on the card (benchmarks/compare_pytorch.py): the whole OTCXR
#             step, then the encoder step, ResNet-50 at 224x224, batch 256 (the paper's scale),
#             bfloat16 (PyTorch: channels-last + autocast) and float32 (both sides TF32), with
#             model FLOP utilisation
#   runtime   OTCXR against VICReg at the paper's scale in bfloat16 (benchmarks/method_runtime.py)
#   pipeline  grain reading synthetic_cxr 224x224 ArrayRecord files against the OTCXR step's rate
#             measured by `compare` (benchmarks/input_pipeline.py)
#
# Run from the repository root with a Python that has the project's requirements, jax with CUDA
# and torch (PYTHON, default python3). PyTorch and JAX share the card, so JAX does not preallocate.
set -euo pipefail
stage=${1:?usage: gpu_speed.sh compare|runtime|pipeline OUTDIR}
out=${2:?usage: gpu_speed.sh compare|runtime|pipeline OUTDIR}
py=${PYTHON:-python3}
mkdir -p "$out"
export XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
case "$stage" in
  compare)
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv \
      | tee "$out/gpu.txt"
    for step in otcxr encoder; do
      "$py" benchmarks/compare_pytorch.py --setting resnet50_224 --batch 256 --step "$step" \
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
  *) echo "unknown stage $stage (compare, runtime, pipeline)" >&2; exit 2 ;;
esac
