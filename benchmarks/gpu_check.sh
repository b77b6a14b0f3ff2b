#!/usr/bin/env bash
# The prepared GPU check (benchmarks/gpu_check.py says what it runs): under 8 minutes on one H200.
#   bash benchmarks/gpu_check.sh [--out DIR] [--dry-run]      (DIR defaults to $OUT, else ./gpu_check_out)
# Runs as it is on a machine with torch and numpy; prints as it goes and keeps the log beside
# the JSON results.  --dry-run: toy sizes on the CPU, to know it works before it meets a GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu_check_out}"
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  if [ "${args[$i]}" = "--out" ]; then out="${args[$((i + 1))]}"; fi
done
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" MPLBACKEND=Agg
python3 benchmarks/gpu_check.py --out "$out" "$@" 2>&1 | tee "$out/gpu_check.log"
exit "${PIPESTATUS[0]}"
