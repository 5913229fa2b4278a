#!/usr/bin/env bash
# One call on the GPU machine for kernel work: the CUDA and wgpu test suites (every kernel
# variant, failures are fatal there), `check` per wgpu variant, the CUDA bench over kernel
# configs, a wgpu timing table, compute-sanitizer memcheck/racecheck on the CUDA check run,
# ncu profiles, the torch comparison, the cooperative-matrix matmul microbenchmark
# (PARTS=coopbench), the driver's statistics of the coop pipelines (pstats: registers, spills),
# `minference bench` of the wgpu variants against CUDA (variantbench), the residency probe
# (residency), and
# side-by-side builds of candidate kernels (abtests, abbench: test binaries named in AB_BINS
# under DEVBIN, default .devbin).
# Here: `scripts/device_session.sh --pack` (builds into .devbin/). There, with `.devbin` and
# `.gl` carried: `bash scripts/device_session.sh` (PARTS picks sections; logs to $OUT; at most
# 8 files come back, so logs are few).
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--pack" ]; then
  set -e
  cargo build --release --features cuda
  cargo build --release --features cuda --example cuda_bench
  cargo test --release --features cuda --no-run --test cuda --test wgpu --test wgpu_coop_bench --test wgpu_pipeline_stats --test wgpu_residency 2>&1 | tail -3
  rm -rf .devbin && mkdir -p .devbin
  cp target/release/minference target/release/examples/cuda_bench .devbin/
  for t in cuda wgpu wgpu_coop_bench wgpu_pipeline_stats wgpu_residency; do cp "$(ls -t target/release/deps/$t-* | grep -v '\.d$' | head -1)" ".devbin/$t-test"; done
  strip .devbin/*
  echo "built from $(pwd) at $(git rev-parse --short HEAD)" > .devbin/BUILT
  du -sh .devbin
  exit 0
fi
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
D=${DEVBIN:-.devbin}
# Test binaries find tests/vectors under the path they were built in.
built=$(sed -n 's/^built from \(.*\) at .*/\1/p' $D/BUILT)
[ -d "$built" ] || { mkdir -p "$(dirname "$built")" && ln -sfn "$PWD" "$built"; }
for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json WGPU_BACKEND=vulkan
export MINFERENCE_REQUIRE_CUDA=1 MINFERENCE_REQUIRE_WGPU=1
LOG="$OUT/session.log"
PARTS=${PARTS:-"tests check bench wgpubench ncu"}
{
cat $D/BUILT; nvidia-smi --query-gpu=name,driver_version,clocks.sm --format=csv,noheader
for part in $PARTS; do case $part in
tests)
  echo "== cuda tests"
  timeout 400 $D/cuda-test --test-threads=1 2>&1 | grep -E "^test |test result|panicked|FAIL" | grep -v " ok$"
  echo "== wgpu tests (variants: ${WGPU_VARIANTS:-rowwise,tiled,coop})"
  MINFERENCE_REQUIRE_WGPU_VARIANTS=${WGPU_VARIANTS:-rowwise,tiled,coop} timeout 400 $D/wgpu-test --test-threads=2 2>&1 \
    | grep -E "^test |test result|panicked|FAIL|SKIPPED" | grep -v " ok$" ;;
check)
  for v in ${CHECK_VARIANTS:-rowwise tiled coop}; do
    echo "== check wgpu $v"; MINFERENCE_WGPU_VARIANT=$v timeout 200 $D/minference check --backend wgpu 2>&1 | tail -2
  done
  echo "== check cuda"; timeout 200 $D/minference check --backend cuda 2>&1 | tail -2 ;;
bench)
  echo "== cuda bench"; timeout 300 $D/cuda_bench 2>&1 ;;
coopbench)
  # Ceiling of cooperative-matrix matmul through naga + the Vulkan driver (tests/wgpu_coop_bench.rs).
  echo "== coop matmul microbenchmark"
  timeout 200 $D/wgpu_coop_bench-test --ignored coop_matmul_throughput --nocapture 2>&1 \
    | grep -vE "^(running|test result|$)" ;;
