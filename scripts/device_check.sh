#!/usr/bin/env bash
# One call on the GPU machine: the shared vectors on cuda, wgpu and cpu, the demo on cuda
# and wgpu, and a cross-backend bench with JSON and plot. Builds nothing there: run
# `scripts/device_check.sh --pack` here first (copies the release binary into .devbin/),
# then on the device, with `.devbin` and `.gl` carried: `bash scripts/device_check.sh`.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--pack" ]; then
  cargo build --release --features cuda
  mkdir -p .devbin && cp target/release/minference .devbin/ && strip .devbin/minference
  exit 0
fi
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json WGPU_BACKEND=vulkan
B=.devbin/minference
nvidia-smi --query-gpu=name,driver_version,clocks.sm --format=csv | tee "$OUT/gpu.txt"
for be in cuda wgpu cpu; do
  $B check --backend "$be" 2>&1 | tee "$OUT/check_$be.log" | tail -2
done
$B demo --backend cuda 2>&1 | tee "$OUT/demo_cuda.log"
$B demo --backend wgpu 2>&1 | tee "$OUT/demo_wgpu.log"
$B bench --backend cuda,wgpu --seq-lens 4096,16384 --heads 8 --head-dim 128 --dtype f16 --reps 5 \
  --json "$OUT/bench-h100.json" --plot "$OUT/bench-h100.png" 2>"$OUT/bench.err" | tee "$OUT/bench.log"
$B bench --backend cuda --seq-lens 65536,131072 --heads 4 --head-dim 128 --dtype bf16 --reps 5 \
  --json "$OUT/bench-h100-cuda-long.json" 2>>"$OUT/bench.err" | tee "$OUT/bench-long.log"
