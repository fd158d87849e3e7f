#!/usr/bin/env bash
# Builds the SSD scan test (tests/gpu/test_ssd_scan.cu) in fp32 and bf16 by itself, runs both test
# programs, times the scan (bf16 and fp32, scalar and diagonal A) and, with --sanitize, runs the fp32
# tests under compute-sanitizer (memcheck). Ends with a summary table. Needs a GPU. Logs go to
# $LOG_DIR (default build/ssd_scan); -Xptxas -v resource usage goes to $LOG_DIR/build_*.log.
set -u
cd "$(dirname "$0")/.." || exit 1
bin=build/ssd_scan
logs=${LOG_DIR:-$bin}
mkdir -p "$bin" "$logs"
NVCC=${NVCC:-nvcc}
flags="-O3 --use_fast_math -std=c++17 -gencode arch=compute_90,code=sm_90 -I. -Xcompiler -Wall,-Wextra,-Wno-unused-parameter -DSSD_DOUBLE"
gcc -O2 -fopenmp -std=gnu11 -I. -DSSD_DOUBLE -c model/cpu_ssd.c -o $bin/cpu_ssd.o || exit 1
gcc -O2 -std=gnu11 -I. -c common/utils.c -o $bin/utils.o || exit 1
status=0
for p in FP32 BF16; do
    $NVCC $flags -Xptxas -v -DENABLE_$p tests/gpu/test_ssd_scan.cu $bin/cpu_ssd.o $bin/utils.o -Xcompiler -fopenmp \
        -lgomp -o $bin/test_ssd_scan_$p > "$logs/build_$p.log" 2>&1 &
done
for job in $(jobs -p); do
    wait "$job" || { echo "build failed:"; grep -i -B2 -A2 "error" "$logs"/build_*.log | head -40; exit 1; }
done
for p in FP32 BF16; do
    ./$bin/test_ssd_scan_$p > "$logs/test_$p.log" 2>&1 || status=1
    grep -E '^(FAIL|[0-9]+ passed)' "$logs/test_$p.log"
done
for p in BF16 FP32; do
    ./$bin/test_ssd_scan_$p --bench > "$logs/bench_$p.log" 2>&1 || status=1
done
sanitizer="not run"
if [ "${1:-}" = "--sanitize" ]; then
    compute-sanitizer --tool memcheck ./$bin/test_ssd_scan_FP32 > "$logs/sanitizer.log" 2>&1 || status=1
    sanitizer=$(grep -E "ERROR SUMMARY" "$logs/sanitizer.log" | tail -n 1)
fi
echo
echo "| build | tests | A | forward (ms) | forward+backward (ms) |"
echo "| --- | --- | --- | --- | --- |"
for p in BF16 FP32; do
    summary=$(grep -E '^[0-9]+ passed' "$logs/test_$p.log" | tail -n 1)
    grep '^bench' "$logs/bench_$p.log" | sed -E 's/^bench [a-z0-9]+ ([a-z]+) .*forward ([0-9.]+) ms, forward\+backward ([0-9.]+) ms.*/\1 \2 \3/' |
        while read -r kind fwd both; do echo "| $p | ${summary:-no result} | $kind | $fwd | $both |"; done
done
echo "memcheck (fp32 tests): $sanitizer"
exit $status
