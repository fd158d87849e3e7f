#!/usr/bin/env bash
# Prompted generation end to end (train_ssd -gp/-gf, scripts/generate.py) on a small byte-level model: a
# greedy continuation is the argmax of a full forward (build/logits_main) over start token + prompt +
# continuation at every position; a seed repeats its sample; bad prompts are refused with a message; the
# script prints what the trainer draws.
source "$(dirname "$0")/common.sh"

head -c 20000 ../shared/data/tinyshakespeare/input.txt > "$work/small.txt"
python3 scripts/prepro.py --tokenizer bytes --input "$work/small.txt" --out "$work/data" > "$work/prep.log" 2>&1 ||
    { fail "prepare_data" "$(tail -3 "$work/prep.log")"; exit 1; }
printf '{"name":"gen-test","d_model":32,"n_layer":2,"vocab_size":256,"pad_vocab_multiple":8,"d_state":8,"d_conv":4,"expand":2,"headdim":16,"ngroups":1,"chunk_size":8}' > "$work/model.json"
./train_ssd -e "$work/model.json" -i "$work/data/*_train_*.bin" -j "$work/data/*_val_*.bin" -b 4 -t 32 -l 3e-3 -x 20 -v 0 \
    -g 0 -th 2 -o "$work/run" > "$work/train.log" 2>&1 || { fail "train_model" "$(tail -3 "$work/train.log")"; exit 1; }
model="$work/run/model_00000020.bin"
mkdir -p "$work/bare" && cp "$model" "$work/bare/model.bin" # no tokenizer.bin beside it: samples print ids
gen() { ./train_ssd -x 0 -v 0 -th 2 -i "$work/none/*.bin" "$@" 2>&1; }
# the lines between the "---" after "generating:" and the next "---"
continuation() { awk '/^generating:$/ {g = 1; next} g == 1 {g = 2; next} g == 2 && /^---$/ {exit} g == 2 {print}'; }

# ---- greedy: the argmax of the full forward at every position ----
out=$(gen -e "$work/bare/model.bin" -gp 84,104,101 -g 24 -st 0)
ids=$(continuation <<< "$out" | grep -o '<[0-9]*>' | tr -d '<>' | paste -sd,)
python3 - "$ids" "$work" <<'PY' > "$work/argmax.log" 2>&1
import subprocess, sys
import numpy as np
ids, work = [int(x) for x in sys.argv[1].split(",")], sys.argv[2]
seq = [0, 84, 104, 101] + ids  # the start token (no tokenizer: id 0), the prompt, the continuation
np.array(seq, dtype="<i4").tofile(f"{work}/seq.i32")
subprocess.run(["build/logits_main", f"{work}/bare/model.bin", f"{work}/seq.i32", "1", str(len(seq)), f"{work}/logits.f32"],
               check=True, stdout=subprocess.DEVNULL)
logits = np.fromfile(f"{work}/logits.f32", dtype="<f4").reshape(len(seq), 256)
argmax = logits[3:-1].argmax(axis=1).tolist()  # position 3 (the prompt's last token) predicts the first drawn
print(f"{sum(a == b for a, b in zip(argmax, ids))} of {len(ids)} drawn tokens are the forward's argmax")
sys.exit(0 if len(ids) == 24 and argmax == ids else 1)
PY
if [ $? -eq 0 ]; then pass "greedy_is_forward_argmax" "$(tail -1 "$work/argmax.log")"
else fail "greedy_is_forward_argmax" "ids '$ids': $(tail -3 "$work/argmax.log")"; fi

# ---- a seed repeats its sample; the speed is printed ----
sample() { gen -e "$model" -gp 84,104,101 -g 40 -st 1 -sk 20 "$@" | continuation; }
one=$(sample -R 5); two=$(sample -R 5); three=$(sample -R 6)
if [ -n "$one" ] && [ "$one" = "$two" ] && [ "$one" != "$three" ]; then pass "seeded_sample_repeats" "-R 5 twice the same, -R 6 another"
else fail "seeded_sample_repeats" "'$one' / '$two' / '$three'"; fi
printf '84, 104\n101' > "$work/prompt.txt"
out=$(gen -e "$model" -gf "$work/prompt.txt" -g 40 -st 1 -sk 20 -R 5)
if [ "$(continuation <<< "$out")" = "$one" ] && grep -qE '^generated 40 tokens on the CPU in .* tokens/s' <<< "$out"
then pass "prompt_file" "-gf gives -gp's sample; $(grep '^generated' <<< "$out")"
else fail "prompt_file" "$(tail -3 <<< "$out")"; fi

# ---- bad prompts ----
check_refused() {
    local name="$1" expect="$2"; shift 2
    local out s
    out=$(gen -e "$model" "$@"); s=$?
    if [ $s -ne 0 ] && grep -q -- "$expect" <<< "$out"; then pass "refused[$name]" "exit $s: $(grep -m1 -- "$expect" <<< "$out")"
    else fail "refused[$name]" "exit $s, expected '$expect': $(tail -2 <<< "$out")"; fi
}
check_refused "not a number" "prompt token 2 ('x')" -gp 1,x -g 5
check_refused "outside the vocabulary" "not a token id in \[0, 256)" -gp 256 -g 5
check_refused "empty" "holds no token ids" -gp , -g 5
check_refused "both" "give one of them" -gp 1 -gf "$work/prompt.txt" -g 5
check_refused "missing file" "$work/missing.txt" -gf "$work/missing.txt" -g 5
check_refused "no samples" "needs samples" -gp 1 -g 0

# ---- scripts/generate.py: the trainer's continuation of the encoded prompt ----
want=$(gen -e "$model" -gp 84,104,101 -g 30 -st 0 | continuation)
got=$(python3 scripts/generate.py --model "$model" --prompt "The" --tokens 30 --temperature 0 --threads 2 2> "$work/speed.txt")
if [ -n "$got" ] && [ "$got" = "$want" ] && grep -q "tokens/s" "$work/speed.txt"; then
    pass "generate_script" "--prompt The --temperature 0 prints the trainer's greedy continuation; $(cat "$work/speed.txt")"
else
    fail "generate_script" "script '$got' trainer '$want' $(cat "$work/speed.txt")"
fi
out=$(python3 scripts/generate.py --model "$work/missing.bin" --prompt "x" 2>&1); s=$?
if [ $s -ne 0 ] && grep -q "cannot open model file" <<< "$out"; then pass "generate_script_bad_model" "exit $s"
else fail "generate_script_bad_model" "exit $s: $out"; fi
