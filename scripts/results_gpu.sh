#!/usr/bin/env bash
# The GPU halves of results/equivalence and results/runtime (results/README.md), from the repository
# root on a machine with nvcc and a GPU (about a minute after the build):
#   1. builds tests/gpu/test_ssd_scan.cu in FP32 and BF16 (make, as make test_gpu does);
#   2. runs its --table mode in both builds at once: the SSD scan, forward and backward, against the
#      double recurrent CPU reference over the equivalence sweep -> equivalence/gpu_{fp32,bf16}.csv;
#   3. then, alone on the GPU, its --lengths mode, BF16 then FP32: forward and forward+backward time
#      for T = 128 ... 65536 -> runtime/gpu_{bf16,fp32}.csv.
# Everything goes under $OUT_DIR (default build/results_gpu), logs included. Then, on any machine:
#   cp $OUT_DIR/equivalence/gpu_*.csv results/equivalence/ && cp $OUT_DIR/runtime/gpu_*.csv results/runtime/
#   python3 scripts/results_plot.py equivalence results/equivalence
#   python3 scripts/results_plot.py runtime results/runtime
set -u
cd "$(dirname "$0")/.." || exit 1
out=${OUT_DIR:-build/results_gpu}
mkdir -p "$out/equivalence" "$out/runtime"
bins="build/gpu/FP32/test_ssd_scan build/gpu/BF16/test_ssd_scan"
if ! make -j2 $bins > "$out/build.log" 2>&1; then
    echo "build failed (last lines of $out/build.log):"
    tail -n 30 "$out/build.log"
    exit 1
fi
status=0
for p in FP32 BF16; do
    lower=$(echo "$p" | tr 'A-Z' 'a-z')
    build/gpu/$p/test_ssd_scan --table > "$out/equivalence/gpu_$lower.csv" 2> "$out/table_$lower.log" &
done
for job in $(jobs -p); do wait "$job" || status=1; done
for p in BF16 FP32; do
    lower=$(echo "$p" | tr 'A-Z' 'a-z')
    build/gpu/$p/test_ssd_scan --lengths > "$out/runtime/gpu_$lower.csv" 2> "$out/lengths_$lower.log" || status=1
done
for f in "$out"/equivalence/gpu_*.csv "$out"/runtime/gpu_*.csv; do
    echo "== $f"
    column -s, -t < "$f" 2> /dev/null || cat "$f"
done
[ "$status" -eq 0 ] || echo "a run failed: see $out/*.log"
exit $status
