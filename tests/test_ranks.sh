#!/usr/bin/env bash
# The multi-rank training loop on CPUs: train_ssd's ranks over MPI (mpirun, Open MPI), each with one
# OpenMP thread. Checks, on a tiny byte-level model on Tiny Shakespeare:
#  - 2 ranks x B equal 1 rank x B with 2-fold accumulation (same rows per step): losses and the final
#    parameters within 1e-5 relative (fp32; the two sum the same two micro-batch gradients, so they
#    are expected to agree to rounding, measured exactly equal);
#  - ZeRO-1 (-z 1) against the plain all-reduce (norm summed per shard: rounding only, 1e-5);
#  - save at step 6 on 2 ranks; resume on 2 (bit-exact steps 7-12 and final model file), on 1
#    (resharded optimizer state; 1e-5); ZeRO-1 shards of 2 ranks resumed by 1 plain rank; a resume
#    with another total batch refused;
#  - full-split evaluation on 2 ranks equals 1 rank exactly (per-forward sums added in one order);
#  - only rank 0 prints and writes main.log and the model file; every rank writes its state file;
#  - -d that does not divide into B*T*ranks is refused with the nearest valid values;
#  - a rank killed (SIGKILL) or stopped (SIGSTOP, a hang) mid-run: the run ends non-zero within 30 s,
#    the stopped rank named by the watchdog (-to 3), and the last checkpoint loads.
source "$(dirname "$0")/common.sh"

if ! command -v mpirun > /dev/null; then
    fail "mpi_present" "mpirun not found: install Open MPI (apt-get install openmpi-bin libopenmpi-dev)"
    exit 1
fi
if ! ./train_ssd -h > /dev/null || ! nm train_ssd 2> /dev/null | grep -q MPI_Init; then
    fail "mpi_build" "train_ssd was built without MPI (no mpicc at build time)"
    exit 1
fi
# as root in containers: Open MPI needs the first two; shared-memory copies across processes may be barred
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
mpi() { local np="$1"; shift; mpirun --oversubscribe -np "$np" "$@"; }

python3 scripts/prepro.py --tokenizer bytes --input ../shared/data/tinyshakespeare/input.txt --out "$work/data" > "$work/prep.log" 2>&1 ||
    { fail "prepare_data" "$(tail -3 "$work/prep.log")"; exit 1; }
printf '{"name":"ranks-test","d_model":32,"n_layer":2,"vocab_size":256,"pad_vocab_multiple":8,"d_state":8,"d_conv":4,"expand":2,"headdim":16,"ngroups":1,"chunk_size":16}' > "$work/model.json"
common=(-e "$work/model.json" -i "$work/data/*_train_*.bin" -j "$work/data/*_val_*.bin" -b 4 -t 64 -d 512
        -l 3e-3 -u 2 -v 0 -g 0 -th 1 -x 12)

steps() { grep -E '^step +[0-9]+/' "$1" | sed -E 's/ \| [0-9.]+ ms.*//'; }
# max relative difference of the step losses of two logs (inf if a log has no steps or they differ in count)
loss_diff() {
    paste <(steps "$1" | sed -E 's/.*loss ([0-9.]+).*/\1/') <(steps "$2" | sed -E 's/.*loss ([0-9.]+).*/\1/') |
        awk 'NF != 2 { bad = 1 } { d = ($1 - $2) / $2; if (d < 0) d = -d; if (d > m) m = d; n++ }
             END { if (bad || n == 0) print "inf"; else printf "%.3g\n", m }'
}
# max |a - b| / max |b| over all parameters of two model files
param_diff() {
    python3 - "$1" "$2" <<'PY'
import sys
sys.path.insert(0, "scripts")
import numpy as np
from ssd_model_file import read_model_file
try:
    a, b = (np.concatenate([t.ravel() for t in read_model_file(p)[1].values()]) for p in sys.argv[1:])
    print("%.3g" % (np.abs(a - b).max() / np.abs(b).max()) if np.all(np.isfinite(a)) and np.all(np.isfinite(b)) else "inf")
except Exception as e:
    print("inf", e)
PY
}
within() { awk -v d="$1" -v t="$2" 'BEGIN { exit !(d != "inf" && d + 0 <= t + 0) }'; }

