#!/usr/bin/env bash
# Runs on the GPU machine (no Rust there) from the repository root, with .devbin-cuda/
# carried: the CUDA test binary, the bench example and tests/vectors, built on the CPU
# machine by `scripts/device_cuda.sh --pack`. Logs go to $OUT.
set -uo pipefail
if [ "${1:-}" = "--pack" ]; then
  set -e
  cargo test --release --features cuda --test cuda --no-run
  cargo build --release --features cuda --example cuda_bench
  dst=${2:-.devbin-cuda}
  rm -rf "$dst" && mkdir -p "$dst"
  test_bin=$(ls -t target/release/deps/cuda-* | grep -v '\.d$' | head -1)
  cp "$test_bin" "$dst/cuda-test" && cp target/release/examples/cuda_bench "$dst/"
  strip "$dst/cuda-test" "$dst/cuda_bench"
  cp -r tests/vectors "$dst/vectors" && cp scripts/sdpa_compare.py scripts/device_cuda.sh "$dst/"
  du -sh "$dst"
  exit 0
fi
D=.devbin-cuda
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
# The test binary reads the vectors from the path baked in at build time.
mkdir -p "${VECTORS_AT:-/work/wt-cuda/tests}" && rm -rf "${VECTORS_AT:-/work/wt-cuda/tests}/vectors" \
  && cp -r $D/vectors "${VECTORS_AT:-/work/wt-cuda/tests}/vectors"
nvidia-smi -L | tee "$OUT/device.log"
export MINFERENCE_REQUIRE_CUDA=1
echo "== tests"
timeout 300 $D/cuda-test --test-threads=1 2>&1 | tee "$OUT/tests.log" | grep -E "^test |test result|FAIL|panicked" 
echo "== compute-sanitizer memcheck (fresh inputs, every pattern and dtype)"
timeout 200 compute-sanitizer --tool memcheck --error-exitcode 9 $D/cuda-test fresh_random_inputs_every_pattern --exact --test-threads=1 > "$OUT/memcheck.log" 2>&1
echo "memcheck exit: $?"; tail -5 "$OUT/memcheck.log"
echo "== ptxas -v (registers, spills) of the tensor-core kernel"
mkdir -p /tmp/ptx && MINFERENCE_DUMP_PTX=/tmp/ptx $D/cuda-test dump_ptx --ignored --exact >/dev/null 2>&1
ptxas -arch=sm_90 -v /tmp/ptx/AttentionMma.ptx -o /tmp/ptx/a.cubin 2>&1 | grep -A2 "bf16_d128_" | tee "$OUT/ptxas.log"
echo "== bench"
timeout 200 $D/cuda_bench 2>&1 | tee "$OUT/bench.log"
echo "== torch SDPA"
PYTHONUNBUFFERED=1 timeout 60 python3 $D/sdpa_compare.py 2>&1 | tee "$OUT/sdpa.log"
