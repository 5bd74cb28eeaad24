#!/usr/bin/env bash
# The engine on a machine with an NVIDIA GPU and a Python torch 2.11, but neither Node nor Rust.
#
#   bash bench/gpu.sh prepare [--with-node]
#                                        # here: build the bench binary and the engine's reverse-pass and
#                                        # runtime test binaries into .device/ (git-ignored); with --with-node
#                                        # also this machine's node (xz, ~24 MB), the addon and dist/
#   bash bench/gpu.sh run [PYTHON]       # there: with that machine's torch (default: python3 on PATH),
#                                        #   1. the runtime test (CUDA must be seen),
#                                        #   2. the reverse pass against autograd on CUDA (float64 and float32),
#                                        #   3. the bench: FLP and OML, meta-batch 1, 8, 64 (NETS=flp,oml,flp-recipe
#                                        #      adds the recipe that trains),
#                                        #   4. the plain PyTorch implementation (bench/reference_flp.py) and
#                                        #      its batched matmul rate, on CUDA,
#                                        #   5. with node prepared: the Node harness (bench/run.mjs) on CUDA,
#                                        #      the addon's path, next to the same reference.
# Carry .device (run's `carry`); all of it stays under the 64 MiB a device call takes.
#
# The binaries link libtorch dynamically; LD_LIBRARY_PATH points them at the GPU machine's torch/lib, whose
# libtorch_cuda they load at start-up. Each stage has its own time limit, so a slow one cannot starve the
# rest. Results go to $RESULTS (default .device/results): Markdown tables, JSON lines and logs.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  prepare)
    node scripts/setup.mjs >/dev/null
    LIBTORCH="$(node -e "import('./scripts/libtorch.mjs').then(m => console.log(m.ensureLibtorch()))")"
    export LIBTORCH LIBTORCH_BYPASS_VERSION_CHECK=1
    cargo build --release -p metaplastic-core --example bench
    mkdir -p .device
    cp target/release/examples/bench .device/bench
    node bin/metaplastic.js presets flp-sine --json > .device/flp-sine.json # the flp-recipe net's rule, from the preset
    # The test executables' names carry a hash: ask cargo where it put them.
    cargo test --release -p metaplastic-core --test adjoint --test runtime --no-run --message-format=json 2>/dev/null |
      node -e '
        const lines = require("fs").readFileSync(0, "utf8").trim().split("\n").map((l) => JSON.parse(l));
        for (const m of lines) if (m.reason === "compiler-artifact" && m.executable) console.log(m.target.name, m.executable);' |
      while read -r name exe; do cp "$exe" ".device/test-$name"; done
    strip .device/bench .device/test-*
    rm -f .device/node # an unpacked node (99 MB) would not travel
    if [ "${2:-}" = "--with-node" ]; then
      xz -9 -T0 -c "$(command -v node)" > .device/node.xz
      rm -rf .device/dist && cp -r dist .device/dist
      cp native/*.node .device/
    fi
    ls -la .device
    echo "on the GPU machine: bash bench/gpu.sh run [PYTHON]"
    ;;
  run)
    python="${2:-python3}"
    torch_dir="$("$python" -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
    export LD_LIBRARY_PATH="$torch_dir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    results="${RESULTS:-.device/results}"
    mkdir -p "$results"
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee "$results/gpu.txt" || true
    echo "== 1. runtime"
    timeout 60 .device/test-runtime --test-threads 1 2>&1 | tee "$results/test-runtime.log" | tail -3 || true
    echo "== 2. reverse pass against autograd on CUDA"
    # The fused loops are CPU code: their own tests stay on the CPU machine.
    OMP_NUM_THREADS=4 METAPLASTIC_TEST_DEVICE=cuda timeout "${TEST_LIMIT:-150}" .device/test-adjoint --test-threads 1 \
      --skip fused_loops_split_over_threads --skip every_vector_width --skip layer_work_over_threads \
      2>&1 | tee "$results/test-adjoint-cuda.log" | tail -5 || echo "(adjoint tests: exit $?)"
    echo "== 3. engine bench"
    # One host thread launches the work; more were measured slower (adjoint/local.rs, per_layer).
    timeout "${BENCH_LIMIT:-300}" .device/bench --device cuda --threads "${THREADS:-1}" --meta-batch 1,8,64 --nets "${NETS:-flp,oml}" \
      --recipe .device/flp-sine.json --backward adjoint,autograd --autograd-max "${AUTOGRAD_MAX:-8}" --repeats "${REPEATS:-3}" \
      --json "$results/bench-cuda.jsonl" 2>&1 | tee "$results/bench-cuda.md" || true
    echo "== 4. plain PyTorch on CUDA"
    # FLP's unrolled graph takes ~10 GB per episode: meta-batch 64 does not fit in the GPU's memory.
    for run in ${REFERENCE_RUNS:-oja:1 oja:8 sgd:1 sgd:8 sgd:64}; do
      net="${run%%:*}" e="${run##*:}" rln=0
      [ "$net" = sgd ] && rln=6
      cfg="{\"kind\":\"meta\",\"rule\":\"$net\",\"lr\":0.003,\"sizes\":[11,300,300,300,300,300,900,300,300,1],\"rln\":$rln,\"metaBatch\":$e,\"functions\":10,\"batchesPerFunction\":40,\"batchSize\":32,\"queryPerFunction\":32,\"slots\":10,\"warmup\":1,\"repeats\":${REPEATS:-3},\"threads\":4,\"device\":\"cuda\"}"
      echo "$net E=$e: $(timeout 120 "$python" bench/reference_flp.py "$cfg" 2>&1 | tail -1)" | tee -a "$results/reference-cuda.txt"
    done
    cfg='{"kind":"matmul","n":8192,"repeats":20,"minSeconds":1,"device":"cuda","batched":[["bmm1",[1,32,300],[1,300,300]],["bmm8",[8,32,300],[8,300,300]],["bmm64",[64,32,300],[64,300,300]]]}'
    timeout 60 "$python" bench/reference_flp.py "$cfg" 2>&1 | tail -1 | tee "$results/matmul-cuda.json" || true
    if [ -f .device/node.xz ]; then
      echo "== 5. the Node harness on CUDA"
      xz -dc .device/node.xz > .device/node && chmod +x .device/node
      [ -d dist ] || cp -r .device/dist dist
      mkdir -p native && { ls native/*.node >/dev/null 2>&1 || cp .device/*.node native/; }
      # FLP's reference does not fit at meta-batch 64 (stage 4), so the harness leaves that scenario out.
      LIBTORCH="$torch_dir" timeout "${HARNESS_LIMIT:-240}" .device/node bench/run.mjs --full --device cuda --threads 1 \
        --python "$python" --filter "${HARNESS_FILTER:-flp-train-e1,oml-train-e64,flp-eval,oml-eval,matmul}" \
        --json "$results/harness-cuda.json" 2>&1 | tail -20 || true
    fi
    ;;
  *)
    echo "usage: bash bench/gpu.sh prepare | run [PYTHON]" >&2
    exit 2
    ;;
esac