# ---- 2 ranks x B == 1 rank x B x 2 micro-batches ----
./train_ssd "${common[@]}" -n 12 -o "$work/one" > "$work/one.log" 2>&1 || fail "one_rank_run" "$(tail -3 "$work/one.log")"
mpi 2 ./train_ssd "${common[@]}" -n 12 -o "$work/two" > "$work/two.log" 2>&1 || fail "two_rank_run" "$(tail -3 "$work/two.log")"
d=$(loss_diff "$work/one.log" "$work/two.log"); p=$(param_diff "$work/two/model_00000012.bin" "$work/one/model_00000012.bin")
if grep -q "grad accum 2" "$work/one.log" && grep -q "ranks 2 | grad accum 1" "$work/two.log" && within "$d" 1e-5 && within "$p" 1e-5; then
    pass "ranks2_equal_accum2" "12 steps: losses max rel diff $d, final parameters $p (tolerance 1e-5)"
else
    fail "ranks2_equal_accum2" "losses $d, parameters $p; $(tail -2 "$work/two.log")"
fi

# ---- only rank 0 speaks and writes the model; every rank its state ----
n_step1=$(grep -cE '^step +1/12' "$work/two.log")
if [ "$n_step1" = 1 ] && [ "$(ls "$work/two" | grep -c '^model_')" = 1 ] && [ -f "$work/two/main.log" ] &&
   [ -f "$work/two/state_00000012_00000.bin" ] && [ -f "$work/two/state_00000012_00001.bin" ] &&
   grep -q "world_size 2" "$work/two/DONE_00000012"; then
    pass "rank0_writes" "one step line per step, one model file and main.log; state files of ranks 0 and 1; DONE names 2 ranks"
else
    fail "rank0_writes" "step-1 lines $n_step1; files: $(ls "$work/two" | tr '\n' ' ')"
fi

# ---- ZeRO-1 == plain all-reduce ----
mpi 2 ./train_ssd "${common[@]}" -z 1 -n 12 -o "$work/zero" > "$work/zero.log" 2>&1 || fail "zero_run" "$(tail -3 "$work/zero.log")"
d=$(loss_diff "$work/zero.log" "$work/two.log"); p=$(param_diff "$work/zero/model_00000012.bin" "$work/two/model_00000012.bin")
if grep -q "ZeRO-1" "$work/zero.log" && within "$d" 1e-5 && within "$p" 1e-5; then
    pass "zero1_equals_allreduce" "2 ranks, 12 steps: losses max rel diff $d, final parameters $p (tolerance 1e-5)"
else
    fail "zero1_equals_allreduce" "losses $d, parameters $p; $(tail -2 "$work/zero.log")"
fi

# ---- save at step 6 on 2 ranks; resume on 2 (exact), on 1 (resharded) ----
mpi 2 ./train_ssd "${common[@]}" -x 12 -n 6 -o "$work/half" > "$work/half.log" 2>&1
rm -f "$work/half/DONE_00000012" "$work/half/model_00000012.bin" "$work/half"/state_00000012_*.bin
cp -r "$work/half" "$work/half_one"
cp -r "$work/half" "$work/half_three"
mpi 2 ./train_ssd "${common[@]}" -n 6 -y 1 -o "$work/half" > "$work/resume2.log" 2>&1
if grep -q "resumed from .* at step 6$" "$work/resume2.log" && [ "$(steps "$work/two.log" | tail -6)" = "$(steps "$work/resume2.log")" ] &&
   cmp -s "$work/two/model_00000012.bin" "$work/half/model_00000012.bin"; then
    pass "resume_2_on_2_exact" "steps 7-12 bit-identical, model_00000012.bin byte-identical"
else
    fail "resume_2_on_2_exact" "$(steps "$work/resume2.log" | tail -1) vs $(steps "$work/two.log" | tail -1); $(tail -2 "$work/resume2.log")"
fi
./train_ssd "${common[@]}" -n 6 -y 1 -o "$work/half_one" > "$work/resume1.log" 2>&1
d=$(loss_diff "$work/resume1.log" <(steps "$work/two.log" | tail -6)); p=$(param_diff "$work/half_one/model_00000012.bin" "$work/two/model_00000012.bin")
if grep -q "written by 2 ranks, optimizer state resharded for 1" "$work/resume1.log" && within "$d" 1e-5 && within "$p" 1e-5; then
    pass "resume_2_on_1_resharded" "steps 7-12 losses max rel diff $d, final parameters $p (tolerance 1e-5)"
else
    fail "resume_2_on_1_resharded" "losses $d, parameters $p; $(tail -2 "$work/resume1.log")"
fi
mpi 2 ./train_ssd "${common[@]}" -z 1 -x 12 -n 6 -o "$work/zhalf" > "$work/zhalf.log" 2>&1
rm -f "$work/zhalf/DONE_00000012" "$work/zhalf/model_00000012.bin" "$work/zhalf"/state_00000012_*.bin
cp -r "$work/zhalf" "$work/zhalf3"
./train_ssd "${common[@]}" -n 6 -y 1 -o "$work/zhalf" > "$work/zresume1.log" 2>&1
d=$(loss_diff "$work/zresume1.log" <(steps "$work/zero.log" | tail -6)); p=$(param_diff "$work/zhalf/model_00000012.bin" "$work/zero/model_00000012.bin")
if grep -q "resharded for 1" "$work/zresume1.log" && within "$d" 1e-5 && within "$p" 1e-5; then
    pass "resume_zero1_on_1" "ZeRO-1 shards of 2 ranks resumed by 1 plain rank: losses $d, parameters $p (tolerance 1e-5)"
