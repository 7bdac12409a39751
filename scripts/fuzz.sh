#!/usr/bin/env bash
# Builds the data plane's libFuzzer target with clang (ASan + UBSan) and runs it.
# Usage: scripts/fuzz.sh [SECONDS]   (default 60; CI runs it as is)
# Build directory: $FUZZ_BUILD_DIR (default <repo>/build-fuzz). Crashes land in
# $FUZZ_BUILD_DIR/fuzz-artifacts/ and make the script fail.
set -euo pipefail

seconds="${1:-60}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
build="${FUZZ_BUILD_DIR:-$repo/build-fuzz}"
jobs="${FUZZ_BUILD_JOBS:-2}"

if ! command -v clang++ >/dev/null; then
  echo "fuzz.sh: clang++ is missing; run scripts/install-deps.sh" >&2
  exit 1
fi

CC=clang CXX=clang++ cmake -S "$repo" -B "$build" -G Ninja \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DONEDOMAIN_FUZZ=ON -DONEDOMAIN_TESTS=ON >/dev/null
ninja -C "$build" -j"$jobs" request_fuzzer

corpus="$build/fuzz-corpus/request"
artifacts="$build/fuzz-artifacts/"
mkdir -p "$corpus" "$artifacts"
# Seeds live in the repo; the grown corpus stays in the build directory.
cp -n "$repo"/tests/fuzz/corpus/request/* "$corpus"/ 2>/dev/null || true

echo "fuzz.sh: running request_fuzzer for ${seconds}s"
"$build/tests/fuzz/request_fuzzer" -max_total_time="$seconds" -max_len=16384 -timeout=10 \
  -rss_limit_mb=2048 -artifact_prefix="$artifacts" -print_final_stats=1 "$corpus"
