#!/usr/bin/env bash
# Hostile input and faults (issue #17): every case the fuzzing of train_ssd found, each a check here.
#  - crashes: a width-1 conv in generation; chunk_size, pad_vocab_multiple and expand of 2^31-1; -th 100000;
#  - hangs: chunk_size 2147483583; a shard glob, config, tokenizer or state file that is a named pipe;
#  - silent wrong results: -x, -b, -d of 2^32 and more; -m 0; a tiny dt_min, a huge dt_init_floor, -l inf;
#    a model or state file holding NaN with valid checksums; a fresh run into an output dir that holds a run;
#  - non-finite steps are skipped and logged, -nf in a row stop the run (exit 3), the last checkpoint intact;
#  - every refusal names the flag or field, the value and the range; sizes a config implies are checked
#    against the machine's memory before anything is allocated;
#  - SIGINT, SIGTERM, SIGUSR1 stop after a step with a checkpoint (exit 75), and the resumed run ends with
#    the losses of an uninterrupted one; with 2 MPI ranks a signal to one rank stops both at the same step;
#  - scripts/compare.py stops the trainers it started when it is stopped;
#  - a short fixed-seed pass of the fuzz harness (tests/fuzz/fuzz.py) on the sanitizer build.
source "$(dirname "$0")/common.sh"

# ---- tiny data, tokenizer and model ----
python3 - "$work" <<'PY'
import json, random, struct, sys
work = sys.argv[1]
rng = random.Random(7)
def shard(path, n, version=1):
    header = [20240520, version, n] + [0] * 253
    fmt = "<%dH" if version == 1 else "<%dI"
    open(path, "wb").write(struct.pack("<256i", *header) + struct.pack(fmt % n, *[rng.randrange(32) for _ in range(n)]))
shard(work + "/d_train_000000.bin", 4000)
shard(work + "/d_val_000000.bin", 600)
tok = struct.pack("<256i", *([20251123, 1, 32, -1, 0] + [0] * 251))
for i in range(32):
    tok += struct.pack("<I", 1) + bytes([97 + i % 26])
open(work + "/tokenizer.bin", "wb").write(tok)
PY
base='"d_model":8,"n_layer":1,"vocab_size":32,"pad_vocab_multiple":8,"d_state":4,"d_conv":4,"expand":2,"headdim":4,"ngroups":1,"chunk_size":4'
printf '{%s}' "$base" > "$work/model.json"
common=(-e "$work/model.json" -i "$work/d_train_*.bin" -j "$work/d_val_*.bin" -b 2 -t 16 -v 0 -g 0 -th 1)

# run NAME EXPECTED_STATUS PATTERN ARGS...: a run within 20 s that exits EXPECTED_STATUS with PATTERN in its output
run() {
    local name="$1" expect="$2" pattern="$3"
    shift 3
    local out status
    out=$(timeout 20 ./train_ssd "$@" 2>&1)
    status=$?
    if [ "$status" = "$expect" ] && grep -qE -- "$pattern" <<< "$out"; then
        pass "$name" "exit $status: $(grep -m1 -E -- "$pattern" <<< "$out" | cut -c1-200)"
    else
        fail "$name" "exit $status (expected $expect, 124 is the time limit), wanted /$pattern/: $(tail -3 <<< "$out")"
    fi
}
config() { printf '{%s}' "${base/$1/$2}" > "$work/c.json"; }

# ---- crashes ----
config '"d_conv":4' '"d_conv":1'
run "d_conv_1_generation" 0 '^generating:' "${common[@]}" -e "$work/c.json" -x 2 -g 16 -tk "$work/tokenizer.bin"
config '"chunk_size":4' '"chunk_size":2147483647'
run "chunk_size_int_max" 1 "'chunk_size' must be an integer in \[1, 65536\] \(got 2147483647\)" "${common[@]}" -e "$work/c.json" -x 1
config '"pad_vocab_multiple":8' '"pad_vocab_multiple":2147483647'
run "pad_vocab_multiple_int_max" 1 "'pad_vocab_multiple' must be an integer in \[1, 65536\] \(got 2147483647\)" "${common[@]}" -e "$work/c.json" -x 1
config '"expand":2' '"expand":2147483647'
run "expand_int_max" 1 "'expand' must be an integer in \[1, 64\] \(got 2147483647\)" "${common[@]}" -e "$work/c.json" -x 1
run "threads_100000" 1 "bad value '100000' for -th \(expected an integer in \[0, 1024\]\)" "${common[@]}" -th 100000 -x 1
SSD_EVAL_PROGRESS_SECONDS=inf run "eval_progress_inf_refused" 1 "SSD_EVAL_PROGRESS_SECONDS='inf' is not a finite number" \
    "${common[@]}" -x 0 -v 1 -m -1
