#!/usr/bin/env bash
# End-to-end checks of train_ssd: config and flag errors, a short training run whose loss falls,
# the main.log format, exact resume from a checkpoint, and fine-tuning from a model file.
source "$(dirname "$0")/common.sh"

# ---- config errors: each must exit non-zero with a message naming the field ----
base='"d_model":32,"n_layer":1,"vocab_size":256,"pad_vocab_multiple":8,"d_state":8,"d_conv":4,"expand":2,"headdim":16,"ngroups":1,"chunk_size":16'
check_bad_config() {
    local name="$1" json="$2" expect="$3"
    printf '%s' "$json" > "$work/bad.json"
    local out status
    out=$(./train_ssd -e "$work/bad.json" -x 1 2>&1)
    status=$?
    if [ $status -ne 0 ] && grep -q -- "$expect" <<< "$out" && grep -q "bad.json" <<< "$out"; then
        pass "config_error[$name]" "exit $status: $(grep -m1 error <<< "$out")"
    else
        fail "config_error[$name]" "exit $status, expected a message with '$expect' and the file name: $out"
    fi
}
check_bad_config "bad json" "{$base,}" "not a JSON object"
check_bad_config "missing field" '{"d_model":32,"n_layer":1}' "missing field"
check_bad_config "unknown field" "{$base,\"d_modle\":3}" "unknown field 'd_modle'"
check_bad_config "headdim" "{${base/\"headdim\":16/\"headdim\":24}}" "'headdim'"
check_bad_config "ngroups" "{${base/\"ngroups\":1/\"ngroups\":3}}" "'ngroups'"
check_bad_config "non-positive" "{${base/\"d_state\":8/\"d_state\":0}}" "'d_state' must be an integer in \[1, 1024\] (got 0)"
check_bad_config "a_structure" "{$base,\"a_structure\":\"dense\"}" "'a_structure'"
check_bad_config "wrong type" "{${base/\"expand\":2/\"expand\":\"two\"}}" "'expand' must be an integer"

# ---- flags ----
if ./train_ssd -h | grep -q -- "-nk <int>"; then pass "cli_help" "-h prints the flags"; else fail "cli_help" "-h output"; fi
out=$(./train_ssd -zz 1 2>&1); s=$?
if [ $s -ne 0 ] && grep -q "unknown flag -zz" <<< "$out"; then pass "cli_unknown_flag" "exit $s"; else fail "cli_unknown_flag" "exit $s: $out"; fi
out=$(./train_ssd -b x 2>&1); s=$?
if [ $s -ne 0 ] && grep -q "bad value 'x' for -b" <<< "$out"; then pass "cli_bad_value" "exit $s"; else fail "cli_bad_value" "exit $s: $out"; fi

# ---- data: Tiny Shakespeare as bytes, and a small byte-level model ----
python3 scripts/prepro.py --tokenizer bytes --input ../shared/data/tinyshakespeare/input.txt --out "$work/data" > "$work/prep.log" 2>&1 ||
    { fail "prepare_data" "$(tail -3 "$work/prep.log")"; exit 1; }
printf '{"name":"bytes-test",%s,"a_structure":"diagonal"}' "$base" > "$work/model.json"
train=("$work/data/*_train_*.bin")
val=("$work/data/*_val_*.bin")
common=(-e "$work/model.json" -i "${train[0]}" -j "${val[0]}" -b 4 -t 64 -l 3e-3 -v 0 -g 0 -th 2)

# ---- a short run: the loss must fall, main.log must have llm.c's format ----
./train_ssd "${common[@]}" -x 40 -v 20 -m 5 -g 16 -o "$work/run" > "$work/run.log" 2>&1
status=$?
first=$(grep -m1 '^step' "$work/run.log" | sed 's/.*loss \([0-9.]*\).*/\1/')
last=$(grep '^step' "$work/run.log" | tail -5 | sed 's/.*loss \([0-9.]*\).*/\1/' | awk '{s+=$1} END {printf "%.4f", s/NR}')
if [ $status -eq 0 ] && awk -v f="$first" -v l="$last" 'BEGIN {exit !(l < f - 1.0)}'; then
    pass "training_loss_falls" "first step $first, mean of last 5 steps $last (must fall by > 1.0 nat)"
else
    fail "training_loss_falls" "exit $status, first $first, last $last; $(tail -3 "$work/run.log")"
fi
if grep -qE '^s:0 trl:[0-9]+\.[0-9]{4}' "$work/run/main.log" && grep -qE '^s:40 tel:[0-9]+\.[0-9]{4}$' "$work/run/main.log"; then
    pass "main_log_format" "$(grep -c trl "$work/run/main.log") train lines, $(grep -c tel "$work/run/main.log") val lines"
else
    fail "main_log_format" "$(head -3 "$work/run/main.log")"
fi
if grep -q '^generating:' "$work/run.log"; then pass "sample_printed" "a sample follows training"; else fail "sample_printed" "no sample"; fi

# ---- exact resume: 12 steps straight == 6 steps, stop, resume, 6 more ----
./train_ssd "${common[@]}" -x 12 -n 12 -o "$work/straight" > "$work/straight.log" 2>&1
./train_ssd "${common[@]}" -x 12 -n 6 -o "$work/resumed" > "$work/first_half.log" 2>&1
rm -f "$work/resumed/DONE_00000012" "$work/resumed/model_00000012.bin" "$work/resumed"/state_00000012_*.bin
./train_ssd "${common[@]}" -x 12 -n 6 -y 1 -o "$work/resumed" > "$work/second_half.log" 2>&1
straight=$(grep '^step' "$work/straight.log" | tail -6 | sed 's/ | [0-9.]* ms.*//')
resumed=$(grep '^step' "$work/second_half.log" | sed 's/ | [0-9.]* ms.*//')
if grep -q "resumed from" "$work/second_half.log" && [ "$straight" = "$resumed" ] && [ -n "$resumed" ] &&
   cmp -s "$work/straight/model_00000012.bin" "$work/resumed/model_00000012.bin"; then
    pass "exact_resume" "steps 7-12 identical and model_00000012.bin byte-identical after resuming at step 6"
else
    fail "exact_resume" "straight: $(echo "$straight" | tail -1) / resumed: $(echo "$resumed" | tail -1)"
fi

# ---- a resume that does not fit is refused ----
out=$(./train_ssd "${common[@]}" -x 12 -b 2 -y 1 -o "$work/resumed" 2>&1); s=$?
if [ $s -ne 0 ]; then pass "resume_mismatch_refused" "B changed: exit $s: $(grep -m1 -i error <<< "$out")"; else fail "resume_mismatch_refused" "exit 0"; fi

# ---- fine-tune from a model file: fresh optimizer, the saved weights ----
./train_ssd "${common[@]}" -e "$work/straight/model_00000012.bin" -x 2 -v 1 -m 2 > "$work/finetune.log" 2>&1; s=$?
fresh_val=$(grep -m1 'val loss' "$work/run.log" | awk '{print $3}')
tuned_val=$(grep -m1 'val loss' "$work/finetune.log" | awk '{print $3}')
if [ $s -eq 0 ] && grep -q '^step     2/2' "$work/finetune.log" && awk -v a="$tuned_val" -v b="$fresh_val" 'BEGIN {exit !(a < b - 0.1)}'; then
    pass "fine_tune" "starts from the saved weights: step-0 val loss $tuned_val vs $fresh_val for a fresh model"
else
    fail "fine_tune" "exit $s, step-0 val loss $tuned_val vs fresh $fresh_val: $(tail -3 "$work/finetune.log")"
fi
