#!/usr/bin/env bash
# What a newcomer meets in the first hour (issue #19), on tiny byte-level models and the CPU trainer:
#   - the model's tokenizer: recorded in the model files, copied beside them, used for samples from
#     the model file alone; data or -tk of another tokenizer refused, saying what to do; a vocabulary
#     too small for the data's tokenizer refused, saying what to do; an end-of-text token is not
#     printed literally;
#   - -o without -n saves the final model; the first line says fresh weights or a model file;
#   - -s 0 prints no sample, the default one at the end;
#   - main.log has every step once after a resume; a changed -x refused with the way to train on;
#   - full-split evaluation prints perplexity and progress;
#   - relative paths that miss, and train_ssdcu without a GPU, say what to do;
#   - scripts/plot.py draws main.log files into a PNG.
source "$(dirname "$0")/common.sh"

python3 scripts/prepro.py --tokenizer bytes --input ../shared/data/tinyshakespeare/input.txt --out "$work/bytes" \
    > "$work/prep.log" 2>&1 || { fail "prepare_data" "$(tail -3 "$work/prep.log")"; exit 1; }
base='"d_model":32,"n_layer":1,"pad_vocab_multiple":8,"d_state":8,"d_conv":4,"expand":2,"headdim":16,"ngroups":1,"chunk_size":16'
printf '{"name":"bytes-test","vocab_size":256,%s}' "$base" > "$work/bytes.json"
common=(-e "$work/bytes.json" -i "$work/bytes/*_train_*.bin" -j "$work/bytes/*_val_*.bin" -b 4 -t 32 -l 3e-3 -th 2)
model_note() { python3 -c "import sys; sys.path.insert(0, 'scripts'); import ssd_model_file as m; print(m.read_model_file(sys.argv[1])[0].get('tokenizer', ''))" "$1"; }

# ---- -o without -n: the final model, its tokenizer and the init line ----
./train_ssd "${common[@]}" -x 6 -v 3 -m 2 -g 8 -o "$work/run" > "$work/run.log" 2>&1; s=$?
note=$(model_note "$work/run/model_00000006.bin" 2>&1)
if [ $s -eq 0 ] && [ "$note" = bytes ] && [ -f "$work/run/DONE_00000006" ] &&
   cmp -s "$work/run/tokenizer.bin" "$work/bytes/tokenizer.bin"; then
    pass "final_model_saved" "-o without -n: model_00000006.bin (tokenizer note '$note'), its checkpoint marker and tokenizer.bin"
else
    fail "final_model_saved" "exit $s, note '$note': $(ls "$work/run" | tr '\n' ' ') $(tail -2 "$work/run.log")"
fi
if grep -q "^init: fresh weights from the config $work/bytes.json (seed 1337)" "$work/run.log"; then
    pass "init_line_config" "$(grep '^init' "$work/run.log")"
else
    fail "init_line_config" "$(head -3 "$work/run.log")"
fi
if [ "$(grep -c '^generating:' "$work/run.log")" = 1 ]; then pass "sample_default_end" "one sample, at the end"
else fail "sample_default_end" "$(grep -c '^generating:' "$work/run.log") samples"; fi
./train_ssd "${common[@]}" -x 4 -v 0 -g 8 -s 0 > "$work/s0.log" 2>&1; s=$?
./train_ssd "${common[@]}" -x 4 -v 0 -g 8 -s 2 > "$work/s2.log" 2>&1; s2=$?
if [ $s -eq 0 ] && ! grep -q '^generating:' "$work/s0.log" && [ $s2 -eq 0 ] && [ "$(grep -c '^generating:' "$work/s2.log")" = 2 ] &&
   ./train_ssd -h | grep -q -- "-s <int>.*0 for never (default: at the end only)"; then
    pass "sample_never" "-s 0: no sample; -s 2 with -x 4: 2 samples; -h says so"
else
    fail "sample_never" "exit $s/$s2, -s 0 printed $(grep -c '^generating:' "$work/s0.log"), -s 2 printed $(grep -c '^generating:' "$work/s2.log")"
fi

# ---- samples from the model file alone decode with its tokenizer (the default -i is not its data) ----
out=$(./train_ssd -e "$work/run/model_00000006.bin" -x 0 -v 0 -g 8 2>&1); s=$?
if [ $s -eq 0 ] && grep -q "^init: weights from the model file .*(evaluation only)" <<< "$out" && grep -q '^generating:' <<< "$out" &&
   ! grep -qi "token ids\|warning\|not the model's" <<< "$out"; then
    pass "sample_model_tokenizer" "-e model -x 0 -v 0: decoded with the tokenizer.bin beside the model file"
else
    fail "sample_model_tokenizer" "exit $s: $(tail -4 <<< "$out")"
fi

# ---- a model of another tokenizer: data and -tk refused, with what to do ----
python3 -c "
import sys; sys.path.insert(0, 'scripts'); import ssd_model_file as m
cfg, t = m.read_model_file(sys.argv[1]); cfg['tokenizer'] = 'gpt-neox-20b'; m.write_model_file(sys.argv[2], cfg, t)" \
    "$work/run/model_00000006.bin" "$work/neox.bin"