coopn)
  # The coop variant at each tile width in BLOCKN_LIST (MINFERENCE_WGPU_COOP_BLOCK_N, default
  # "32 64"): its tests (coop required), `check`, and `minference bench` of it against CUDA in
  # one run (JSON under $OUT).
  pats=${VB_PATTERNS:-dense,a-shape,vertical-slash:1000,6096,block-sparse:100}
  for n in ${BLOCKN_LIST:-32 64}; do
    echo "== coop BLOCK_N $n: wgpu coop tests"
    MINFERENCE_WGPU_COOP_BLOCK_N=$n MINFERENCE_REQUIRE_WGPU_VARIANTS=coop timeout 300 $D/wgpu-test --test-threads=2 coop 2>&1 \
      | grep -E "^test |test result|panicked|FAIL|SKIPPED" | grep -v " ok$"
    echo "== coop BLOCK_N $n: check wgpu coop"
    MINFERENCE_WGPU_COOP_BLOCK_N=$n MINFERENCE_WGPU_VARIANT=coop timeout 200 $D/minference check --backend wgpu 2>&1 | tail -2
    echo "== coop BLOCK_N $n: minference bench wgpu (coop) and cuda, one run"
    MINFERENCE_WGPU_COOP_BLOCK_N=$n timeout 400 $D/minference bench --backend wgpu,cuda --dtype f16 --heads ${VB_H:-32} \
      --seq-lens ${VB_N:-16384,65536} --patterns $pats --json $OUT/bench_coop_n$n.json 2>&1 | grep -E "^\| wgpu|^\| cuda|backend wgpu:" | sort -u
  done ;;
residency)
  # How many workgroups the driver keeps on one SM by workgroup size, workgroup memory and
  # registers held (tests/wgpu_residency.rs; RESIDENCY_SMS, default 132).
  echo "== workgroups per SM (residency probe)"
  MINFERENCE_RESIDENCY_SMS=${RESIDENCY_SMS:-132} timeout 200 $D/wgpu_residency-test --ignored workgroups_per_sm --nocapture 2>&1 \
    | grep -vE "^(running|$)" ;;
pstats)
  # What the driver's compiler made of the coop kernels: registers, spills, shared memory
  # (tests/wgpu_pipeline_stats.rs; VK_KHR_pipeline_executable_properties).
  echo "== coop pipeline statistics"
  timeout 200 $D/wgpu_pipeline_stats-test --ignored coop_pipeline_statistics --nocapture 2>&1 \
    | grep -vE "^(running|$)" ;;
abtests)
  # The wgpu suite (coop required) once per test binary named in AB_BINS (under $D), one
  # thread, each test's line shown: builds of candidate kernels side by side.
  for bin in ${AB_BINS:-wgpu-test}; do
    echo "== wgpu tests: $bin"
    MINFERENCE_REQUIRE_WGPU_VARIANTS=rowwise,tiled,coop timeout 300 $D/$bin --test-threads=1 2>&1 \
      | grep -E "^test |test result|panicked|FAIL|SKIPPED|Segmentation|error" | grep -v "^test .* ok$"; echo "exit ${PIPESTATUS[0]}"
  done ;;
abbench)
  # bench_dense_vs_sparse (coop variant) per test binary in AB_BINS, in one process each.
  for bin in ${AB_BINS:-wgpu-test}; do
    echo "== wgpu ${AB_VARIANT:-coop} bench: $bin"
    MINFERENCE_WGPU_VARIANT=${AB_VARIANT:-coop} MINFERENCE_BENCH_N=${WGPU_N:-16384} MINFERENCE_BENCH_H=${WGPU_H:-32} timeout 300 \
      $D/$bin --ignored bench_dense_vs_sparse --nocapture 2>&1 | grep -E "wgpu/|panicked"
  done ;;
variantbench)
  # `minference bench` (structured inputs, f16, D = 128): the wgpu backend in its default variant
  # (coop where the adapter has cooperative matrices) and the CUDA backend in one run, then the
  # wgpu tiled variant alone; JSON of both under $OUT.
  pats=${VB_PATTERNS:-dense,a-shape,vertical-slash:1000,6096,block-sparse:100}
  echo "== minference bench: wgpu (default variant) and cuda, one run"
  timeout 400 $D/minference bench --backend wgpu,cuda --dtype f16 --heads ${VB_H:-32} --seq-lens ${VB_N:-16384,65536} \
    --patterns $pats --json $OUT/bench_wgpu_cuda.json 2>&1 | grep -vE "^\s*$"
  echo "== minference bench: wgpu tiled"
  MINFERENCE_WGPU_VARIANT=tiled timeout 300 $D/minference bench --backend wgpu --dtype f16 --heads ${VB_H:-32} \
    --seq-lens ${VB_N:-16384,65536} --patterns $pats --json $OUT/bench_wgpu_tiled.json 2>&1 | grep -vE "^\s*$" ;;
wgpubench)
  for v in ${BENCH_VARIANTS:-tiled coop}; do
    echo "== wgpu $v bench"
    MINFERENCE_WGPU_VARIANT=$v MINFERENCE_BENCH_N=${WGPU_N:-4096,16384,65536} MINFERENCE_BENCH_H=${WGPU_H:-8} timeout 300 \
      $D/wgpu-test --ignored bench_dense_vs_sparse --nocapture 2>&1 | grep -E "wgpu/|device"
  done
  echo "== wgpu index stages"
  MINFERENCE_BENCH_N=${WGPU_INDEX_N:-65536} MINFERENCE_BENCH_H=${WGPU_INDEX_H:-8} timeout 120 \
    $D/wgpu-test --ignored bench_index_stages --nocapture 2>&1 \
    | grep -vE "^(running|test |$)" ;;
