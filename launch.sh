#!/usr/bin/env bash
# OTCXR-JAX launcher.
#
# Local modes (each creates ./.venv and installs the pinned requirements on first use):
#   bash launch.sh demo  [WORKDIR] [--config.FIELD=VALUE ...]   synthetic demo -> WORKDIR/report.md
#   bash launch.sh tests [PYTEST ARGS ...]                      the test suite
#   bash launch.sh run CONFIG [WORKDIR] [--config.FIELD=VALUE ...]  any experiment config
#   bash launch.sh setup [test|tpu|cuda]                        only install (tpu/cuda: + jax[...])
#
# Cloud (add --dry-run anywhere to print the exact commands instead of running them; docs/tpu.md):
#   bash launch.sh tpu-create NAME --zone Z --type T [--version V] [--spot|--preemptible] [--queued]
#                     the runtime image follows T (v2/v3/v4: tpu-ubuntu2204-base, v5litepod (v5e):
#                     v2-alpha-tpuv5-lite, v5p: v2-alpha-tpuv5, v6e: v2-alpha-tpuv6e; --version
#                     overrides it); --queued asks through a queued resource of the same name
#   bash launch.sh tpu-install NAME --zone Z     copy the repo to every worker, `setup tpu` there
#                                                (Python 3.11 through uv where the image's is older),
#                                                then the preflight
#   bash launch.sh tpu-preflight NAME --zone Z   every worker's Python, jax version and devices
#   bash launch.sh tpu-run NAME --zone Z CONFIG GS_WORKDIR [--config.FIELD=VALUE ...]
#                                                preflight, then all workers, nohup, log in
#                                                ~/otcxr-jax/run.log
#   bash launch.sh tpu-resume NAME --zone Z CONFIG GS_WORKDIR [...]  the same: resumes the workdir
#   bash launch.sh tpu-logs NAME --zone Z        tail worker 0's run.log
#   bash launch.sh tpu-delete NAME --zone Z [--queued]
#   bash launch.sh slurm CONFIG WORKDIR [--nodes N] [--gpus-per-node G] [--config.FIELD=VALUE ...]
#                                                write WORKDIR/otcxr.sbatch, submit it with sbatch
#
# Environment: OTCXR_VENV (default .venv), PYTHON (default python3), PYTEST_WORKERS (default 2),
# OTCXR_INSTALL_PYTHON=1 (setup: fetch Python 3.11 with uv when PYTHON is older; tpu-install sets
# it), TPU_PYTHON (the workers' interpreter for tpu-install, default python3).
set -euo pipefail
cd "$(dirname "$0")"

VENV="${OTCXR_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
REMOTE_DIR="otcxr-jax"  # the repository's copy in each TPU worker's home directory
REMOTE_FILES=(launch.sh requirements.txt requirements-test.txt otcxr_jax configs tfds_builders)

die() { echo "$*" >&2; exit 2; }

MIN_PYTHON="3.11"  # jax/jaxlib 0.10.2 and the rest of requirements.txt need Python >= 3.11

make_venv() {  # creates $VENV from $PYTHON, or from uv's Python 3.11 when $PYTHON is older
  local version
  version="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" ||
    die "setup: cannot run PYTHON=$PYTHON"
  if [[ "$(printf '%s\n' "$MIN_PYTHON" "$version" | sort -V | head -n1)" == "$MIN_PYTHON" ]]; then
    echo "[launch] creating $VENV (Python $version)"
    "$PYTHON" -m venv "$VENV"
    return
  fi
  # TPU VM images (Ubuntu 22.04) ship Python 3.10: jax >= 0.7 no longer supports it. uv installs a
  # standalone CPython in the user's home (no sudo, no change to the system Python).
  [[ "${OTCXR_INSTALL_PYTHON:-0}" == 1 ]] ||
    die "setup: $PYTHON is Python $version; the requirements need >= $MIN_PYTHON. Set" \
        "PYTHON=python$MIN_PYTHON, or OTCXR_INSTALL_PYTHON=1 to install one with uv."
  local uv
  uv="$(command -v uv || true)"
  if [[ -z "$uv" ]]; then
    echo "[launch] Python $version is older than $MIN_PYTHON: installing uv (pip --user)"
    "$PYTHON" -m pip install --user --quiet uv
    uv="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("scripts", "posix_user"))')/uv"
  fi
  echo "[launch] creating $VENV with uv's Python $MIN_PYTHON (this machine has $version)"
  "$uv" python install "$MIN_PYTHON"
  "$uv" venv --seed --python "$MIN_PYTHON" "$VENV"
}

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
  [[ -x "$VENV/bin/python" ]] || make_venv
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

parse_tpu() {  # NAME --zone Z [--type T] [--version V] [--spot|--preemptible] [--queued] [ARGS ...]
  NAME="" ZONE="" TYPE="" VERSION="" SPOT=0 PREEMPTIBLE=0 QUEUED=0 ARGS=()
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --zone|--type|--version)
        [[ $# -ge 2 ]] || die "$cmd: $1 needs a value"
        case "$1" in --zone) ZONE="$2" ;; --type) TYPE="$2" ;; --version) VERSION="$2" ;; esac
        shift 2 ;;
      --zone=*) ZONE="${1#*=}"; shift ;;
      --type=*) TYPE="${1#*=}"; shift ;;
      --version=*) VERSION="${1#*=}"; shift ;;
      --spot) SPOT=1; shift ;;
      --preemptible) PREEMPTIBLE=1; shift ;;
      --queued) QUEUED=1; shift ;;
      *) if [[ -z "$NAME" ]]; then NAME="$1"; else ARGS+=("$1"); fi; shift ;;
    esac
  done
  [[ -n "$NAME" && "$NAME" != -* ]] || die "$cmd: the TPU VM name is missing; try: bash launch.sh help"
  [[ -n "$ZONE" ]] || die "$cmd: --zone is required (e.g. --zone us-central2-b)"
  local flag
  for flag in TYPE VERSION SPOT PREEMPTIBLE QUEUED; do
    case "$cmd:$flag" in tpu-create:*|tpu-delete:QUEUED) continue ;; esac
    [[ "${!flag}" == "" || "${!flag}" == 0 ]] ||
      die "$cmd: --$(echo "$flag" | tr 'A-Z' 'a-z') applies to tpu-create" \
          "$([[ $flag == QUEUED ]] && echo "and tpu-delete ")only"
  done
}