out=$(./train_ssd "${common[@]}" -e "$work/neox.bin" -x 2 2>&1); s=$?
out2=$(./train_ssd -e "$work/neox.bin" -x 0 -v 0 -g 4 -tk "$work/bytes/tokenizer.bin" 2>&1); s2=$?
out3=$(./train_ssd -e "$work/neox.bin" -x 0 -v 0 -g 4 2>&1); s3=$?
if [ $s -ne 0 ] && grep -q "prepared with another tokenizer than the model" <<< "$out" && grep -q -- "--tokenizer neox" <<< "$out" &&
   ! grep -q '^step' <<< "$out" && [ $s2 -ne 0 ] && grep -q "is not the model's tokenizer (it is 'bytes', the model's is 'gpt-neox-20b')" <<< "$out2" &&
   [ $s3 -eq 0 ] && grep -q "printed as token ids" <<< "$out3"; then
    pass "tokenizer_mismatch_refused" "data: $(grep -m1 -o 'error: .\{0,60\}' <<< "$out")...; -tk refused; without -tk no wrong decoding (ids)"
else
    fail "tokenizer_mismatch_refused" "exit $s/$s2/$s3: $(tail -1 <<< "$out") / $(tail -1 <<< "$out2") / $(tail -2 <<< "$out3")"
fi

# ---- data whose tokenizer has more ids than the model: what to do ----
printf '{"vocab_size":100,%s}' "$base" > "$work/small.json"
out=$(./train_ssd "${common[@]}" -e "$work/small.json" -x 2 2>&1); s=$?
if [ $s -ne 0 ] && grep -q "it has 256 token ids and the model only 100" <<< "$out" && grep -q "vocab_size is at least 256" <<< "$out"; then
    pass "vocab_mismatch_says_what_to_do" "$(grep -m1 -o 'Train from a config.\{0,50\}' <<< "$out")..."
else
    fail "vocab_mismatch_says_what_to_do" "exit $s: $(tail -2 <<< "$out")"
fi

# ---- an end-of-text token in a sample: a blank line, not "<|endoftext|>" ----
python3 - "$work/eot" << 'EOF'
import os, sys
import numpy as np
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
tokens = ["<|endoftext|>", "a", "b", "c"]
header = np.zeros(256, dtype="<i4"); header[:5] = [20251123, 1, len(tokens), 0, 1]  # kind gpt2, eot 0
with open(f"{out}/tokenizer.bin", "wb") as f:
    f.write(header.tobytes())
    for t in tokens:
        f.write(np.uint32(len(t)).tobytes() + t.encode())
ids = np.tile(np.array([0, 1, 2, 3, 1, 2], dtype="<u2"), 2000)
for split in ("train", "val"):
    h = np.zeros(256, dtype="<i4"); h[:3] = [20240520, 1, len(ids)]
    with open(f"{out}/eot_{split}_000000.bin", "wb") as f:
        f.write(h.tobytes() + ids.tobytes())
EOF
printf '{"vocab_size":4,%s}' "$base" > "$work/eot.json"
./train_ssd -e "$work/eot.json" -i "$work/eot/*_train_*.bin" -j "$work/eot/*_val_*.bin" -b 2 -t 16 -x 1 -v 0 -g 200 -st 2 -th 2 \
    > "$work/eot.log" 2>&1; s=$?
sample=$(awk '/^generating:/ {g = 1; next} g == 1 && /^---$/ {g = 2; next} g == 2 && /^---$/ {exit} g == 2' "$work/eot.log")
if [ $s -eq 0 ] && [ -n "$sample" ] && ! grep -q "endoftext" <<< "$sample" && grep -q '^$' <<< "$sample"; then
    pass "sample_no_literal_eot" "end-of-text printed as a blank line: $(grep -c '^$' <<< "$sample") blank lines in 200 tokens"
else
    fail "sample_no_literal_eot" "exit $s: $(head -c 200 <<< "$sample")"
fi

# ---- resume: main.log has every step once; another -x refused, with the way to train on ----
./train_ssd "${common[@]}" -x 12 -n 6 -v 4 -m 2 -g 0 -o "$work/res" > /dev/null 2>&1
rm -f "$work/res/DONE_00000012" "$work/res/model_00000012.bin" "$work/res"/state_00000012_*.bin
./train_ssd "${common[@]}" -x 12 -n 6 -v 4 -m 2 -g 0 -y 1 -o "$work/res" > "$work/res.log" 2>&1; s=$?
dups=$(sort "$work/res/main.log" | uniq -d | wc -l)
trl=$(grep -c ' trl:' "$work/res/main.log"); tel=$(grep -c ' tel:' "$work/res/main.log")
if [ $s -eq 0 ] && grep -q "resumed from" "$work/res.log" && [ "$dups" = 0 ] && [ "$trl" = 12 ] && [ "$tel" = 4 ] &&
   [ "$(grep -o '^s:[0-9]*' "$work/res/main.log" | cut -d: -f2 | sort -n -c 2>&1)" = "" ]; then
    pass "main_log_after_resume" "resumed at step 6: $trl train and $tel val lines, no step twice, in order"