# in range, each, but too much together: the derived size is refused before anything is allocated
config '"expand":2' '"expand":64,"d_model":65536'
run "derived_size_refused" 1 "d_inner = expand\*d_model = 64\*65536 = 4194304 exceeds 1048576" "${common[@]}" -e "$work/c.json" -x 1
config '"d_model":8' '"d_model":32768,"expand":32,"headdim":64'
run "memory_refused" 1 "needs [0-9.e+]+ GiB of memory, more than this machine's" "${common[@]}" -e "$work/c.json" -x 1
# a float too large for an int: refused, not converted (undefined behaviour)
config '"d_model":8' '"d_model":1e300'
run "float_to_int_refused" 1 "'d_model' must be an integer in \[1, 65536\] \(got 1e\+300\)" "${common[@]}" -e "$work/c.json" -x 1

# ---- hangs ----
config '"chunk_size":4' '"chunk_size":2147483583'
run "chunk_size_huge_no_hang" 1 "'chunk_size' must be an integer" "${common[@]}" -e "$work/c.json" -x 1
config '"chunk_size":4' '"chunk_size":65536'
run "chunk_size_above_T" 0 "^step +2/2" "${common[@]}" -e "$work/c.json" -x 2
mkdir -p "$work/pipes" "$work/dir.json"
mkfifo "$work/pipes/d_train_000001.bin" "$work/pipe.json" "$work/pipe.tok"
run "shard_fifo_refused" 1 "pipes/d_train_000001.bin: is a named pipe, not a regular file" "${common[@]}" -i "$work/pipes/*.bin" -x 1
run "config_fifo_refused" 1 "'$work/pipe.json' is a named pipe, not a regular file" "${common[@]}" -e "$work/pipe.json" -x 1
run "config_dir_refused" 1 "'$work/dir.json' is a directory, not a regular file" "${common[@]}" -e "$work/dir.json" -x 1
ln -s /dev/zero "$work/zero.json"
run "config_device_refused" 1 "'$work/zero.json' is a device, not a regular file" "${common[@]}" -e "$work/zero.json" -x 1
run "tokenizer_fifo_refused" 1 "tokenizer '$work/pipe.tok' is a named pipe" "${common[@]}" -x 1 -g 4 -tk "$work/pipe.tok"

# ---- flags: no wrap-around, no non-finite value; each refusal names the flag, the value and the range ----
run "steps_2^32" 1 "bad value '4294967296' for -x \(expected an integer in \[-1, 1000000000\]\)" "${common[@]}" -x 4294967296
run "batch_2^32+1" 1 "bad value '4294967297' for -b \(expected an integer in \[1, 65536\]\)" "${common[@]}" -b 4294967297
run "total_batch_2^64" 1 "bad value '18446744073709551616' for -d" "${common[@]}" -d 18446744073709551616
run "total_batch_accumulation" 1 "-d 35184372088832 is 1099511627776 micro-batches of B\*T\*ranks = 32 per step, more than 1048576" "${common[@]}" -d 35184372088832 -x 1
run "total_batch_below_micro_batch" 1 "total batch size -d 16 is not a multiple of B\*T\*ranks = 2\*16\*1 = 32; the nearest valid value is 32" "${common[@]}" -d 16 -x 1
run "val_batches_0" 1 "bad value '0' for -m \(expected -1 or an integer in \[1, 1000000000\]\)" "${common[@]}" -m 0
run "lr_inf" 1 "bad value 'inf' for -l \(expected a finite number in \[0, 10\]\)" "${common[@]}" -l inf
run "lr_nan" 1 "bad value 'nan' for -l" "${common[@]}" -l nan
run "seed_2^32" 1 "bad value '4294967296' for -R \(expected an integer in \[0, 2147483647\]\)" "${common[@]}" -R 4294967296
run "micro_batch_tokens" 1 "-b 65536 x -t 1048576 = 68719476736 tokens per micro-batch, more than 16777216" "${common[@]}" -b 65536 -t 1048576
config '"d_model":8' '"d_model":8,"dt_min":1e-46'
run "dt_min_tiny" 1 "'dt_min' must be a number in \[1e-06, 10\] \(got 1e-46\)" "${common[@]}" -e "$work/c.json" -x 1
config '"d_model":8' '"d_model":8,"dt_init_floor":1e38'
run "dt_init_floor_huge" 1 "'dt_init_floor' must be a number in \[1e-12, 10\] \(got 1e\+38\)" "${common[@]}" -e "$work/c.json" -x 1
if ./train_ssd -h | grep -q -- "-nf <int>" && ./train_ssd -h | grep -q -- "-ow <0|1>" && ./train_ssd -h | grep -q "exit status"; then
    pass "help_documents" "-h lists -nf, -ow, the ranges and the exit statuses"