ncu)
  # Nsight Compute of the dense tensor-core kernel in each tiling named by NCU_KERNELS
  # (suffixes of attention_mma_bf16_d128_*: mt1, mt2, mt1_bm128, mt2_bm128).
  NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
  for kern in ${NCU_KERNELS:-mt1}; do
    timeout 150 "$NCU" --clock-control none --set full -k "regex:attention_mma_bf16_d128_${kern}\$" -c 1 \
      -o "$OUT/prof_$kern" -f "$D/cuda_bench" dense-only > /dev/null 2>&1; echo "ncu $kern exit $?"
    "$NCU" -i "$OUT/prof_$kern.ncu-rep" --page details > "$OUT/prof_$kern.details.txt" 2>&1
    "$NCU" -i "$OUT/prof_$kern.ncu-rep" --page source --csv --print-source sass 2>/dev/null \
      | gzip > "$OUT/prof_$kern.source.csv.gz"
    rm -f "$OUT/prof_$kern.ncu-rep"
  done ;;
ncuconvert)
  # Nsight Compute (full set, SASS source counters) of one index kernel (NCU_INDEX_KERNEL,
  # default vs_convert) on the ncuindex capture.
  NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu); kern=${NCU_INDEX_KERNEL:-vs_convert}
  mkdir -p /tmp/cmp; cap=/tmp/cmp/capture.safetensors
  [ -f $cap ] || $D/minference gen-capture --heads ${CMP_H:-4} --kv-heads ${CMP_H:-4} --seq-len ${CMP_N:-131072} \
    --kinds vertical-slash --dtype bf16 --output $cap > /dev/null
  timeout 200 "$NCU" --clock-control none --set full --import-source no -k "regex:^$kern\$" -c 1 -o "$OUT/prof_$kern" -f \
    $D/minference run --input $cap --pattern vertical-slash:1000,6096 --backend cuda --output /tmp/ncu_o.st > /dev/null 2>&1
  echo "ncu $kern exit $?"
  "$NCU" -i "$OUT/prof_$kern.ncu-rep" --page details > "$OUT/prof_$kern.details.txt" 2>&1
  "$NCU" -i "$OUT/prof_$kern.ncu-rep" --page source --csv --print-source sass 2>/dev/null | gzip > "$OUT/prof_$kern.source.csv.gz"
  rm -f "$OUT/prof_$kern.ncu-rep" ;;
compare)
  echo "== torch comparison (SDPA, FlexAttention on our index)"
  mkdir -p /tmp/cmp && PYTHONUNBUFFERED=1 timeout 420 python3 scripts/compare_torch.py "$PWD/$D/minference" /tmp/cmp \
    ${CMP_N:-131072} ${CMP_H:-4} 2>&1 | grep -v Warning ;;
sanitize)
  # compute-sanitizer memcheck and racecheck on the CUDA check run (every shared vector).
  CS=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  for tool in memcheck racecheck; do
    echo "== compute-sanitizer $tool: check --backend cuda"
    timeout 280 "$CS" --tool $tool --error-exitcode 9 $D/minference check --backend cuda 2>&1 \
      | grep -vE "^(ok|PASS) " | tail -6; echo "exit ${PIPESTATUS[0]}"
  done ;;
ncuindex)
  echo "== index kernel durations (ncu, one build each, N=${CMP_N:-131072}, H=${CMP_H:-4})"
  NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
  mkdir -p /tmp/cmp; cap=/tmp/cmp/capture.safetensors
  [ -f $cap ] || $D/minference gen-capture --heads ${CMP_H:-4} --kv-heads ${CMP_H:-4} --seq-len ${CMP_N:-131072} \
    --kinds vertical-slash --dtype bf16 --output $cap > /dev/null
  for pat in vertical-slash:1000,6096 block-sparse:100; do
    echo "-- $pat"
    timeout 120 "$NCU" --clock-control none --metrics gpu__time_duration.sum -k "regex:^(vs_|bs_|index_)" \
      $D/minference run --input $cap --pattern $pat --backend cuda --output /tmp/ncu_o.st 2>&1 \
      | grep -E "^  [a-z_0-9]+ \(|gpu__time_duration" | sed -E "s/, Context.*//; s/ +/ /g"
  done ;;
esac; echo "-- $part done at ${SECONDS}s"; done
} 2>&1 | tee "$LOG"