else
    fail "main_log_after_resume" "exit $s, $dups repeated lines, $trl trl, $tel tel: $(tr '\n' ' ' < "$work/res/main.log" | head -c 300)"
fi
out=$(./train_ssd "${common[@]}" -x 20 -n 6 -g 0 -y 1 -o "$work/res" 2>&1); s=$?
./train_ssd "${common[@]}" -e "$work/res/model_00000012.bin" -x 4 -v 0 -g 0 -o "$work/more" > "$work/more.log" 2>&1; s2=$?
if [ $s -ne 0 ] && grep -q "'max_steps' differs" <<< "$out" && grep -q -- "-e <dir>/model_<step>.bin -o <new dir> -x <more steps>" <<< "$out" &&
   [ $s2 -eq 0 ] && grep -q "^init: weights from the model file .*fine-tuning" "$work/more.log" && [ -f "$work/more/model_00000004.bin" ]; then
    pass "train_on_for_more_steps" "changed -x refused with the way to train on; that way trains 4 more steps"
else
    fail "train_on_for_more_steps" "exit $s/$s2: $(grep -m1 error <<< "$out") / $(tail -2 "$work/more.log")"
fi

# ---- full-split evaluation: perplexity and progress lines ----
out=$(SSD_EVAL_PROGRESS_SECONDS=0 ./train_ssd -e "$work/res/model_00000012.bin" -x 0 -v 1 -m -1 -j "$work/bytes/*_val_*.bin" \
      -b 16 -t 64 -g 0 -th 2 2>&1); s=$?
line=$(grep '^eval val loss' <<< "$out")
ppl_ok=$(awk '{d = exp($4) - $10; exit !(NF == 10 && $9 == "ppl" && d < 0.01 && d > -0.01)}' <<< "$line" && echo yes)
progress=$(grep -cE '^evaluating val: [0-9]+% \([0-9]+/[0-9]+ targets\) \| [0-9.]+ s \| about [0-9.]+ s left$' <<< "$out")
if [ $s -eq 0 ] && [ "$ppl_ok" = yes ] && [ "$progress" -ge 2 ] && grep -qE '^val loss [0-9.]+ \| ppl [0-9.]+ \| [0-9.]+ s$' <<< "$out"; then
    pass "eval_perplexity_progress" "'$line', $progress progress lines"
else
    fail "eval_perplexity_progress" "exit $s, '$line', $progress progress lines: $(tail -3 <<< "$out")"
fi

# ---- relative paths that miss say where they were looked for ----
out=$(cd "$work" && "$OLDPWD/train_ssd" -e configs/mamba2-tiny.json -x 1 2>&1); s=$?
out2=$(cd "$work" && "$OLDPWD/train_ssd" -e "$work/bytes.json" -x 1 2>&1); s2=$?
if [ $s -ne 0 ] && grep -q "error: -e configs/mamba2-tiny.json: No such file or directory (a relative path is taken from the current directory, $work); run from the repository root" <<< "$out" &&
   [ $s2 -ne 0 ] && grep -q "error: -i datasets/tinyshakespeare/\*_train_\*.bin: matches no file (a relative path is taken from the current directory, $work); prepare shards with scripts/prepro.py" <<< "$out2"; then
    pass "relative_path_errors" "config and shard globs: the directory searched and what to do"
else
    fail "relative_path_errors" "exit $s/$s2: $out / $out2"
fi

# ---- train_ssdcu on a machine without a GPU (when it was built) ----
if [ -x train_ssdcu ] && ! nvidia-smi -L > /dev/null 2>&1; then
    out=$(./train_ssdcu "${common[@]}" -x 1 2>&1); s=$?
    if [ $s -ne 0 ] && grep -q "train_ssdcu needs an NVIDIA GPU" <<< "$out" && grep -q "train with ./train_ssd" <<< "$out" &&
       ! grep -q "CUDA ERROR" <<< "$out"; then
        pass "no_gpu_says_what_to_do" "$(cut -c1-120 <<< "$out")..."
    else
        fail "no_gpu_says_what_to_do" "exit $s: $out"
    fi
fi

# ---- loss curves: one run, several runs ----
python3 scripts/plot.py "$work/res" > "$work/plot1.log" 2>&1; s=$?
python3 scripts/plot.py "$work/res/main.log" "$work/run" --labels resumed first --out "$work/both.png" > "$work/plot2.log" 2>&1; s2=$?
out=$(python3 scripts/plot.py "$work/nothing" 2>&1); s3=$?
png() { [ "$(head -c 8 "$1" 2> /dev/null | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ]; }
if [ $s -eq 0 ] && png "$work/res/loss.png" && [ $s2 -eq 0 ] && png "$work/both.png" && [ $s3 -ne 0 ] && grep -q "not found" <<< "$out"; then
    pass "plot_main_log" "$(cat "$work/plot1.log"); $(cat "$work/plot2.log"); a missing run refused"
else
    fail "plot_main_log" "exit $s/$s2/$s3: $(cat "$work/plot1.log" "$work/plot2.log")"
fi
