#!/usr/bin/env bash
# Whole-trainer GPU tests on Tiny Shakespeare (mamba2-tiny, B=4, T=64, no shuffling):
#  1. 50 training steps of train_ssdcu (bf16 and FP32 builds) track the CPU trainer's losses;
#  2. exact resume: a run resumed from its step-10 checkpoint gives bit-identical losses to the
#     uninterrupted run for steps 11..20; activation recomputation (-r 1, -r 2) gives bit-identical
#     losses from fewer bytes of activations;
#  3. full-split evaluation (every target of the val split, fresh and carried state) gives the CPU
#     trainer's mean loss from the same checkpoint;
#  4. compute-sanitizer memcheck and racecheck report no error over two steps of a tiny model;
#  5. document boundaries (-db 1), a carried state (-cs 1) and both: 30 steps of each build track the CPU
#     trainer's losses with the same flags (the tolerances of 1.); a -db 1 -cs 1 run resumed from its step-10
#     checkpoint continues bit-identically, and the CPU trainer resumes the FP32 build's step-10 checkpoint
#     (its carried states in the same order) and tracks that run's steps 11..20 (tolerance as 1.'s FP32);
#  6. shapes the scan runs through its adapter (headdim 40, d_state 48, ngroups 2; scalar and diagonal A):
#     30 steps of each build with -db 1 track the CPU trainer's losses (the tolerances of 1.), and
#     compute-sanitizer memcheck reports no error over two steps.
# Needs train_ssd, train_ssdcu, build/gpu/FP32/train_ssdcu and the tokenized shards in
# datasets/tinyshakespeare (scripts/prepro.py --recipe tinyshakespeare --tokenizer gpt2).
cd "$(dirname "$0")/../.." || exit 1
work=$(mktemp -d)
keep_work=""  # set when a sanitizer fails: its whole log then stays in $work
trap '[ -n "$keep_work" ] || rm -rf "$work"' EXIT
shards=datasets/tinyshakespeare
if ! ls $shards/*_train_*.bin > /dev/null 2>&1; then
    echo "FAIL train_data: no shards in $shards (run scripts/prepro.py --recipe tinyshakespeare --tokenizer gpt2)"
    exit 1
fi
common=(-e configs/mamba2-tiny.json -i "$shards/*_train_*.bin" -j "$shards/*_val_*.bin" -b 4 -t 64 -sh 0 -v 0 -g 0 -l 3e-3 -u 5)

losses() { grep -E '^step +[0-9]+/' "$1" | sed -E 's/^step +([0-9]+)\/[0-9]+ \| loss ([0-9.]+).*/\1 \2/'; }

# The first 20 lines of a compute-sanitizer log's first report (an error, or a racecheck hazard).
first_report() {
    local start
    start=$(grep -n -m 1 -E 'Race reported|Potential .*hazard|Invalid|Error:|ERROR:' "$1" | cut -d: -f1)
    [ -n "$start" ] && sed -n "${start},$((start + 19))p" "$1"
}

