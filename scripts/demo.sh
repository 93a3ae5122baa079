#!/usr/bin/env bash
# Sets everything up on a fresh Debian 12 machine and runs the main job on the bundled default:
# the demo Llama 3.2 Vision checkpoint (examples/shapes) describing one of its sample pictures.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$(nproc)" --target fusionlm-run
build/examples/fusionlm-run -m examples/shapes --image tests/data/demo/samples/shapes_000.png \
  -p "Describe the image." -n 24 --temp 0
