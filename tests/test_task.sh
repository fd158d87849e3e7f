#!/usr/bin/env bash
# Downstream tasks end to end on the CPU trainer: scripts/prepare_task.py on each input format (bad
# items reported by line), the task scored in the training loop (-ta, -tv) and on its own (-x 0),
# a model trained a little above chance and an untrained one at chance, a tokenizer mismatch
# refused, and two MPI ranks giving exactly the one-rank scores.
source "$(dirname "$0")/common.sh"

# ---- prepare_task.py: the four input formats, bad lines reported with their numbers ----
cat > "$work/choice.jsonl" << 'EOF'
{"context": "The cat sat on the", "endings": [" mat.", " moon, singing."], "label": 0}
{"context": "To be or not to be,", "endings": [" that is the question.", " said the fish."], "label": 0}
not json at all
{"context": "Missing endings"}
{"context": "Label out of range", "endings": [" a", " b"], "label": 5}
EOF
cat > "$work/hellaswag.jsonl" << 'EOF'
{"ctx": "A man is sitting on a roof. He", "endings": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.", "is holding a rubik's cube.", "starts pulling up roofing on a roof."], "label": 3}
EOF
cat > "$work/lambada.jsonl" << 'EOF'
{"text": "She opened the door and looked at the garden, where her father was waiting by the gate"}
{"text": "oneword"}
EOF
python3 scripts/prepare_task.py --format choice --input "$work/choice.jsonl" --out "$work/choice.bin" > "$work/p1.log" 2>&1
s1=$?
python3 scripts/prepare_task.py --format choice --input "$work/choice.jsonl" --out "$work/choice.bin" --max-bad 3 > "$work/p2.log" 2>&1
s2=$?
if [ $s1 -ne 0 ] && [ $s2 -eq 0 ] && grep -q "choice.jsonl:3: skipped" "$work/p1.log" && grep -q "choice.jsonl:4: skipped" "$work/p1.log" &&
    grep -q "choice.jsonl:5: skipped: field \"label\"" "$work/p1.log" && grep -q "2 items (3 skipped)" "$work/p2.log" &&
    ! grep -q Traceback "$work/p1.log"; then
    pass "prepare_task_bad_items" "3 bad lines named (3, 4, 5); refused by default, written with --max-bad 3"
else
    fail "prepare_task_bad_items" "exit $s1/$s2: $(cat "$work/p1.log" "$work/p2.log")"
fi
python3 scripts/prepare_task.py --format hellaswag --input "$work/hellaswag.jsonl" --out "$work/hs.bin" > "$work/p3.log" 2>&1 && s3=0 || s3=$?
python3 scripts/prepare_task.py --format lambada --input "$work/lambada.jsonl" --out "$work/lambada.bin" --max-bad 1 > "$work/p4.log" 2>&1 && s4=0 || s4=$?
if [ "$s3" -eq 0 ] && [ "$s4" -eq 0 ] && grep -q "lambada.jsonl:2: skipped: the passage has no space" "$work/p4.log"; then
    pass "prepare_task_formats" "hellaswag and lambada files converted; a one-word passage named and skipped"
else
    fail "prepare_task_formats" "exit $s3/$s4: $(cat "$work/p3.log" "$work/p4.log")"
fi
python3 scripts/prepare_task.py --format choice --input "$work/missing.jsonl" --out "$work/x.bin" > "$work/p5.log" 2>&1
if [ $? -ne 0 ] && grep -q "missing.jsonl" "$work/p5.log" && ! grep -q Traceback "$work/p5.log"; then
    pass "prepare_task_missing_input" "$(head -1 "$work/p5.log")"
else
    fail "prepare_task_missing_input" "$(cat "$work/p5.log")"
fi

# standalone scoring of the converted tasks with a GPT-2-vocabulary model (untrained: only that it runs)
tiny=(-e configs/mamba2-tiny.json -b 2 -t 64 -x 0 -v 0 -g 0 -th 2)
ok=1
for task in choice hs lambada; do
    ./train_ssd "${tiny[@]}" -ta "$work/$task.bin" > "$work/s_$task.log" 2>&1 || ok=0
    grep -qE "^task $task \| acc [0-9.]+ \| (acc_mean|ppl) [0-9.]+ \| [0-9]+ items" "$work/s_$task.log" || ok=0
done
if [ $ok = 1 ]; then pass "task_standalone" "$(grep -h '^task' "$work"/s_*.log | tr '\n' ';')"; else
    fail "task_standalone" "$(tail -3 "$work"/s_*.log)"; fi

# a model that records another tokenizer refuses a GPT-2 task
sed 's/"a_structure": "scalar"/"a_structure": "scalar", "tokenizer": "gpt-neox-20b"/' configs/mamba2-tiny.json > "$work/neox.json"
out=$(./train_ssd "${tiny[@]}" -e "$work/neox.json" -ta "$work/choice.bin" 2>&1)
if [ $? -ne 0 ] && grep -q "tokenized with gpt2 but the model uses gpt-neox-20b" <<< "$out"; then
    pass "task_tokenizer_mismatch" "$(grep -m1 error <<< "$out")"
else
    fail "task_tokenizer_mismatch" "$out"
fi
out=$(./train_ssd "${tiny[@]}" -tv 5 2>&1)
if [ $? -ne 0 ] && grep -q -- "-tv needs a task file" <<< "$out"; then pass "task_flag_needs_file" "$out"; else
    fail "task_flag_needs_file" "$out"; fi

# ---- above chance after a little training, at chance untrained (bytes of Tiny Shakespeare) ----
python3 scripts/prepro.py --tokenizer bytes --input ../shared/data/tinyshakespeare/input.txt --out "$work/data" > "$work/prep.log" 2>&1 ||
    { fail "prepare_data" "$(tail -3 "$work/prep.log")"; exit 1; }
# from the val split: 200 items, each a 48-byte context; multiple choice: the true next 8 bytes against 3
# strings of 8 bytes drawn from the split's byte frequencies; last word: the true next byte
python3 - "$work" << 'EOF'
import glob, sys
import numpy as np
sys.path.insert(0, "scripts")
from prepare_task import task_bytes
from prepro_shards import read_shard
work = sys.argv[1]
shard = sorted(glob.glob(f"{work}/data/*_val_*.bin"))[0]
tokens = read_shard(shard)
rng = np.random.default_rng(0)
freq = np.bincount(tokens, minlength=256) / len(tokens)
choice, last = [], []
for i in range(200):
    s = int(rng.integers(0, len(tokens) - 60))
    context, truth = tokens[s:s + 48].tolist(), tokens[s + 48:s + 56].tolist()
    label = int(rng.integers(0, 4))
    endings = [rng.choice(256, size=8, p=freq).tolist() for _ in range(4)]
    endings[label] = truth
    choice.append((context, endings, label))
    last.append((context, [truth[:1]], 0))
open(f"{work}/mc.bin", "wb").write(task_bytes(0, "", 256, choice))
open(f"{work}/next.bin", "wb").write(task_bytes(1, "", 256, last))
EOF
printf '{"name":"task-test","d_model":32,"n_layer":1,"vocab_size":256,"pad_vocab_multiple":8,"d_state":8,"d_conv":4,"expand":2,"headdim":16,"ngroups":1,"chunk_size":16}' > "$work/model.json"
bytes=(-e "$work/model.json" -i "$work/data/*_train_*.bin" -j "$work/data/*_val_*.bin" -b 4 -t 64 -l 3e-3 -v 0 -g 0 -th 2)
./train_ssd "${bytes[@]}" -x 150 -ta "$work/mc.bin" -tv 150 -o "$work/run" -n 150 > "$work/train.log" 2>&1
status=$?
acc() { grep "^s:$1 task:$2 " "$work/run/main.log" | sed -E "s/.* $3:([0-9.e+-]+).*/\1/"; }
untrained=$(acc 0 mc acc); trained=$(acc 150 mc acc); untrained_mean=$(acc 0 mc acc_mean)
# 200 items at chance 1/4: standard deviation 0.031, so [0.13, 0.37] is about 4 of them either side
if [ $status -eq 0 ] && awk -v u="$untrained" -v m="$untrained_mean" -v t="$trained" \
    'BEGIN { exit !(u >= 0.13 && u <= 0.37 && m >= 0.13 && m <= 0.37 && t >= 0.6) }'; then
    pass "task_in_loop_above_chance" "multiple choice (4 endings, 200 items): untrained acc $untrained (acc_mean $untrained_mean), after 150 steps $trained (>= 0.6)"
else
    fail "task_in_loop_above_chance" "exit $status, untrained $untrained/$untrained_mean, trained $trained; $(tail -3 "$work/train.log")"
fi
./train_ssd "${bytes[@]}" -e "$work/model.json" -x 0 -ta "$work/next.bin" > "$work/next0.log" 2>&1
./train_ssd "${bytes[@]}" -e "$work/run/model_00000150.bin" -x 0 -ta "$work/next.bin" -tp "$work/rows1.tsv" > "$work/next1.log" 2>&1
field() { grep -E '^task [^ ]+ \|' "$1" | sed -E "s/.*\| $2 ([0-9.e+-]+) .*/\1/"; }
a0=$(field "$work/next0.log" acc); a1=$(field "$work/next1.log" acc)
p0=$(field "$work/next0.log" ppl); p1=$(field "$work/next1.log" ppl)
if [ -n "$a0" ] && [ -n "$a1" ] && awk -v a0="$a0" -v a1="$a1" -v p0="$p0" -v p1="$p1" \
    'BEGIN { exit !(a0 <= 0.05 && a1 >= a0 + 0.15 && p1 < p0 / 4) }'; then
    pass "task_last_word" "next byte of 200 passages: greedy acc $a0 -> $a1, ppl $p0 -> $p1 (standalone -x 0 on the saved model)"
else
    fail "task_last_word" "acc $a0 -> $a1, ppl $p0 -> $p1; $(tail -2 "$work/next1.log")"
fi
lines=$(($(wc -l < "$work/rows1.tsv") - 1))
if [ "$lines" -eq 200 ] && head -1 "$work/rows1.tsv" | grep -q "^item	choice	label	ll	length	greedy$"; then
    pass "task_rows_file" "-tp wrote $lines rows with the header"
else
    fail "task_rows_file" "$lines rows: $(head -2 "$work/rows1.tsv")"
fi

# ---- two ranks: exactly the one-rank scores ----
if command -v mpirun > /dev/null; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
    ./train_ssd "${bytes[@]}" -e "$work/run/model_00000150.bin" -x 0 -ta "$work/mc.bin" -tp "$work/mc1.tsv" -th 1 > "$work/mc1.log" 2>&1
    mpirun --oversubscribe -np 2 ./train_ssd "${bytes[@]}" -e "$work/run/model_00000150.bin" -x 0 -ta "$work/mc.bin" \
        -tp "$work/mc2.tsv" -th 1 > "$work/mc2.log" 2>&1
    if [ -s "$work/mc1.tsv" ] && cmp -s "$work/mc1.tsv" "$work/mc2.tsv" &&
        [ "$(grep -E '^task [^ ]+ \|' "$work/mc1.log" | cut -d'|' -f1-4)" = "$(grep -E '^task [^ ]+ \|' "$work/mc2.log" | cut -d'|' -f1-4)" ]; then
        pass "task_two_ranks" "2 MPI ranks: the same 800 row scores and $(grep -E '^task [^ ]+ \|' "$work/mc2.log" | cut -d'|' -f2-3)"
    else
        fail "task_two_ranks" "$(tail -3 "$work/mc2.log")"
    fi
else
    fail "task_two_ranks" "mpirun not found"
fi