else
    fail "help_documents" "-h lacks -nf, -ow or the exit statuses"
fi

# ---- non-finite steps: skipped and logged; -nf in a row stop the run, the last checkpoint intact ----
./train_ssd "${common[@]}" -x 40 -l 10 -c 100 -C 0 -n 2 -nf 3 -o "$work/diverge" > "$work/diverge.log" 2>&1; s=$?
if [ $s = 3 ] && grep -q "skipped: not finite, no update (3 in a row of -nf 3)" "$work/diverge.log" &&
   [ "$(grep -c ' skip loss:' "$work/diverge/main.log")" = 3 ] && [ "$(ls "$work/diverge" | grep -c '^DONE_')" -ge 1 ] &&
   ./train_ssd "${common[@]}" -e "$work/diverge/$(ls "$work/diverge" | grep '^model_' | tail -1)" -x 0 > /dev/null 2>&1; then
    pass "nonfinite_steps_stop" "exit 3 after 3 skipped steps, 3 skip lines in main.log, the last checkpoint loads"
else
    fail "nonfinite_steps_stop" "exit $s: $(grep -E 'skipped|error' "$work/diverge.log" | tail -3)"
fi

# ---- model and state files holding NaN with valid checksums: refused, naming the tensor ----
./train_ssd "${common[@]}" -x 4 -n 4 -o "$work/ckpt" > "$work/ckpt.log" 2>&1 || fail "checkpoint_run" "$(tail -3 "$work/ckpt.log")"
python3 - "$work" <<'PY'
import shutil, struct, sys, zlib
work = sys.argv[1]
crc = lambda b: zlib.crc32(b) & 0xFFFFFFFF
model = bytearray(open(work + "/ckpt/model_00000004.bin", "rb").read())
json_bytes = struct.unpack_from("<I", model, 112)[0]
start = 128 + json_bytes
for i in range(start, len(model), 4):
    struct.pack_into("<I", model, i, 0x7FC00000)  # every value NaN
struct.pack_into("<I", model, 116, crc(bytes(model[start:])))
struct.pack_into("<I", model, 124, crc(bytes(model[:124]) + bytes(model[128:start])))
open(work + "/nan_model.bin", "wb").write(model)
shutil.copytree(work + "/ckpt", work + "/nanstate")
path = work + "/nanstate/state_00000004_00000.bin"
state = bytearray(open(path, "rb").read())
config_bytes, settings_bytes = struct.unpack_from("<II", state, 80)
data = 104 + config_bytes + settings_bytes
count = struct.unpack_from("<Q", state, 64)[0]
struct.pack_into("<f", state, data + 4 * (count + 5), float("inf"))  # v[5]: the second moments of wte
struct.pack_into("<I", state, 88, crc(bytes(state[data:])))
struct.pack_into("<I", state, 96, crc(bytes(state[:96]) + bytes(state[104:data])))
open(path, "wb").write(state)
PY
run "model_file_nan_refused" 1 "nan_model.bin: tensor 'wte' holds a non-finite value \(nan at element 0\)" "${common[@]}" -e "$work/nan_model.bin" -x 0
run "state_file_nan_refused" 1 "state_00000004_00000.bin: the second moments of tensor 'wte' hold a non-finite or negative value at element 5" \
    "${common[@]}" -x 4 -n 4 -o "$work/nanstate" -y 1
