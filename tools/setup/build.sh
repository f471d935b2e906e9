#!/usr/bin/env bash
# Configures and builds ssmtune in ./build (Release, Ninja). Uses nvcc when it is found (SSMTUNE_CUDA=AUTO);
# pass extra CMake arguments through, e.g. -DSSMTUNE_CUDA=OFF or -DCMAKE_CUDA_ARCHITECTURES=90.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=/usr/local/cuda/bin:$PATH; fi
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build build --parallel "$(nproc)"
