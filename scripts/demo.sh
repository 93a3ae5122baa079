#!/usr/bin/env bash
# Sets everything up on a fresh Debian 12 machine and runs the main job on the bundled default.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$(nproc)"
# Until the CLI lands, the main job validates and describes the bundled Llama 3.2 Vision checkpoint.
build/examples/fusionlm-inspect tests/data/golden/mllama_tiny
