#!/usr/bin/env bash
# Everything from a fresh Debian 12 machine to a finished test suite: installs the packages
# and tools the tests use, builds with -Werror, runs every test with ctest.
#   scripts/test.sh                 the whole suite (what CI runs)
#   ONEDOMAIN_SANITIZE=1 scripts/test.sh   the same under ASan + UBSan (build-asan/)
#   CTEST_ARGS="-L unit" scripts/test.sh   a subset (ctest label or -R regex)
#   FUZZ_SECONDS=0 scripts/test.sh         skip the libFuzzer runs (60 s per target by default)
set -euo pipefail
cd "$(dirname "$0")/.."

started=$(date +%s)
bash scripts/install-deps.sh
bash scripts/install-helm.sh
bash scripts/install-browser.sh

build_dir=build
cmake_args=(-G Ninja -DONEDOMAIN_WERROR=ON -DONEDOMAIN_TESTS=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo)
if [ "${ONEDOMAIN_SANITIZE:-0}" = 1 ]; then
  build_dir=build-asan
  cmake_args+=(-DONEDOMAIN_SANITIZE=ON)
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
fi
cmake -S . -B "$build_dir" "${cmake_args[@]}"
build_started=$(date +%s)
ninja -C "$build_dir" -j"$(nproc)"
echo "test.sh: build took $(( $(date +%s) - build_started ))s"

# shellcheck disable=SC2086
ctest --test-dir "$build_dir" -j"$(nproc)" --output-on-failure --timeout 600 ${CTEST_ARGS:-}
# libFuzzer targets (request reader, cookie policy), FUZZ_SECONDS each (0 skips).
if [ "${FUZZ_SECONDS:-60}" != 0 ]; then
  bash scripts/fuzz.sh "${FUZZ_SECONDS:-60}"
fi
echo "test.sh: finished in $(( $(date +%s) - started ))s"
