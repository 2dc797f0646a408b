#!/usr/bin/env bash
# The GPU check (issue 21): dvc.yaml's stage commands in order, twice, with device: cuda, on the real MNIST files;
# reports same bits run to run, accuracy and target against the committed CPU results, wall time per stage and a
# training step's time on the GPU against the CPU's (bench/gpu_check.py). Needs no dvc and no network there.
#
#   bench/gpu_check.sh prepare           # here, after `make repro`: .gpu/ = MNIST gzipped + the tqdm wheel (~12 MB)
#   bench/gpu_check.sh run [cuda|cpu]    # on the GPU machine (device tool: carry [".gpu"]); `cpu`: the dry run
#
# Extra arguments go to bench/gpu_check.py (`--set key=value`, `--out DIR`; default out: $OUT, else .gpu/out).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python3 || command -v python)}
case "${1:-}" in
  prepare) exec "${PYTHON:-.venv/bin/python}" bench/gpu_check.py prepare .gpu ;;
  run) shift; device=cuda
       case "${1:-}" in cuda|cpu|mps) device=$1; shift ;; esac
       exec "$PY" bench/gpu_check.py run .gpu --device "$device" --out "${OUT:-.gpu/out}" "$@" ;;
  *) echo "usage: bench/gpu_check.sh prepare | run [cuda|cpu] [--set key=value ...]" >&2; exit 2 ;;
esac
