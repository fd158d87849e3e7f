#!/usr/bin/env bash
# The SSD scan sweep of issue #14 in one command, from the repository root on a machine with nvcc and a GPU:
#   bash scripts/bench_scan_sweep.sh OUTDIR [--path auto|sub|mma]
#   1. builds tests/gpu/test_ssd_scan.cu (bf16) with nvcc alone, as scripts/bench_ssd_scan.sh does (no
#      libcjson/zstd: it links only the CPU reference and common/utils), for this machine's GPU
#      (GPU_ARCH, default -arch=native) -> build/scan_sweep/test_ssd_scan_BF16;
#   2. meanwhile, when flash-linear-attention's wheels are in .whl/ (installed into /tmp/site without
#      dependencies: torch, triton and einops must be there; without .whl/ fla is left out, with a
#      message), compiles its Triton kernels: one scripts/bench_scan_fla.py --warm process per kernel and
#      d_state, in parallel (the compile cache; see that script);
#   3. then, alone on the GPU, test_ssd_scan --sweep (the given --path, default auto) -> OUTDIR/ours.csv;
#   4. then fla's timings, one process per kernel and d_state -> OUTDIR/fla/KERNEL_N.csv, joined into
#      OUTDIR/fla.csv;
#   5. writes OUTDIR/env.txt (GPU, driver, nvcc, fla, the mapping checks) and, where matplotlib is
#      installed, OUTDIR/scan-sweep/ (scripts/scan_sweep_report.py); elsewhere it prints that command.
# Resumable: a stage whose CSV exists is not run again, and no fla timing starts after SWEEP_DEADLINE
# seconds (default 540, under a 10-minute command limit): run the same command again to go on (on the
# same machine the Triton caches are still there); it then exits 2. SWEEP_FLA_N="128 256" times fla at
# those d_state values only. Logs: OUTDIR/*.log, OUTDIR/fla/*.log.
# Copy OUTDIR/scan-sweep/ to results/scan-sweep/ to keep it.
set -u
cd "$(dirname "$0")/.." || exit 1
if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
    echo "usage: bash scripts/bench_scan_sweep.sh OUTDIR [--path auto|sub|mma]" >&2
    exit 1
fi
out=$1
shift
bin=build/scan_sweep
deadline=${SWEEP_DEADLINE:-540}
kernels="gla simple_gla"
Ns=${SWEEP_FLA_N:-16 64 128 256}  # fla's d_state values (each costs minutes of compiling and autotuning)
mkdir -p "$out/fla" "$bin" || exit 1
status=0

build=
if [ ! -s "$out/ours.csv" ]; then
    NVCC=${NVCC:-nvcc}
    flags="-O3 --use_fast_math -std=c++17 ${GPU_ARCH:--arch=native} -I. -Xcompiler -Wall,-Wextra,-Wno-unused-parameter"
    (gcc -O2 -fopenmp -std=gnu11 -I. -DSSD_DOUBLE -c model/cpu_ssd.c -o $bin/cpu_ssd.o &&
        gcc -O2 -std=gnu11 -I. -c common/utils.c -o $bin/utils.o &&
        $NVCC $flags -DSSD_DOUBLE -DENABLE_BF16 tests/gpu/test_ssd_scan.cu $bin/cpu_ssd.o $bin/utils.o -Xcompiler \
            -fopenmp -lgomp -o $bin/test_ssd_scan_BF16) > "$out/build.log" 2>&1 &
    build=$!
fi

fla=
if ! ls .whl/*.whl > /dev/null 2>&1; then
    echo "fla: no wheels in .whl/ (scripts/bench_scan_fla.py says how to get them); fla is left out"
elif ! python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl > "$out/install.log" 2>&1; then
    echo "fla: installing .whl/*.whl failed (see $out/install.log); fla is left out"
    status=1
else
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    fla=yes
    warm=()
    for k in $kernels; do
        for n in $Ns; do
            if [ ! -s "$out/fla/${k}_$n.csv" ]; then
                FLA_CACHE_RESULTS=0 python3 scripts/bench_scan_fla.py --warm --kernels "$k" --n "$n" \
                    > "$out/fla/warm_${k}_$n.log" 2>&1 &
                warm+=($!)
            fi
        done
    done
    [ ${#warm[@]} -gt 0 ] && echo "fla: compiling its kernels in ${#warm[@]} processes (logs: $out/fla/warm_*.log)"
fi

if [ -n "$build" ] && ! wait "$build"; then
    echo "build failed (last lines of $out/build.log):"
    tail -n 30 "$out/build.log"
    exit 1
fi
[ -n "$fla" ] && for job in "${warm[@]}"; do wait "$job"; done  # a failed warm-up shows in its group's rows
echo "after the build and fla's compiles: $SECONDS s"

if [ ! -s "$out/ours.csv" ]; then
    start=$SECONDS
    if $bin/test_ssd_scan_BF16 --sweep "$@" > "$out/ours.csv.tmp" 2> "$out/sweep.log"; then
        mv "$out/ours.csv.tmp" "$out/ours.csv"
        echo "ours: test_ssd_scan --sweep $* in $((SECONDS - start)) s"
    else
        echo "test_ssd_scan --sweep failed (last lines of $out/sweep.log and of its CSV):"
        tail -n 20 "$out/sweep.log" "$out/ours.csv.tmp"
        exit 1
    fi
fi

if [ -n "$fla" ]; then
    left=0
    for k in $kernels; do
        for n in $Ns; do
            group="$out/fla/${k}_$n"
            [ -s "$group.csv" ] && continue
            if [ $SECONDS -ge "$deadline" ]; then
                left=$((left + 1))
                continue
            fi
            start=$SECONDS
            if python3 scripts/bench_scan_fla.py --kernels "$k" --n "$n" > "$group.csv.tmp" 2> "$group.log"; then
                mv "$group.csv.tmp" "$group.csv"
                echo "fla: $k N=$n in $((SECONDS - start)) s"
            else
                echo "fla: $k N=$n failed (last lines of $group.log):"
                tail -n 10 "$group.log"
                status=1
            fi
        done
    done
    if [ $left -gt 0 ]; then
        echo "fla: $left of the kernel x d_state groups not timed before SWEEP_DEADLINE=$deadline s: run the same" \
             "command again to time them"
        status=2
    fi
    files=$(ls "$out"/fla/*_*.csv 2> /dev/null | sort)
    if [ -n "$files" ]; then
        { head -n 1 "$(echo "$files" | head -n 1)"; for f in $files; do tail -n +2 "$f"; done; } > "$out/fla.csv.tmp" &&
            mv "$out/fla.csv.tmp" "$out/fla.csv"
    else
        fla=
    fi
fi

{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2> /dev/null | head -n 1
    ${NVCC:-nvcc} --version | tail -n 1
    cat "$out"/fla/*.log 2> /dev/null | grep -E '^(fla |mapping check)' | sort -u
} > "$out/env.txt.tmp" && mv "$out/env.txt.tmp" "$out/env.txt"

report=(python3 scripts/scan_sweep_report.py --ours "$out/ours.csv")
[ -n "$fla" ] && report+=(--fla "$out/fla.csv")
report+=(--env "$out/env.txt" --out "$out/scan-sweep" --command "bash scripts/bench_scan_sweep.sh $out${*:+ $*}")
if python3 -c "import matplotlib" 2> /dev/null; then
    "${report[@]}" || status=1
else
    echo "no matplotlib here: bring $out back and run, from the repository root:"
    printf ' %q' "${report[@]}"
    echo
fi
echo "total: $SECONDS s"
exit $status