# The device functions named by the access lines of a sanitizer report on stdin, one per line. Forms:
#   "Write access at void kernel<16, true>(float *, ...)+0x1c30 in file.cuh:734"  (newer releases)
#   "Read access at 0x00000a50 in /path/file.cu:20:kernel(int *, ...)"            (older releases)
#   "at kernel(float *)+0x70 in file.cu:12" (memcheck), "Write Thread (31, 0, 0) at ..." (hazard mode)
# Host backtrace lines are skipped: they name the launching host code, not the kernel. Mangled
# names (hazard mode) are demangled when c++filt is there.
report_kernels() {
    awk '/backtrace|Host Frame/ { next }
         /access at |Thread \([0-9, ]+\) at |^=+ +at / {
             line = $0
             sub(/^.* at /, "", line)
             sub(/^0x[0-9a-fA-F]+ in /, "", line)
             sub(/^void /, "", line)
             sub(/\(.*$/, "", line)
             sub(/^.*:[0-9]+:/, "", line)
             sub(/\+0x[0-9a-fA-F]+.*$/, "", line)
             if (line != "" && !seen[line]++) print line
         }' | if command -v c++filt > /dev/null; then c++filt; else cat; fi
}

# check_parity <name> <tol> <cpu log> <gpu log> <steps>: the two runs' step losses agree within tol, every step
# is there, and the loss fell by more than 1 (the run trains)
check_parity() {
    paste <(losses "$3") <(losses "$4") | awk -v tol="$2" -v name="$1" -v steps="$5" '
        { n++; d = $2 - $4; if (d < 0) d = -d; if (d > max) { max = d; at = $1 } first_cpu = (n == 1 ? $2 : first_cpu); last_cpu = $2; last_gpu = $4 }
        END {
            ok = (n == steps && max <= tol && last_cpu < first_cpu - 1.0)
            printf "%s %s: %d steps, max |gpu - cpu| loss %.5f at step %d (tol %s), final cpu %.4f gpu %.4f (start %.4f)\n",
                   ok ? "PASS" : "FAIL", name, n, max, at, tol, last_cpu, last_gpu, first_cpu }'
}

# 1. training parity with the CPU trainer
./train_ssd "${common[@]}" -x 50 > "$work/cpu.log" 2>&1 || { echo "FAIL train_cpu: train_ssd failed"; tail "$work/cpu.log"; }
for build in bf16:./train_ssdcu:0.05 fp32:build/gpu/FP32/train_ssdcu:0.002; do
    IFS=: read -r name bin tol <<< "$build"
    if ! "$bin" "${common[@]}" -x 50 > "$work/gpu_$name.log" 2>&1; then
        echo "FAIL train_parity_$name: $bin failed"
        tail -n 5 "$work/gpu_$name.log"
        continue
    fi
    check_parity "train_parity_$name" "$tol" "$work/cpu.log" "$work/gpu_$name.log" 50
done

# 2. determinism (two identical runs) and exact resume on the GPU
./train_ssdcu "${common[@]}" -x 20 -n 10 -o "$work/full" > "$work/full.log" 2>&1
./train_ssdcu "${common[@]}" -x 20 > "$work/again.log" 2>&1
if [ -n "$(losses "$work/full.log")" ] && [ "$(losses "$work/full.log")" = "$(losses "$work/again.log")" ]; then
    echo "PASS deterministic: two identical 20-step runs give bit-identical losses"
else
    echo "FAIL deterministic: two identical 20-step runs differ: $(paste -d' ' <(losses "$work/full.log") <(losses "$work/again.log") | awk '$2 != $4 {printf "step %s %s vs %s; ", $1, $2, $4}' | head -c 300)"
fi
# activation recomputation: the same losses, bit for bit, from fewer bytes of activations
activation_bytes() { sed -nE 's/^activations .*\(([0-9]+) bytes.*/\1/p' "$1"; }
for level in 1 2; do
    ./train_ssdcu "${common[@]}" -x 20 -r $level > "$work/recompute$level.log" 2>&1
    kept=$(activation_bytes "$work/again.log") recomputed=$(activation_bytes "$work/recompute$level.log")
    if [ -n "$(losses "$work/again.log")" ] && [ "$(losses "$work/again.log")" = "$(losses "$work/recompute$level.log")" ] &&
       [ -n "$kept" ] && [ -n "$recomputed" ] && [ "$recomputed" -lt "$kept" ]; then
        echo "PASS recompute_$level: -r $level gives bit-identical losses over 20 steps; activations $recomputed bytes instead of $kept"
    else
        echo "FAIL recompute_$level: activations $recomputed vs $kept bytes (-r 0); losses differ: $(paste -d' ' <(losses "$work/again.log") <(losses "$work/recompute$level.log") | awk '$2 != $4 {printf "step %s %s vs %s; ", $1, $2, $4}' | head -c 300)"
    fi
done
mkdir -p "$work/resumed"
cp "$work/full"/*00000010* "$work/resumed/"
./train_ssdcu "${common[@]}" -x 20 -n 10 -o "$work/resumed" -y 1 > "$work/resumed.log" 2>&1
full=$(losses "$work/full.log" | awk '$1 > 10')
resumed=$(losses "$work/resumed.log")
if [ -n "$full" ] && [ "$full" = "$resumed" ] && [ "$(echo "$full" | wc -l)" -eq 10 ]; then
    echo "PASS resume_exact: steps 11..20 bit-identical after resuming from step 10 (last: $(echo "$full" | tail -n 1))"
else
    echo "FAIL resume_exact: losses differ after resume: $(paste -d' ' <(echo "$full") <(echo "$resumed") | awk '$2 != $4 {printf "step %s %s vs %s; ", $1, $2, $4}' | head -c 300)"
fi

# 3. full-split evaluation against the CPU trainer, from the step-20 checkpoint of the run above. The
#    FP32 build differs from the CPU only in summation order (1e-5 relative); the bf16 build rounds
#    every activation to 8 bits of mantissa (2^-9 relative), which moves the mean loss by ~1e-3: 1e-2.
model="$work/full/model_00000020.bin"
eval_flags=(-x 0 -j "$shards/*_val_*.bin" -v 1 -m -1 -b 4 -t 64 -g 0)
for carry in 0 1; do
    cpu=$(./train_ssd -e "$model" "${eval_flags[@]}" -ec $carry 2>&1 | grep '^eval val')
    for build in bf16:./train_ssdcu:1e-2 fp32:build/gpu/FP32/train_ssdcu:1e-5; do
        IFS=: read -r name bin tol <<< "$build"
        gpu=$("$bin" -e "$model" "${eval_flags[@]}" -ec $carry 2>&1 | grep '^eval val')
        echo "$cpu|$gpu" | awk -F'|' -v tol="$tol" -v name="eval_parity_${name}_carry$carry" '{
            split($1, c, " "); split($2, g, " ")
            rel = (g[4] - c[4]) / c[4]; if (rel < 0) rel = -rel
            ok = (NF == 2 && c[6] > 0 && c[6] == g[6] && rel <= tol && g[4] == g[4] + 0)
            printf "%s %s: cpu loss %s gpu %s over %s targets: rel diff %.2e (tol %s)\n", ok ? "PASS" : "FAIL", name, c[4], g[4], c[6], rel, tol }'
    done
done

# 4. compute-sanitizer on a tiny model
if command -v compute-sanitizer > /dev/null; then
    for tool in memcheck racecheck; do
        compute-sanitizer --tool $tool --error-exitcode 1 ./train_ssdcu -e configs/ssd-mamba-tiny.json \
            -i "$shards/*_train_*.bin" -b 2 -t 64 -x 2 -v 0 -g 0 > "$work/$tool.log" 2>&1
        status=$?
        summary=$(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$work/$tool.log" | tail -n 1)
        # racecheck reports a shared-memory hazard inside cuBLAS's own split-K kernels (nvjet_*):
        # NVIDIA's code, accepted; any hazard in another kernel fails. (Leaving nvjet out with
        # --kernel-name-exclude makes this compute-sanitizer stop with an internal error instead.)
        races=$(grep -c 'Race reported between' "$work/$tool.log")
        races_outside_cublas=$(grep -A1 'Race reported between' "$work/$tool.log" | grep -E 'access at' | grep -vc 'nvjet_')
        clean=0
        [ $status -eq 0 ] && clean=1
        if [ "$tool" = racecheck ] && grep -q 'RACECHECK SUMMARY' "$work/$tool.log" && ! grep -q 'Internal Sanitizer Error' "$work/$tool.log" &&
           [ "$races_outside_cublas" -eq 0 ] && grep -q '^step     2/2' "$work/$tool.log"; then
            clean=1
            summary="$summary ($races reports, all inside cuBLAS nvjet_* kernels)"
        fi
        if [ $clean = 1 ]; then echo "PASS sanitizer_$tool: ${summary:-clean}"; else
            keep_work=1
            report=$(first_report "$work/$tool.log")
            kernels=$(report_kernels < "$work/$tool.log" | grep -v nvjet_ | paste -sd ';' -)
            echo "FAIL sanitizer_$tool: status $status ${summary}; in kernels: ${kernels:-(none named; see the log)}; whole log: $work/$tool.log"
            echo "${report:-$(tail -n 20 "$work/$tool.log")}"
        fi
    done
else
    echo "FAIL sanitizer: compute-sanitizer not found"
fi

# 5. document boundaries and a carried state: parity with the CPU trainer, then an exact -cs 1 resume. The CPU
#    runs go in the background while the GPU runs.
variants=("db:-db 1" "cs:-cs 1" "dbcs:-db 1 -cs 1")
for variant in "${variants[@]}"; do
    IFS=: read -r tag flags <<< "$variant"
    ./train_ssd "${common[@]}" $flags -x 30 -th 4 > "$work/cpu_$tag.log" 2>&1 &
done
for variant in "${variants[@]}"; do
    IFS=: read -r tag flags <<< "$variant"
    for build in bf16:./train_ssdcu fp32:build/gpu/FP32/train_ssdcu; do
        IFS=: read -r name bin <<< "$build"
        "$bin" "${common[@]}" $flags -x 30 > "$work/gpu_${tag}_$name.log" 2>&1 ||
            { echo "FAIL train_${tag}_$name: $bin $flags failed: $(grep -m 1 error "$work/gpu_${tag}_$name.log")"; }
    done
done
wait
for variant in "${variants[@]}"; do
    IFS=: read -r tag flags <<< "$variant"
    for build in bf16:0.05 fp32:0.002; do
        IFS=: read -r name tol <<< "$build"
        check_parity "train_parity_${tag}_$name ($flags)" "$tol" "$work/cpu_$tag.log" "$work/gpu_${tag}_$name.log" 30
    done
done
grep -q '^document boundaries:' "$work/gpu_db_bf16.log" ||
    echo "FAIL train_db_announced: train_ssdcu -db 1 did not print its end-of-text id"

carried=(-db 1 -cs 1 -x 20 -n 10)
./train_ssdcu "${common[@]}" "${carried[@]}" -o "$work/carry_full" > "$work/carry_full.log" 2>&1
mkdir -p "$work/carry_resumed"
cp "$work/carry_full"/*00000010* "$work/carry_resumed/"
./train_ssdcu "${common[@]}" "${carried[@]}" -o "$work/carry_resumed" -y 1 > "$work/carry_resumed.log" 2>&1
full=$(losses "$work/carry_full.log" | awk '$1 > 10')
resumed=$(losses "$work/carry_resumed.log")
if [ -n "$full" ] && [ "$full" = "$resumed" ] && [ "$(echo "$full" | wc -l)" -eq 10 ]; then
    echo "PASS carry_resume_exact: -db 1 -cs 1 steps 11..20 bit-identical after resuming from step 10"
else
    echo "FAIL carry_resume_exact: losses differ after resume: $(paste -d' ' <(echo "$full") <(echo "$resumed") | awk '$2 != $4 {printf "step %s %s vs %s; ", $1, $2, $4}' | head -c 300)"
fi
build/gpu/FP32/train_ssdcu "${common[@]}" "${carried[@]}" -o "$work/carry_fp32" > "$work/carry_fp32.log" 2>&1
mkdir -p "$work/carry_cpu"
cp "$work/carry_fp32"/*00000010* "$work/carry_cpu/"
./train_ssd "${common[@]}" "${carried[@]}" -o "$work/carry_cpu" -y 1 > "$work/carry_cpu.log" 2>&1
paste <(losses "$work/carry_fp32.log" | awk '$1 > 10') <(losses "$work/carry_cpu.log") | awk '
    { n++; d = $2 - $4; if (d < 0) d = -d; if (d > max) max = d }
    END { ok = (n == 10 && max <= 0.002)
          printf "%s carry_checkpoint_gpu_to_cpu: train_ssd resumed the FP32 GPU step-10 checkpoint with -cs 1: %d steps, max |loss diff| %.5f (tol 0.002)\n",
                 ok ? "PASS" : "FAIL", n, max }'

# 6. headdim 40 (padded to 48 by the scan's adapter), d_state 48 (padded to 64), two groups
for a in scalar diagonal; do
    printf '{"name":"headdim40-%s","d_model":120,"n_layer":2,"vocab_size":50257,"pad_vocab_multiple":16,"d_state":48,"d_conv":4,"expand":2,"headdim":40,"ngroups":2,"chunk_size":64,"a_structure":"%s"}' \
        "$a" "$a" > "$work/headdim40_$a.json"
    odd=(-e "$work/headdim40_$a.json" "${common[@]:2}" -db 1 -x 30)
    ./train_ssd "${odd[@]}" -th 4 > "$work/cpu_hd40_$a.log" 2>&1 &
    for build in bf16:./train_ssdcu:0.05 fp32:build/gpu/FP32/train_ssdcu:0.002; do
        IFS=: read -r name bin tol <<< "$build"
        "$bin" "${odd[@]}" > "$work/gpu_hd40_${a}_$name.log" 2>&1 ||
            echo "FAIL train_headdim40_${a}_$name: $bin failed: $(grep -m 1 error "$work/gpu_hd40_${a}_$name.log")"
    done
    wait
    for build in bf16:0.05 fp32:0.002; do
        IFS=: read -r name tol <<< "$build"
        check_parity "train_parity_headdim40_dstate48_${a}_$name" "$tol" "$work/cpu_hd40_$a.log" "$work/gpu_hd40_${a}_$name.log" 30
    done
    if command -v compute-sanitizer > /dev/null; then
        compute-sanitizer --tool memcheck --error-exitcode 1 ./train_ssdcu -e "$work/headdim40_$a.json" \
            -i "$shards/*_train_*.bin" -b 2 -t 64 -x 2 -v 0 -g 0 -db 1 > "$work/memcheck_hd40_$a.log" 2>&1
        status=$?
        summary=$(grep 'ERROR SUMMARY' "$work/memcheck_hd40_$a.log" | tail -n 1)
        if [ $status -eq 0 ] && grep -q '^step     2/2' "$work/memcheck_hd40_$a.log"; then
            echo "PASS sanitizer_memcheck_headdim40_$a: $summary"
        else
            keep_work=1
            echo "FAIL sanitizer_memcheck_headdim40_$a: status $status $summary; whole log: $work/memcheck_hd40_$a.log"
            report=$(first_report "$work/memcheck_hd40_$a.log")
            echo "${report:-$(tail -n 20 "$work/memcheck_hd40_$a.log")}"
        fi
    fi
done
