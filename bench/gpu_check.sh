#!/usr/bin/env bash
# The GPU checks of issue 16 in one run on a lent H100/H200 (under 10 minutes in all): build the
# CUDA module for sm_90, run the GPU tests, then the fused kernel against the torch composite and
# bench/gpu_check.py (GPU vs CPU files byte-identical, the GPU coder, end-to-end encode beside the
# GEMM). Everything lands in $OUT when set (the device tool returns it; copy it to
# bench/results/gpu_check/), else in bench/results/gpu_check/, the device's name and the date
# inside each file, written as each step ends. A step that fails is recorded in steps.txt and the
# next still runs, so one run tells what to rerun. Seven files, within what the device tool returns.
# Usage: bash bench/gpu_check.sh [ROWS]   (ROWS of the end-to-end encode, default 1048576)
set -uo pipefail
cd "$(dirname "$0")/.."
RES=${OUT:-bench/results/gpu_check}
mkdir -p "$RES"
export PYTHONPATH=python PYTHONUNBUFFERED=1
ROWS=${1:-1048576}
status() { echo "$1 rc=$2" | tee -a "$RES/steps.txt"; }
: > "$RES/steps.txt"
{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; python3 -c \
  "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; nproc; } | tee "$RES/machine.txt"

cmake -S . -B build/gpu -G Ninja -DPython_EXECUTABLE="$(which python3)" -Dpybind11_DIR="$(python3 -m pybind11 --cmakedir)" \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 > "$RES/build.txt" 2>&1 \
  && cmake --build build/gpu -j"$(nproc)" >> "$RES/build.txt" 2>&1 \
  && for f in build/gpu/_C*.so; do cp "$f" python/mdlsae/; done
rc=$?; status build $rc
[ $rc -eq 0 ] || { tail -30 "$RES/build.txt"; exit 1; }
python3 -c "import mdlsae, json; print(json.dumps(mdlsae.build_info()))" | tee -a "$RES/machine.txt"

timeout 150 python3 -m pytest -q -rs -m gpu tests/test_stream_coder.py tests/test_cuda_select_quantize.py \
  > "$RES/gpu_tests.txt" 2>&1
status gpu_tests $?; tail -5 "$RES/gpu_tests.txt"

timeout 90 python3 bench/bench_cuda_select_quantize.py --rows 65536 --d-in 768 --d-sae 24576 --k 64 \
  > "$RES/fused_vs_torch.json" 2> "$RES/gpu_check.log"
status fused_vs_torch $?; cat "$RES/fused_vs_torch.json"

timeout 240 python3 bench/gpu_check.py --rows "$ROWS" --out "$RES/gpu_check.json" >> "$RES/gpu_check.log" 2>&1
status gpu_check $?; tail -4 "$RES/gpu_check.log"
exit 0
