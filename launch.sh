#!/usr/bin/env bash
# OTCXR-JAX launcher.
#
# Local modes (each creates ./.venv and installs the pinned requirements on first use):
#   bash launch.sh demo  [WORKDIR] [--config.FIELD=VALUE ...]   synthetic demo -> WORKDIR/report.md
#   bash launch.sh tests [PYTEST ARGS ...]                      the test suite
#   bash launch.sh run CONFIG [WORKDIR] [--config.FIELD=VALUE ...]  any experiment config
#   bash launch.sh setup [test|tpu|cuda]                        only install (tpu/cuda: + jax[...])
#
# Cloud (add --dry-run anywhere to print the exact commands instead of running them):
#   bash launch.sh tpu-create NAME --zone Z --type v4-8 [--version tpu-ubuntu2204-base]
#   bash launch.sh tpu-install NAME --zone Z     copy the repo to every worker, `setup tpu` there
#   bash launch.sh tpu-run NAME --zone Z CONFIG GS_WORKDIR [--config.FIELD=VALUE ...]
#                                                all workers, nohup, log in ~/otcxr-jax/run.log
#   bash launch.sh tpu-resume NAME --zone Z CONFIG GS_WORKDIR [...]  the same: resumes the workdir
#   bash launch.sh tpu-logs NAME --zone Z        tail worker 0's run.log
#   bash launch.sh tpu-delete NAME --zone Z
#   bash launch.sh slurm CONFIG WORKDIR [--nodes N] [--gpus-per-node G] [--config.FIELD=VALUE ...]
#                                                write WORKDIR/otcxr.sbatch, submit it with sbatch
#
# Environment: OTCXR_VENV (default .venv), PYTHON (default python3), PYTEST_WORKERS (default 2).
set -euo pipefail
cd "$(dirname "$0")"

VENV="${OTCXR_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
REMOTE_DIR="otcxr-jax"  # the repository's copy in each TPU worker's home directory
REMOTE_FILES=(launch.sh requirements.txt requirements-test.txt otcxr_jax configs tfds_builders)

die() { echo "$*" >&2; exit 2; }

setup() {  # setup [main|test|tpu|cuda]
  local kind="${1:-main}" req="requirements.txt" extra="" jax_version
  jax_version="$(sed -n 's/^jax==//p' requirements.txt)"
  case "$kind" in
    main) ;;
    test) req="requirements-test.txt" ;;
    tpu) extra="jax[tpu]==$jax_version" ;;
    cuda) extra="jax[cuda12]==$jax_version" ;;
    *) die "setup: unknown kind '$kind' (expected main, test, tpu or cuda)" ;;
  esac
  if [[ ! -x "$VENV/bin/python" ]]; then
    echo "[launch] creating $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
  local stamp="$VENV/.installed-$kind" digest
  digest="$({ cat requirements.txt "$req"; printf '%s' "$extra"; } | sha256sum | cut -d' ' -f1)"
  if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$digest" ]]; then
    echo "[launch] installing $req${extra:+ and $extra} into $VENV"
    "$VENV/bin/python" -m pip install --upgrade --quiet pip
    "$VENV/bin/python" -m pip install --quiet -r "$req"
    [[ -z "$extra" ]] || "$VENV/bin/python" -m pip install --quiet "$extra"
    echo "$digest" > "$stamp"
  fi
}

quote() {  # prints its arguments as one shell command line, quoting only where needed
  local out=() a q="'"
  for a in "$@"; do
    if [[ "$a" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
      out+=("$a")
    else
      out+=("$q${a//$q/$q\\$q$q}$q")
    fi
  done
  echo "${out[*]}"
}

DRY_RUN=0
do_cmd() {  # runs a command, or prints it under --dry-run
  if (( DRY_RUN )); then quote "$@"; else "$@"; fi
}

parse_tpu() {  # NAME --zone Z [--type T] [--version V] [ARGS ...] -> NAME ZONE TYPE VERSION ARGS
  NAME="" ZONE="" TYPE="" VERSION="tpu-ubuntu2204-base" ARGS=()
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --zone|--type|--version)
        [[ $# -ge 2 ]] || die "$cmd: $1 needs a value"
        case "$1" in --zone) ZONE="$2" ;; --type) TYPE="$2" ;; --version) VERSION="$2" ;; esac
        shift 2 ;;
      --zone=*) ZONE="${1#*=}"; shift ;;
      --type=*) TYPE="${1#*=}"; shift ;;
      --version=*) VERSION="${1#*=}"; shift ;;
      *) if [[ -z "$NAME" ]]; then NAME="$1"; else ARGS+=("$1"); fi; shift ;;
    esac
  done
  [[ -n "$NAME" && "$NAME" != -* ]] || die "$cmd: the TPU VM name is missing; try: bash launch.sh help"
  [[ -n "$ZONE" ]] || die "$cmd: --zone is required (e.g. --zone us-central2-b)"
}

