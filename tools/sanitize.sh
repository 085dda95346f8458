#!/usr/bin/env bash
# Sanitizer runs of the native core (issue 17), both with gcc's runtimes:
#  1. ASan + UBSan: the CPU module _C built with -fsanitize=address,undefined into a copy of the
#     package, and the whole test suite run against it (the ASan runtime preloaded into Python;
#     leak checking off, as CPython and torch keep allocations to exit by design). Any report fails.
#  2. TSan: csrc/check/threads_check.cpp, the fused select kernel and the chunk coder with 1 and 4
#     threads, built with -fsanitize=thread (a standalone driver: CPython and torch are not TSan-built).
# Writes bench/results/sanitize.json.   tools/sanitize.sh [pytest args...]   (default: the whole suite)
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(realpath -m "${SANITIZE_WORK:-build/sanitize}")
rm -rf "$work" && mkdir -p "$work"
flags="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
cmake -S . -B "$work/build" -G Ninja -DMDLSAE_CUDA=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DPython_EXECUTABLE="$(which python3)" -Dpybind11_DIR="$(python3 -m pybind11 --cmakedir)" \
  -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined" > "$work/cmake.log"
cmake --build "$work/build" -j2 > "$work/build.log"
# the suite runs in a snapshot of the committed tree (tests that start processes use its python/)
mkdir -p "$work/repo"
git archive HEAD | tar -x -C "$work/repo"
cp "$work"/build/_C*.so "$work/repo/python/mdlsae/"
asan_log="$work/asan"
set +e
(cd "$work/repo" && LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libstdc++.so)" \
  ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:log_path=$asan_log" \
  UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$asan_log" \
  PYTHONPATH="$work/repo/python" python3 -m pytest -q -p no:cacheprovider "$@") 2>&1 | tee "$work/pytest.log" | tail -3
pytest_rc=${PIPESTATUS[0]}
set -e
reports=$(cat "$asan_log".* 2>/dev/null | grep -c "ERROR: AddressSanitizer\|runtime error:" || true)
summary=$(tail -1 "$work/pytest.log")
g++ -std=c++17 -O1 -g -fsanitize=thread -Icsrc -pthread csrc/check/threads_check.cpp csrc/cpu/*.cpp \
  csrc/codec/tables.cpp csrc/codec/chunk_codec.cpp -o "$work/threads_check"
set +e
TSAN_OPTIONS="halt_on_error=1" "$work/threads_check" > "$work/tsan.log" 2>&1
tsan_rc=$?
set -e
cat "$work/tsan.log"
tsan_reports=$(grep -c "WARNING: ThreadSanitizer" "$work/tsan.log" || true)
printf '{"date": "%s", "machine": "%s", "compiler": "%s",\n "asan_ubsan": {"pytest_exit": %d, "pytest": "%s", "reports": %d},\n "tsan": {"exit": %d, "reports": %d}}\n' \
  "$(date -u +%F)" "$(uname -nm)" "$(g++ --version | head -1)" "$pytest_rc" "$summary" "$reports" "$tsan_rc" \
  "$tsan_reports" > bench/results/sanitize.json
cat bench/results/sanitize.json
[ "$pytest_rc" -eq 0 ] && [ "$reports" -eq 0 ] && [ "$tsan_rc" -eq 0 ] && [ "$tsan_reports" -eq 0 ]