mkdir -p "$work/pipestate" && cp "$work/ckpt"/* "$work/pipestate/" && rm "$work/pipestate/state_00000004_00000.bin" &&
    mkfifo "$work/pipestate/state_00000004_00000.bin"
run "state_file_fifo_refused" 1 "state file '.*state_00000004_00000.bin' is a named pipe" "${common[@]}" -x 4 -n 4 -o "$work/pipestate" -y 1

# ---- output dirs: a fresh run into a run's directory is refused (nothing changes), -y 1 resumes, -ow 1 replaces ----
before=$(cd "$work/ckpt" && ls -l --time-style=+%s.%N . && md5sum ./*)
run "output_dir_refused" 1 "output dir -o $work/ckpt already holds a run \(.*\): resume it with -y 1, replace it with -ow 1" \
    "${common[@]}" -x 4 -o "$work/ckpt"
run "output_dir_eval_only_refused" 1 "already holds a run" "${common[@]}" -x 0 -o "$work/ckpt"
after=$(cd "$work/ckpt" && ls -l --time-style=+%s.%N . && md5sum ./*)
if [ "$before" = "$after" ]; then pass "output_dir_untouched" "the refused runs left every file of the old run as it was"; else fail "output_dir_untouched" "the old run's files changed"; fi
run "output_dir_resume" 0 "resumed from .* at step 4" "${common[@]}" -x 4 -n 4 -o "$work/ckpt" -y 1
run "output_dir_overwrite" 0 "-ow 1: deleted the run in" "${common[@]}" -x 2 -n 2 -o "$work/ckpt" -ow 1
if [ ! -e "$work/ckpt/DONE_00000004" ] && [ -e "$work/ckpt/DONE_00000002" ] && [ "$(grep -c trl "$work/ckpt/main.log")" = 2 ]; then
    pass "output_dir_overwritten" "-ow 1: the old checkpoints are gone, main.log is the new run's"
else
    fail "output_dir_overwritten" "$(ls "$work/ckpt" | tr '\n' ' ')"
fi
run "resume_and_overwrite_refused" 1 "give one of them" "${common[@]}" -x 2 -o "$work/ckpt" -ow 1 -y 1

# ---- signals: stop after a step with a checkpoint, exit 75; resuming ends as an uninterrupted run ----
long=("${common[@]}" -t 256 -x 60)
./train_ssd "${long[@]}" > "$work/straight.log" 2>&1 || fail "straight_run" "$(tail -3 "$work/straight.log")"
steps() { grep -E '^step +[0-9]+/' "$@" | sed -E 's/ \| [0-9.]+ ms.*//'; }
# wait_for FILE PATTERN: until PATTERN is in FILE (at most 20 s)
wait_for() { for _ in $(seq 2000); do grep -qE -- "$2" "$1" 2> /dev/null && return 0; sleep 0.01; done; return 1; }
for sig in TERM INT USR1; do
    rm -rf "$work/sig" "$work/sig1.log" # the log is new: the signal goes only to a trainer that has started
    ./train_ssd "${long[@]}" -o "$work/sig" > "$work/sig1.log" 2>&1 &
    pid=$!
    wait_for "$work/sig1.log" '^step +3/'
    kill -s "$sig" "$pid"
    wait "$pid"
    s=$?
    ./train_ssd "${long[@]}" -o "$work/sig" -y 1 > "$work/sig2.log" 2>&1
    s2=$?
    stopped=$(grep -oE 'stopped by a signal after step [0-9]+' "$work/sig1.log")
    if [ $s = 75 ] && [ -n "$stopped" ] && [ "${stopped##* }" -lt 60 ] && [ $s2 = 0 ] && grep -q "resumed from" "$work/sig2.log" &&
       [ "$(steps "$work/straight.log")" = "$(steps "$work/sig1.log" "$work/sig2.log" | sed 's/^[^:]*://')" ]; then
        pass "signal_$sig" "exit 75, $stopped, checkpointed; the resumed run's 60 steps equal an uninterrupted run's"
    else
        fail "signal_$sig" "exit $s then $s2 ($stopped): $(tail -2 "$work/sig1.log") / $(tail -2 "$work/sig2.log")"
    fi
done
# no -o: the run stops after the step, without a checkpoint
./train_ssd "${long[@]}" > "$work/sig3.log" 2>&1 &
pid=$!
wait_for "$work/sig3.log" '^step +3/'
kill -s TERM "$pid"
wait "$pid"
s=$?
if [ $s = 75 ] && grep -qE "stopped by a signal after step [0-9]+; resume with -y 1" "$work/sig3.log"; then
    pass "signal_no_output_dir" "exit 75 without a checkpoint"
else
    fail "signal_no_output_dir" "exit $s: $(tail -2 "$work/sig3.log")"
fi