no_extra_args() {
  [[ ${#ARGS[@]} -eq 0 ]] || die "$cmd: unexpected arguments: ${ARGS[*]}"
}

tpu_ssh() {  # tpu_ssh WORKER COMMAND: runs COMMAND on the TPU VM's worker(s)
  do_cmd gcloud compute tpus tpu-vm ssh "$NAME" --zone="$ZONE" --worker="$1" --command="$2"
}

slurm_script() {  # slurm_script CONFIG WORKDIR NODES GPUS [OVERRIDES ...]
  local config="$1" workdir="$2" nodes="$3" gpus="$4" name
  shift 4
  name="otcxr-$(basename "${config%%:*}" .py)"
  cat <<SCRIPT
#!/bin/bash
#SBATCH --job-name=$name
#SBATCH --nodes=$nodes
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=$gpus
#SBATCH --chdir=$PWD
#SBATCH --output=$workdir/slurm-%j.out
#SBATCH --open-mode=append
#SBATCH --requeue
#SBATCH --signal=TERM@120
# SIGTERM (preemption, or 120 s before the time limit) saves a checkpoint and exits; a requeued
# or resubmitted job resumes from the workdir.
set -euo pipefail
OTCXR_VENV=$(quote "$VENV") bash launch.sh setup cuda
srun $(quote "$VENV/bin/python" -m otcxr_jax.main --config "$config" --workdir "$workdir" "$@")
SCRIPT
}

args=()
for a in "$@"; do
  if [[ "$a" == --dry-run ]]; then DRY_RUN=1; else args+=("$a"); fi
done
set -- "${args[@]+"${args[@]}"}"

cmd="${1:-help}"
shift || true
case "$cmd" in
  setup)
    setup "${1:-main}"
    ;;
  demo)
    setup main
    workdir="workdirs/demo"
    if [[ $# -gt 0 && "$1" != --* ]]; then workdir="$1"; shift; fi
    exec "$VENV/bin/python" -m otcxr_jax.main --config configs/demo.py --workdir "$workdir" "$@"
    ;;
  run)
    [[ $# -ge 1 ]] || { echo "usage: bash launch.sh run CONFIG [WORKDIR] [--config.FIELD=VALUE ...]" >&2; exit 2; }
    setup main
    config="$1"; shift
    args=(--config "$config")
    if [[ $# -gt 0 && "$1" != --* ]]; then args+=(--workdir "$1"); shift; fi
    exec "$VENV/bin/python" -m otcxr_jax.main "${args[@]}" "$@"
    ;;
  tests)
    setup test
    exec "$VENV/bin/python" -m pytest -q -n "${PYTEST_WORKERS:-2}" "$@"
    ;;
  tpu-create)
    parse_tpu "$@"
    no_extra_args
    [[ -n "$TYPE" ]] || die "tpu-create: --type is required (e.g. --type v4-8)"
    do_cmd gcloud compute tpus tpu-vm create "$NAME" --zone="$ZONE" --accelerator-type="$TYPE" \
      --version="$VERSION"
    ;;
  tpu-install)
    parse_tpu "$@"
    no_extra_args
    tpu_ssh all "mkdir -p $REMOTE_DIR"
    do_cmd gcloud compute tpus tpu-vm scp --worker=all --zone="$ZONE" --recurse \
      "${REMOTE_FILES[@]}" "$NAME:$REMOTE_DIR"
    tpu_ssh all "cd $REMOTE_DIR && bash launch.sh setup tpu"
    ;;
  tpu-run|tpu-resume)
    parse_tpu "$@"
    [[ -z "$TYPE" && ${#ARGS[@]} -ge 2 && "${ARGS[0]}" != -* && "${ARGS[1]}" != -* ]] ||
      die "usage: bash launch.sh $cmd NAME --zone Z CONFIG GS_WORKDIR [--config.FIELD=VALUE ...]"
    run="$(quote "$VENV/bin/python" -m otcxr_jax.main --config "${ARGS[0]}" \
      --workdir "${ARGS[1]}" "${ARGS[@]:2}")"
    tpu_ssh all "cd $REMOTE_DIR && nohup $run >> run.log 2>&1 < /dev/null &"
    ;;
  tpu-logs)
    parse_tpu "$@"
    no_extra_args
    tpu_ssh 0 "tail -n 100 $REMOTE_DIR/run.log"
    ;;
  tpu-delete)
    parse_tpu "$@"
    no_extra_args
    do_cmd gcloud compute tpus tpu-vm delete "$NAME" --zone="$ZONE" --quiet
    ;;
  slurm)
    nodes=1 gpus=1 rest=()
    while [[ $# -gt 0 ]]; do
      case "$1" in
        --nodes|--gpus-per-node)
          [[ $# -ge 2 ]] || die "slurm: $1 needs a value"
          if [[ "$1" == --nodes ]]; then nodes="$2"; else gpus="$2"; fi
          shift 2 ;;
        --nodes=*) nodes="${1#*=}"; shift ;;
        --gpus-per-node=*) gpus="${1#*=}"; shift ;;
        *) rest+=("$1"); shift ;;
      esac
    done
    [[ "$nodes" =~ ^[1-9][0-9]*$ ]] || die "slurm: --nodes=$nodes: expected a positive integer"
    [[ "$gpus" =~ ^[1-9][0-9]*$ ]] || die "slurm: --gpus-per-node=$gpus: expected a positive integer"
    [[ ${#rest[@]} -ge 2 && "${rest[0]}" != -* && "${rest[1]}" != -* ]] ||
      die "usage: bash launch.sh slurm CONFIG WORKDIR [--nodes N] [--gpus-per-node G] [--config.FIELD=VALUE ...]"
    script="${rest[1]}/otcxr.sbatch"
    if (( DRY_RUN )); then
      quote mkdir -p "${rest[1]}"
      echo "cat > $(quote "$script") <<'SCRIPT'"
      slurm_script "${rest[0]}" "${rest[1]}" "$nodes" "$gpus" "${rest[@]:2}"
      echo "SCRIPT"
    else
      mkdir -p "${rest[1]}"
      slurm_script "${rest[0]}" "${rest[1]}" "$nodes" "$gpus" "${rest[@]:2}" > "$script"
    fi
    do_cmd sbatch "$script"
    ;;
  help|-h|--help)
    sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
    ;;
  *)
    echo "unknown command '$cmd'; try: bash launch.sh help" >&2
    exit 2
    ;;
esac