# The TPU software version (runtime image) of each accelerator type, from
# https://cloud.google.com/tpu/docs/runtimes ("PyTorch and JAX"); `tpu-create --version` overrides.
tpu_runtime() {  # tpu_runtime TYPE
  case "$1" in
    v2-*|v3-*|v4-*) echo "tpu-ubuntu2204-base" ;;
    v5litepod-*) echo "v2-alpha-tpuv5-lite" ;;  # v5e
    v5p-*) echo "v2-alpha-tpuv5" ;;
    v6e-*) echo "v2-alpha-tpuv6e" ;;  # Trillium
    *) return 1 ;;
  esac
}

no_extra_args() {
  [[ ${#ARGS[@]} -eq 0 ]] || die "$cmd: unexpected arguments: ${ARGS[*]}"
}

tpu_ssh() {  # tpu_ssh WORKER COMMAND: runs COMMAND on the TPU VM's worker(s)
  do_cmd gcloud compute tpus tpu-vm ssh "$NAME" --zone="$ZONE" --worker="$1" --command="$2"
}

preflight() {  # every worker prints its Python, jax and devices; checked here before going on
  local remote="cd $REMOTE_DIR && timeout 600 $VENV/bin/python -m otcxr_jax.preflight" out
  if (( DRY_RUN )); then
    tpu_ssh all "$remote"
    return
  fi
  out="$(tpu_ssh all "$remote")" || { printf '%s\n' "$out" >&2; die "$cmd: the preflight failed"; }
  printf '%s\n' "$out"
  printf '%s\n' "$out" | "$PYTHON" -m otcxr_jax.preflight --check --backend="${TPU_BACKEND-tpu}" ||
    die "$cmd: stopped: the workers are not ready (see above; docs/tpu.md)"
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
    [[ -n "$VERSION" ]] || VERSION="$(tpu_runtime "$TYPE")" ||
      die "tpu-create: no known runtime image for --type=$TYPE (known: v2-N, v3-N, v4-N," \
          "v5litepod-N, v5p-N, v6e-N); pass --version, see https://cloud.google.com/tpu/docs/runtimes"
    (( ! (SPOT && PREEMPTIBLE) )) || die "tpu-create: choose one of --spot and --preemptible"
    capacity=()
    (( ! SPOT )) || capacity=(--spot)
    (( ! PREEMPTIBLE )) || capacity=(--preemptible)
    if (( QUEUED )); then
      (( ! PREEMPTIBLE )) || die "tpu-create: queued resources take --spot, not --preemptible"
      do_cmd gcloud compute tpus queued-resources create "$NAME" --zone="$ZONE" --node-id="$NAME" \
        --accelerator-type="$TYPE" --runtime-version="$VERSION" "${capacity[@]+"${capacity[@]}"}"
      echo "[launch] the TPU VM $NAME exists once the queued resource is ACTIVE:" \
        "gcloud compute tpus queued-resources describe $NAME --zone=$ZONE" >&2
    else
      do_cmd gcloud compute tpus tpu-vm create "$NAME" --zone="$ZONE" --accelerator-type="$TYPE" \
        --version="$VERSION" "${capacity[@]+"${capacity[@]}"}"
    fi
    ;;
  tpu-install)
    parse_tpu "$@"
    no_extra_args
    tpu_ssh all "mkdir -p $REMOTE_DIR"
    do_cmd gcloud compute tpus tpu-vm scp --worker=all --zone="$ZONE" --recurse \
      "${REMOTE_FILES[@]}" "$NAME:$REMOTE_DIR"
    tpu_ssh all "cd $REMOTE_DIR && $(quote env PYTHON="${TPU_PYTHON:-python3}" \
      OTCXR_INSTALL_PYTHON=1 bash launch.sh setup tpu)"
    preflight
    ;;
  tpu-preflight)
    parse_tpu "$@"
    no_extra_args
    preflight
    ;;
  tpu-run|tpu-resume)
    parse_tpu "$@"
    [[ ${#ARGS[@]} -ge 2 && "${ARGS[0]}" != -* && "${ARGS[1]}" != -* ]] ||
      die "usage: bash launch.sh $cmd NAME --zone Z CONFIG GS_WORKDIR [--config.FIELD=VALUE ...]"
    preflight
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
    if (( QUEUED )); then  # --force: the queued resource and its TPU VM
      do_cmd gcloud compute tpus queued-resources delete "$NAME" --zone="$ZONE" --force --quiet
    else
      do_cmd gcloud compute tpus tpu-vm delete "$NAME" --zone="$ZONE" --quiet
    fi
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
    sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'
    ;;
  *)
    echo "unknown command '$cmd'; try: bash launch.sh help" >&2
    exit 2
    ;;
esac