else
    fail "resume_zero1_on_1" "losses $d, parameters $p; $(tail -2 "$work/zresume1.log")"
fi
out=$(mpi 3 ./train_ssd "${common[@]}" -d 768 -n 6 -y 1 -o "$work/zhalf3" 2>&1); s=$?
if [ $s -ne 0 ] && grep -q "total_batch_size" <<< "$out"; then
    pass "resume_other_batch_refused" "3 ranks need -d 768, refused: $(grep -m1 -o 'error.*' <<< "$out" | cut -c1-160)"
else
    fail "resume_other_batch_refused" "exit $s: $(tail -2 <<< "$out")"
fi

# ---- full-split evaluation: 2 ranks == 1 rank, fresh and carried ----
ev=(-e "$work/two/model_00000012.bin" -x 0 -v 1 -m -1 -j "$work/data/*_val_*.bin" -b 4 -t 64 -g 0 -th 1)
for carry in 0 1; do
    ./train_ssd "${ev[@]}" -ec $carry > "$work/eval1.log" 2>&1
    mpi 2 ./train_ssd "${ev[@]}" -ec $carry > "$work/eval2.log" 2>&1
    one=$(grep '^eval val' "$work/eval1.log"); two=$(grep '^eval val' "$work/eval2.log")
    if [ -n "$one" ] && [ "$one" = "$two" ]; then
        pass "eval_split_ranks2_carry$carry" "identical: $one"
    else
        fail "eval_split_ranks2_carry$carry" "1 rank '$one', 2 ranks '$two'"
    fi
done

# ---- -d that does not divide into B*T*ranks ----
out=$(mpi 2 ./train_ssd "${common[@]}" -d 640 2>&1); s=$?
if [ $s -ne 0 ] && grep -q "nearest valid values are 512 and 1024" <<< "$out"; then
    pass "total_batch_refused" "exit $s: $(grep -m1 -o 'error: .*' <<< "$out")"
else
    fail "total_batch_refused" "exit $s: $(tail -3 <<< "$out")"
fi

# ---- a rank killed, a rank stopped: the run ends and names it; the last checkpoint loads ----
rank_pid() {  # the pid of train_ssd rank $2 of the run writing to $1
    local p
    for p in $(pgrep -f "train_ssd .*$1"); do
        tr '\0' '\n' < "/proc/$p/environ" 2> /dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2" && echo "$p"
    done
}
for signal in KILL STOP; do
    rm -rf "$work/fail"
    mpi 2 ./train_ssd "${common[@]}" -x 100000 -n 5 -to 3 -o "$work/fail" > "$work/fail.log" 2>&1 &
    job=$!
    for _ in $(seq 1 300); do [ -f "$work/fail/DONE_00000005" ] && break; sleep 0.1; done
    victim=$(rank_pid "$work/fail" 1)
    start=$SECONDS
    [ -n "$victim" ] && kill -"$signal" "$victim"
    for _ in $(seq 1 300); do kill -0 $job 2> /dev/null || break; sleep 0.1; done
    took=$((SECONDS - start))
    kill -9 $job "$victim" 2> /dev/null
    wait $job; status=$?
    latest=$(ls "$work/fail" | sed -n 's/^DONE_0*\([0-9][0-9]*\)$/\1/p' | sort -n | tail -1)
    model=$(printf '%s/fail/model_%08d.bin' "$work" "${latest:-0}")
    named=1
    [ "$signal" = STOP ] && ! grep -q "error: rank 1 failed" "$work/fail.log" && named=0
    if [ -n "$victim" ] && [ $status -ne 0 ] && [ $took -le 30 ] && [ $named = 1 ] &&
       ./train_ssd -e "$model" -x 0 -j "$work/data/*_val_*.bin" -v 1 -m 2 -b 4 -t 64 -g 0 -th 1 > /dev/null 2>&1; then
        pass "rank_$signal" "run ended with status $status $took s after rank 1 got SIG$signal; $(grep -m1 -o 'error: rank 1 failed.*' "$work/fail.log" | cut -c1-80); checkpoint of step $latest loads"
    else
        fail "rank_$signal" "victim '$victim', status $status after $took s: $(tail -n 3 "$work/fail.log")"
    fi
done
