#!/usr/bin/env bash
# Builds the data plane's libFuzzer target with clang (ASan + UBSan) and runs it.
# Usage: scripts/fuzz.sh [SECONDS]   (default 60 per target; CI runs it as is)
# Targets: request_fuzzer (request-reading path), cookie_fuzzer (cookie policy), proxy_fuzzer
# (PROXY headers, X-Forwarded-For hops); FUZZ_TARGETS=… picks.
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
targets="${FUZZ_TARGETS:-request_fuzzer cookie_fuzzer proxy_fuzzer}"
# shellcheck disable=SC2086
ninja -C "$build" -j"$jobs" $targets

artifacts="$build/fuzz-artifacts/"
mkdir -p "$artifacts"
for target in $targets; do
  name=${target%_fuzzer}
  corpus="$build/fuzz-corpus/$name"
  mkdir -p "$corpus"
  # Seeds live in the repo; the grown corpus stays in the build directory.
  cp -n "$repo"/tests/fuzz/corpus/"$name"/* "$corpus"/ 2>/dev/null || true
  echo "fuzz.sh: running $target for ${seconds}s"
  "$build/tests/fuzz/$target" -max_total_time="$seconds" -max_len=16384 -timeout=10 \
    -rss_limit_mb=2048 -artifact_prefix="$artifacts" -print_final_stats=1 "$corpus"
done
