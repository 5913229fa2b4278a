#!/usr/bin/env bash
# Runs on the GPU machine from the repository root with .devbin/ carried (cuda_bench and the
# tensor-core family's PTX, built on the CPU machine). Nsight Compute profiles of the dense
# tensor-core kernel variants, plus their SASS. Logs and reports go to $OUT.
set -uo pipefail
D=.devbin
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
echo "ncu: $NCU"
for v in ${VARIANTS:-mt1 mt2 mt1_bm128}; do
  timeout 150 "$NCU" --clock-control none --set full -k "regex:attention_mma_bf16_d128_${v}\$" -c 1 \
    -o "$OUT/$v" -f "$D/cuda_bench" dense-only > "$OUT/$v.run.log" 2>&1
  echo "$v: ncu exit $?"; tail -3 "$OUT/$v.run.log"
  "$NCU" -i "$OUT/$v.ncu-rep" --page details > "$OUT/$v.details.txt" 2>&1
  "$NCU" -i "$OUT/$v.ncu-rep" --page source --csv --print-source sass > "$OUT/$v.source.csv" 2>&1
  gzip -f "$OUT/$v.source.csv"
done
if [ -f "$D/AttentionMma.ptx" ]; then
  ptxas -arch=sm_90 -v "$D/AttentionMma.ptx" -o /tmp/mma.cubin > "$OUT/ptxas.log" 2>&1
  for v in ${VARIANTS:-mt1 mt2 mt1_bm128}; do
    cuobjdump -sass -fun "attention_mma_bf16_d128_$v" /tmp/mma.cubin > "$OUT/sass_$v.txt" 2>&1
  done
fi
