#!/usr/bin/env bash
# The first GPU node's check (issue #24): one script for a bare, air-gapped NVIDIA node with Python
# 3.12 and its own torch and transformers; harness's other needs travel as wheels.
#
#   bash benchmarks/gpu_check.sh --dry-run            # here: wheels, size, every step without a GPU
#   bash benchmarks/gpu_check.sh --out DIR            # on the node: stops itself inside 9 minutes
#
# On the node it installs the carried wheels (benchmarks/gpu_wheels/, built by the dry run) into
# /tmp/gpu_check_site with pip --no-index --no-deps (pip never fetches, nor touches the node's
# torch or transformers), puts that folder, the tree and plugins/ on PYTHONPATH (harness runs
# from the tree, as an editable install would), and runs benchmarks/gpu_check.py: Python 3.12
# compile/import/plan-only, the embedded default on CUDA with NVML telemetry per phase, a random
# bf16 model of Llama-3.1-8B's shape built on the GPU and loaded by the HF engine (planner's
# per-GPU figure beside NVML's peak), the served path (vLLM's GPU OpenAI server with the bundled
# model, one dataset through strategy=endpoint, metrics against the in-process vLLM engine's,
# whose start-up memory profile (weights, activation peak, CUDA graphs, KV cache in GiB and
# tokens) is recorded beside the planner's figures; skipped where the node has no vLLM), pytest -m gpu tests/gpu, then the fast CPU tests. Figures:
# DIR/gpu_check.json, plots DIR/*_telemetry.png, logs DIR/gpu_check.log and DIR/steps.log.
#
# With the device tool (run the dry run here first: it builds the wheel folder that travels):
#   carry:     ["benchmarks/gpu_wheels"]
#   command:   bash benchmarks/gpu_check.sh --out "$OUT"
#   timeout_s: 600
# Environment: GPU_CHECK_PYTHON (default: python3 on the node, .venv/bin/python for the dry run),
# GPU_CHECK_PY312 (the dry run's Python 3.12, default python3.12 or pyenv's).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SELF="$ROOT/benchmarks/gpu_check.sh"

usage() {
    cat <<'EOF'
usage: bash benchmarks/gpu_check.sh [--dry-run] [--out DIR] [--wheels DIR] [--budget S] [--only STEPS]
                                    [--smoke-cpu-tests]

  --dry-run        no GPU: build the wheel folder, size what travels (64 MiB at most), and run every
                   step that needs no GPU (Python 3.12 in a throwaway venv; torch steps on the CPU)
  --out DIR        where gpu_check.json, the telemetry plots and the logs go
                   (default: $OUT if set, else outputs/gpu_check)
  --wheels DIR     the carried wheel folder (default: benchmarks/gpu_wheels)
  --budget S       hard limit for the whole script in seconds (default 530 on the node, 900 dry)
  --only STEPS     comma-separated steps: wheels,size,closure,py312,default_cuda,llama8b,
                   served,gpu_tests,cpu_tests
  --smoke-cpu-tests
                   dry run: collect the fast CPU tests but run only a few folders of them
                   (seconds instead of about 70 s on two cores)
EOF
}

ARGS=("$@")
DRY=0
OUT_DIR="${OUT:-$ROOT/outputs/gpu_check}"
WHEELS="$ROOT/benchmarks/gpu_wheels"
BUDGET=""
PASS=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --dry-run) DRY=1; shift ;;
        --out) OUT_DIR="$2"; shift 2 ;;
        --wheels) WHEELS="$2"; shift 2 ;;
        --budget) BUDGET="$2"; shift 2 ;;
        --only) PASS+=(--only "$2"); shift 2 ;;
        --smoke-cpu-tests) PASS+=(--smoke-cpu-tests); shift ;;
        *) echo "gpu_check.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
if [[ -z "$BUDGET" ]]; then
    if [[ $DRY == 1 ]]; then BUDGET=900; else BUDGET=530; fi
fi

# One hard limit over everything below, installs included: the script re-runs itself under it.
if [[ -z "${GPU_CHECK_STARTED:-}" ]]; then
    GPU_CHECK_STARTED="$(date +%s)"
    export GPU_CHECK_STARTED
    exec timeout --kill-after=10 "$BUDGET" bash "$SELF" "${ARGS[@]}"
fi

mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
exec > >(tee -a "$OUT_DIR/gpu_check.log") 2>&1
cd "$ROOT"

left() { echo $((BUDGET - ($(date +%s) - GPU_CHECK_STARTED))); }
timed() { # timed NAME CMD...: run CMD, print how long it took
    local name="$1" t0 ms rc=0
    shift
    t0="$(date +%s%N)"
    "$@" || rc=$?
    ms=$((($(date +%s%N) - t0) / 1000000))
    printf '[%s] %s in %d.%ds\n' "$name" "$([[ $rc == 0 ]] && echo ok || echo "failed ($rc)")" \
        $((ms / 1000)) $((ms % 1000 / 100))
    return "$rc"
}

if [[ $DRY == 1 ]]; then
    PY="${GPU_CHECK_PYTHON:-$ROOT/.venv/bin/python}"
    [[ -x "$PY" ]] || PY="$(command -v python3)"
    echo "gpu_check.sh: dry run with $PY ($("$PY" -V 2>&1)); limit ${BUDGET}s"
    timed gpu_check.py "$PY" benchmarks/gpu_check.py --dry-run --out "$OUT_DIR" \
        --wheels "$WHEELS" --budget "$(($(left) - 15))" "${PASS[@]}"
    exit $?
fi

PY="${GPU_CHECK_PYTHON:-python3}"
echo "gpu_check.sh: on the node with $PY ($("$PY" -V 2>&1)); limit ${BUDGET}s"
if ! "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then
    echo "gpu_check.sh: the node's Python must be 3.12 (the wheels are built for it);" \
        "set GPU_CHECK_PYTHON, or run --dry-run on a machine without a GPU" >&2
    exit 2
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
    --format=csv,noheader || echo "gpu_check.sh: no nvidia-smi here"
shopt -s nullglob
CARRIED=("$WHEELS"/*.whl)
if [[ ${#CARRIED[@]} == 0 ]]; then
    echo "gpu_check.sh: no wheels in $WHEELS: run --dry-run here first, and carry that folder" >&2
    exit 2
fi
SITE=/tmp/gpu_check_site
rm -rf "$SITE"
timed install_wheels "$PY" -m pip install -q --disable-pip-version-check --no-index --no-deps \
    --no-compile --no-cache-dir --target "$SITE" "${CARRIED[@]}"
export PYTHONPATH="$SITE:$ROOT:$ROOT/plugins${PYTHONPATH:+:$PYTHONPATH}"
timed gpu_check.py "$PY" benchmarks/gpu_check.py --out "$OUT_DIR" --wheels "$WHEELS" \
    --budget "$(($(left) - 15))" "${PASS[@]}"