# ---- two MPI ranks: a signal to one rank stops both after the same step ----
if command -v mpirun > /dev/null && nm train_ssd 2> /dev/null | grep -q MPI_Init; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
    ranks=("${common[@]}" -t 128 -x 40)
    mpirun --oversubscribe -np 2 ./train_ssd "${ranks[@]}" > "$work/mpi_straight.log" 2>&1
    mpirun --oversubscribe -np 2 ./train_ssd "${ranks[@]}" -o "$work/mpi" > "$work/mpi1.log" 2>&1 &
    mpirun_pid=$!
    wait_for "$work/mpi1.log" '^step +3/'
    rank1=$(ps -o pid= --ppid "$mpirun_pid" | sort -n | tail -1)
    kill -s TERM $rank1
    wait "$mpirun_pid"
    s=$?
    done_file=$(ls "$work/mpi" | grep '^DONE_' | tail -1)
    state_files=$(ls "$work/mpi" | grep -c "^state_${done_file#DONE_}_0000[01].bin")
    mpirun --oversubscribe -np 2 ./train_ssd "${ranks[@]}" -o "$work/mpi" -y 1 > "$work/mpi2.log" 2>&1
    s2=$?
    if [ $s = 75 ] && [ -n "$done_file" ] && [ "${done_file#DONE_}" != 00000040 ] && grep -q "world_size 2" "$work/mpi/$done_file" &&
       [ "$state_files" = 2 ] && [ $s2 = 0 ] &&
       [ "$(steps "$work/mpi_straight.log")" = "$(steps "$work/mpi1.log" "$work/mpi2.log" | sed 's/^[^:]*://')" ]; then
        pass "signal_two_ranks" "SIGTERM to one rank: both ranks stopped at ${done_file#DONE_} (exit 75, both state files); resumed = uninterrupted"
    else
        fail "signal_two_ranks" "exit $s then $s2, marker '$done_file': $(grep -E 'stopped|error' "$work/mpi1.log" | head -3)"
    fi
else
    fail "signal_two_ranks" "needs mpirun and an MPI build of train_ssd (apt-get install openmpi-bin libopenmpi-dev)"
fi

# ---- scripts/compare.py stops the trainers it started ----
mkdir -p "$work/cmp"
cp "$work/d_train_000000.bin" "$work/cmp/c_train_000000.bin"
cp "$work/d_val_000000.bin" "$work/cmp/c_val_000000.bin"
cp "$work/d_val_000000.bin" "$work/cmp/c_test_000000.bin"
cp "$work/tokenizer.bin" "$work/cmp/tokenizer.bin"
printf '{"name":"a",%s,"a_structure":"scalar"}' "$base" > "$work/cmp_a.json"
printf '{"name":"b",%s,"a_structure":"diagonal"}' "$base" > "$work/cmp_b.json"
python3 scripts/compare.py --data "$work/cmp" --configs "$work/cmp_a.json" "$work/cmp_b.json" --out "$work/cmp_out" \
    --seeds 3 --steps 100000 --batch 2 --seq-len 64 --threads 1 --raw "$work/none" --progress-every 1 > "$work/cmp.log" 2>&1 &
cmp_pid=$!
wait_for "$work/cmp.log" 'step [0-9]+/100000'
trainer=$(ps -o pid= --ppid "$cmp_pid" | head -1 | tr -d ' ')
kill -s TERM "$cmp_pid"
wait "$cmp_pid"
s=$?
run_dir=$(ls -d "$work/cmp_out/runs"/* | head -1)
if [ $s = 143 ] && [ -n "$trainer" ] && ! kill -0 "$trainer" 2> /dev/null && grep -q "stopped by a signal" "$run_dir"/train_0.log &&
   ls "$run_dir" | grep -q '^DONE_'; then
    pass "compare_stops_trainers" "SIGTERM to compare.py: its trainer (pid $trainer) checkpointed and exited, compare.py exit 143"
else
    fail "compare_stops_trainers" "exit $s, trainer '$trainer' $(kill -0 "$trainer" 2> /dev/null && echo still running): $(tail -3 "$work/cmp.log")"
    [ -n "$trainer" ] && kill "$trainer" 2> /dev/null
fi

# ---- a short fixed-seed pass of the fuzz harness on the sanitizer build ----
if [ -x build/asan/train_ssd ]; then
    out=$(python3 tests/fuzz/fuzz.py --binary build/asan/train_ssd --cases 400 --seed 17 --jobs 2 --timeout 60 --out "$work/findings" 2>&1)
    s=$?
    summary=$(tail -1 <<< "$out")
    if [ $s = 0 ] && grep -qE '^cases 400 crashes 0 hangs 0 sanitizer 0 nan_exit_0 0 wrapped 0 silent 0 wrong 0' <<< "$summary"; then
        pass "fuzz_short_pass" "$summary"
    else
        fail "fuzz_short_pass" "$(grep '^finding' <<< "$out" | head -5) $summary"
    fi
else
    fail "fuzz_short_pass" "build/asan/train_ssd missing (make builds it for make test)"
fi
