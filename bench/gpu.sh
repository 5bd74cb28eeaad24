#!/usr/bin/env bash
# The engine benchmark on a machine with an NVIDIA GPU and a Python torch 2.11, but neither Node nor Rust.
#
#   bash bench/gpu.sh prepare            # here: build the engine's bench binary into .device/ (git-ignored)
#   bash bench/gpu.sh run [TORCH_DIR]    # there: run it against that machine's torch (default: the torch
#                                        # that `python3 -c 'import torch'` finds), CUDA, meta-batch 1, 8, 64
#
# The binary links libtorch dynamically; LD_LIBRARY_PATH points it at the GPU machine's torch/lib, whose
# libtorch_cuda it loads at start-up. Results: a Markdown table on stdout and .device/bench-cuda.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  prepare)
    node scripts/setup.mjs >/dev/null
    LIBTORCH="$(node -e "import('./scripts/libtorch.mjs').then(m => console.log(m.ensureLibtorch()))")"
    LIBTORCH="$LIBTORCH" LIBTORCH_BYPASS_VERSION_CHECK=1 cargo build --release -p metaplastic-core --example bench
    mkdir -p .device
    cp target/release/examples/bench .device/bench
    echo "built .device/bench; on the GPU machine: bash bench/gpu.sh run"
    ;;
  run)
    torch_dir="${2:-$(python3 -c 'import os, torch; print(os.path.dirname(torch.__file__))')}"
    export LD_LIBRARY_PATH="$torch_dir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    .device/bench --device cuda --threads "$(nproc)" --meta-batch 1,8,64 --nets flp,oml \
      --backward adjoint,autograd --repeats 3 --json .device/bench-cuda.jsonl
    ;;
  *)
    echo "usage: bash bench/gpu.sh prepare | run [TORCH_DIR]" >&2
    exit 2
    ;;
esac
