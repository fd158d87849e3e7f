#!/usr/bin/env bash
# Builds the SSD scan test (tests/gpu/test_ssd_scan.cu) in fp32 and bf16 by itself, runs both test
# programs, times the scan (bf16 and fp32, scalar and diagonal A) and, with --sanitize, runs the fp32
# tests under compute-sanitizer. Needs a GPU. Logs go to $LOG_DIR (default build/ssd_scan).
set -u
cd "$(dirname "$0")/.." || exit 1
bin=build/ssd_scan
logs=${LOG_DIR:-$bin}
mkdir -p "$bin" "$logs"
NVCC=${NVCC:-nvcc}
flags="-O3 --use_fast_math -std=c++17 -gencode arch=compute_90,code=sm_90 -I. -Xcompiler -Wall,-Wextra,-Wno-unused-parameter -DSSD_DOUBLE"
gcc -O2 -fopenmp -std=gnu11 -I. -DSSD_DOUBLE -c model/cpu_ssd.c -o $bin/cpu_ssd.o || exit 1
gcc -O2 -std=gnu11 -I. -c model/utils.c -o $bin/utils.o || exit 1
status=0
for p in FP32 BF16; do
    $NVCC $flags -DENABLE_$p tests/gpu/test_ssd_scan.cu $bin/cpu_ssd.o $bin/utils.o -Xcompiler -fopenmp -lgomp \
        -o $bin/test_ssd_scan_$p || exit 1
done
for p in FP32 BF16; do
    ./$bin/test_ssd_scan_$p 2>&1 | tee "$logs/test_$p.log" || status=1
done
for p in BF16 FP32; do
    ./$bin/test_ssd_scan_$p --bench 2>&1 | tee "$logs/bench_$p.log" || status=1
done
if [ "${1:-}" = "--sanitize" ]; then
    compute-sanitizer --tool memcheck ./$bin/test_ssd_scan_FP32 > "$logs/sanitizer.log" 2>&1 || status=1
    tail -n 3 "$logs/sanitizer.log"
fi
exit $status
