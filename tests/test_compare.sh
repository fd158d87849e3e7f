#!/usr/bin/env bash
# End-to-end checks of the WikiText-2 comparison tooling on a small slice of WikiText-2 (the first
# lines of each split, word level and GPT-2 BPE) with tiny models and the CPU trainer:
#   - the trainer's evaluation flags: -x 0 evaluates only, -m -1 and -ti cover every target of the
#     split once, the eval lines in stdout and main.log, bad values and bad test shards refused;
#   - scripts/compare.py: a whole sweep (3 seeds x 2 variants), its report, plot and results; a d_state x
#     width scaling sweep (cells, parameters, step times alone);
#     resuming a half-finished sweep (a run stopped after a checkpoint continues and ends bit-identical);
#     BPE perplexity per word; errors for configs that do not fit the data or each other.
source "$(dirname "$0")/common.sh"

# ---- a slice of WikiText-2, prepared as the comparison prepares the full one ----
mkdir -p "$work/raw"
head -n 300 ../shared/data/wikitext-2/train.txt > "$work/raw/train.txt"
head -n 40 ../shared/data/wikitext-2/valid.txt > "$work/raw/valid.txt"
head -n 48 ../shared/data/wikitext-2/test.txt > "$work/raw/test.txt"
# BPE: shorter val/test splits, as the 50k-way softmax dominates these tiny models' evaluation
mkdir -p "$work/raw_bpe"
cp "$work/raw/train.txt" "$work/raw_bpe/train.txt"
head -n 12 "$work/raw/valid.txt" > "$work/raw_bpe/valid.txt"
head -n 12 "$work/raw/test.txt" > "$work/raw_bpe/test.txt"
for tok in word gpt2; do
    raw="$work/raw"
    [ "$tok" = gpt2 ] && raw="$work/raw_bpe"
    python3 scripts/prepro.py --recipe wikitext2 --tokenizer "$tok" --input "$raw" --out "$work/$tok" > "$work/prep_$tok.log" 2>&1 ||
        { fail "prepare_data[$tok]" "$(tail -3 "$work/prep_$tok.log")"; exit 1; }
done
# shard_info FILE: "ntok vocab" from a shard header / tokenizer.bin header
header_int() { python3 -c "import numpy as np,sys; print(int(np.fromfile(sys.argv[1], dtype='<i4', count=5)[int(sys.argv[2])]))" "$1" "$2"; }
word_vocab=$(header_int "$work/word/tokenizer.bin" 2)
val_ntok=$(header_int "$work/word/wikitext2_val_000000.bin" 2)
test_ntok=$(header_int "$work/word/wikitext2_test_000000.bin" 2)
tiny_config() { # name vocab structure pad
    printf '{"name":"%s","d_model":16,"n_layer":1,"vocab_size":%d,"pad_vocab_multiple":%d,"d_state":8,"d_conv":4,"expand":2,"headdim":16,"ngroups":1,"chunk_size":16,"a_structure":"%s"}' \
        "$1" "$2" "$4" "$3" > "$work/$1.json"
}
tiny_config word_scalar "$word_vocab" scalar 16
tiny_config word_diagonal "$word_vocab" diagonal 16
tiny_config bpe_scalar 50257 scalar 64
tiny_config bpe_diagonal 50257 diagonal 64

# ---- trainer evaluation flags ----
if ./train_ssd -h | grep -q -- "-ti <glob>" && ./train_ssd -h | grep -q -- "-ec <0|1>"; then
    pass "cli_eval_help" "-h documents -ti and -ec"
else
    fail "cli_eval_help" "-h lacks -ti or -ec"
fi
out=$(./train_ssd -ec 2 2>&1); s=$?
if [ $s -ne 0 ] && grep -q "bad value" <<< "$out" && grep -q -- "-ec" <<< "$out"; then pass "cli_bad_carry" "exit $s"; else fail "cli_bad_carry" "exit $s: $out"; fi
out=$(./train_ssd -x 0 -y 1 -o "$work/nowhere" 2>&1); s=$?
if [ $s -ne 0 ] && grep -q "cannot resume" <<< "$out"; then pass "cli_eval_only_no_resume" "exit $s"; else fail "cli_eval_only_no_resume" "exit $s: $out"; fi

val="$work/word/*_val_*.bin"
tst="$work/word/*_test_*.bin"
# -x 0 needs no train data: the train glob matches nothing
out=$(./train_ssd -e "$work/word_diagonal.json" -x 0 -i "$work/none/*.bin" -j "$val" -ti "$tst" -v 1 -m -1 -b 3 -t 32 -g 0 -th 2 2>&1); s=$?
got_val=$(grep '^eval val loss' <<< "$out" | awk '{print $6}')
got_test=$(grep '^eval test loss' <<< "$out" | awk '{print $6}')
if [ $s -eq 0 ] && [ "$got_val" = $((val_ntok - 1)) ] && [ "$got_test" = $((test_ntok - 1)) ] && ! grep -q '^step' <<< "$out"; then
    pass "eval_only_full_split" "no training; val $got_val of $val_ntok tokens and test $got_test of $test_ntok are targets"
else
    fail "eval_only_full_split" "exit $s, val targets '$got_val' (shard $val_ntok), test '$got_test' (shard $test_ntok): $(tail -3 <<< "$out")"
fi

./train_ssd -e "$work/word_diagonal.json" -i "$work/word/*_train_*.bin" -j "$val" -ti "$tst" -x 12 -v 6 -m -1 -n 12 \
    -b 4 -t 32 -l 3e-3 -g 0 -th 2 -o "$work/evalrun" > "$work/evalrun.log" 2>&1; s=$?
log="$work/evalrun/main.log"
if [ $s -eq 0 ] && grep -qE "^s:12 eval:val loss:[0-9]+\.[0-9]{9} tokens:$((val_ntok - 1)) carry:0$" "$log" &&
   grep -qE "^s:12 eval:test loss:[0-9]+\.[0-9]{9} tokens:$((test_ntok - 1)) carry:0$" "$log" &&
   [ "$(grep -c ' tel:' "$log")" = 3 ]; then
    pass "main_log_eval_lines" "$(grep 'eval:test' "$log")"
else
    fail "main_log_eval_lines" "exit $s: $(grep -E 'eval|tel' "$log" | tr '\n' ' ')"
fi
# the final checkpoint, evaluated alone, gives the training run's final numbers exactly
train_test=$(grep '^eval test' "$work/evalrun.log")
again=$(./train_ssd -e "$work/evalrun/model_00000012.bin" -x 0 -j "$val" -ti "$tst" -v 1 -m -1 -b 4 -t 32 -g 0 -th 2 2>&1 | grep "^eval test")
carried=$(./train_ssd -e "$work/evalrun/model_00000012.bin" -x 0 -j "$val" -ti "$tst" -v 1 -m -1 -ec 1 -t 32 -g 0 -th 2 2>&1 | grep '^eval test')
if [ -n "$train_test" ] && [ "$train_test" = "$again" ] && grep -q "tokens $((test_ntok - 1)) carry 1" <<< "$carried" &&
   [ "$(awk '{print $4}' <<< "$carried")" != "$(awk '{print $4}' <<< "$train_test")" ]; then
    pass "eval_model_file" "'$again'; carried state: '$carried'"
else
    fail "eval_model_file" "training '$train_test' / model file '$again' / carried '$carried'"
fi
# a corrupt test shard is refused before any training, naming the file
mkdir -p "$work/bad"
head -c 1000 "$work/word/wikitext2_test_000000.bin" > "$work/bad/bad_test_000000.bin"
out=$(./train_ssd -e "$work/word_diagonal.json" -i "$work/word/*_train_*.bin" -j "$val" -ti "$work/bad/*.bin" -x 5 -g 0 -t 32 2>&1); s=$?
if [ $s -ne 0 ] && grep -q "bad_test_000000.bin" <<< "$out" && ! grep -q '^step' <<< "$out"; then
    pass "bad_test_shard" "exit $s: $(grep -m1 -i error <<< "$out")"
else
    fail "bad_test_shard" "exit $s: $(tail -2 <<< "$out")"
fi

# ---- the comparison script: a whole sweep ----
sweep=(python3 scripts/compare.py --configs "$work/word_scalar.json" "$work/word_diagonal.json" --data "$work/word"
       --raw "$work/raw" --out "$work/sweep" --seeds 3 --steps 30 --batch 4 --seq-len 32 --lr 3e-3 --val-every 10
       --checkpoint-every 10 --threads 2)
start=$SECONDS
"${sweep[@]}" > "$work/sweep.log" 2>&1; s=$?
check_sweep=$(python3 - "$work/sweep" "$val_ntok" "$test_ntok" <<'EOF'
import json, sys
out, val_ntok, test_ntok = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
runs = json.load(open(f"{out}/results.json"))["runs"]
problems = []
if sorted((r["variant"], r["seed"]) for r in runs) != sorted((v, s) for v in ("mamba2", "ssd-mamba") for s in (1, 2, 3)):
    problems.append("runs: " + str([(r["variant"], r["seed"]) for r in runs]))
for r in runs:
    e = r["eval"]
    if [e[k]["tokens"] for k in ("val_carry0", "val_carry1")] != [val_ntok - 1] * 2 or \
       [e[k]["tokens"] for k in ("test_carry0", "test_carry1")] != [test_ntok - 1] * 2:
        problems.append(f"{r['variant']} {r['seed']}: eval tokens {e}")
    curve = r["val_curve"]
    if [c[0] for c in curve] != [0, 1280, 2560, 3840] or not curve[-1][1] < curve[0][1] - 0.3:
        problems.append(f"{r['variant']} {r['seed']}: val curve {curve}")
    if not (r["tokens_per_s"] > 0 and r["wall_s"] > 0 and r["train_tokens"] == 3840):
        problems.append(f"{r['variant']} {r['seed']}: throughput {r['tokens_per_s']} wall {r['wall_s']}")
params = {r["variant"]: r["params"] for r in runs}
if params["ssd-mamba"] - params["mamba2"] != 1 * 2 * (8 - 1):  # n_layer * nheads * (d_state - 1) more A entries
    problems.append(f"params {params}")
print("; ".join(problems) if problems else f"6 runs; val loss {runs[0]['val_curve'][0][1]:.3f} -> {runs[0]['val_curve'][-1][1]:.3f}")
EOF
)
report="$work/sweep/report.md"
if [ $s -eq 0 ] && ! grep -q "^error\|problems\|warning" <<< "$check_sweep$(cat "$work/sweep.log")" &&
   [ "$(grep -cE '^\| (mamba2|ssd-mamba) \| 3 \| [0-9,]+ \| [0-9.]+ ± ' "$report")" = 2 ] &&
   [ "$(grep -cE '^\| (mamba2|ssd-mamba) \| [123] \| [0-9]+\.[0-9]{4} \| ' "$report")" = 6 ] &&
   grep -q "seeds where SSD-Mamba is better" "$report" && [ "$(head -c 8 "$work/sweep/val_loss.png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ]; then
    pass "compare_sweep" "$check_sweep; report.md and val_loss.png written in $((SECONDS - start)) s"
else
    fail "compare_sweep" "exit $s: $check_sweep; $(tail -5 "$work/sweep.log")"
fi
# parallel runs (--jobs, one thread each): the same numbers as the sequential sweep (two threads), whatever
# order the runs finish in: the CPU trainer's results do not depend on its thread count
python3 scripts/compare.py --configs "$work/word_scalar.json" "$work/word_diagonal.json" --data "$work/word" --raw "$work/raw" \
    --out "$work/parallel" --seeds 3 --steps 30 --batch 4 --seq-len 32 --lr 3e-3 --val-every 10 --checkpoint-every 10 \
    --threads 1 --jobs 2 > "$work/parallel.log" 2>&1; s=$?
same=$(python3 -c "
import json, sys
key = lambda r: (r['variant'], r['seed'])
a, b = (sorted(json.load(open(p))['runs'], key=key) for p in sys.argv[1:])
same = len(a) == len(b) == 6 and all(x['eval'] == y['eval'] and x['val_curve'] == y['val_curve'] for x, y in zip(a, b))
print('same' if same else 'differ: ' + str([(key(x), x['eval'], y['eval']) for x, y in zip(a, b) if x['eval'] != y['eval']])[:300])" \
    "$work/sweep/results.json" "$work/parallel/results.json" 2>&1)
if [ $s -eq 0 ] && [ "$same" = same ]; then
    pass "compare_parallel_jobs" "--jobs 2: the 6 runs' evaluations and val curves equal the sequential sweep's"
else
    fail "compare_parallel_jobs" "exit $s, $same; $(tail -3 "$work/parallel.log")"
fi
out=$(python3 scripts/compare.py --gpus 0,x --trainer ./train_ssd 2>&1); s=$?
out2=$(python3 scripts/compare.py --gpus 0,1 --jobs 3 --trainer ./train_ssd 2>&1); s2=$?
if [ $s -ne 0 ] && grep -q "comma-separated GPU ids" <<< "$out" && [ $s2 -ne 0 ] && grep -q "needs as many --gpus ids" <<< "$out2"; then
    pass "compare_gpus_refused" "bad --gpus lists refused"
else
    fail "compare_gpus_refused" "exit $s: $out / exit $s2: $out2"
fi

# progress lines while a run trains: a stand-in trainer prints step lines of 1 s each, a val evaluation
# of 2 s and an evaluation under way, 0.5 s apart (the sweep then stops, as it writes no checkpoint). The
# time left: 28 steps of 1 s; the val evaluations at steps 10, 20, 30 (2 s each), the test split (2 s x
# test/val targets), the carried-state evaluation (as long as val + test until one was measured), and
# the 1 s left of the evaluation under way
printf '#!/usr/bin/env bash\necho "step     1/30 | loss 7.100000 | norm 1.0 | lr 1.00e-03 | 1000.0 ms | 100 tok/s"\necho "val loss 7.000000 | ppl 1096.63 | 2.00 s"\nsleep 0.5\necho "step     2/30 | loss 6.900000 | norm 1.0 | lr 1.00e-03 | 1000.0 ms | 100 tok/s"\necho "evaluating val: 50%% (10/20 targets) | 1.0 s | about 1.0 s left"\nsleep 0.5\n' > "$work/slow_trainer"
chmod +x "$work/slow_trainer"
out=$(python3 scripts/compare.py --configs "$work/word_scalar.json" "$work/word_diagonal.json" --data "$work/word" \
      --raw "$work/raw" --out "$work/progress" --seeds 3 --steps 30 --batch 4 --seq-len 32 --val-every 10 \
      --trainer "$work/slow_trainer" --progress-every 0.2 2>&1)
expect=$(awk -v v=$((val_ntok - 1)) -v t=$((test_ntok - 1)) 'BEGIN {r = t / v; e = 6 + 2 * r + (2 + 2 * r) + 1;
    printf "about %.0f s left in this run (training 28 s, evaluation %.0f s)", 28 + e, e}')
if grep -qE '^  mamba2 seed 1: step 1/30, loss 7.1000, about [0-9]+ s left in this run \(training 29 s, evaluation [0-9]+ s\) \([0-9]+ s so far\)$' <<< "$out" &&
   grep -qF "  mamba2 seed 1: step 2/30, loss 6.9000, evaluating val 50%, $expect" <<< "$out"; then
    pass "compare_progress" "$(grep -c '^  mamba2 seed 1: step' <<< "$out") progress lines for a 1 s run at --progress-every 0.2: '$(grep -m1 'step 2/30' <<< "$out" | cut -c3-)'"
else
    fail "compare_progress" "expected '...$expect': $(head -6 <<< "$out")"
fi
if grep -qE '^mamba2 seed [123]: done in [0-9.]+ (s|min): training steps [0-9.]+ (s|min), evaluation and the rest [0-9.]+ (s|min)$' "$work/sweep.log" &&
   grep -qE '^sweep: 6 of 6 runs done \([0-9.]+ (s|min)\)$' "$work/sweep.log" && grep -qE '^sweep: 1 of 6 runs done .*, about [0-9.]+ (s|min) left$' "$work/sweep.log" &&
   grep -q "| of it training steps |" "$report"; then
    pass "compare_run_times" "$(grep -m1 'done in' "$work/sweep.log"); $(grep -m1 '^sweep: 1 of' "$work/sweep.log")"
else
    fail "compare_run_times" "$(grep -E 'done in|^sweep' "$work/sweep.log" | head -3)"
fi
words_line=$(grep "^- words" "$report" | tr -d ,)
if grep -q "val $val_ntok test $test_ntok" <<< "$words_line"; then
    pass "word_counts" "raw text count = word-level tokens: $words_line"
else
    fail "word_counts" "'$words_line' vs shard tokens val $val_ntok test $test_ntok"
fi

# ---- resume: a run stopped after its step-20 checkpoint continues and ends bit-identical ----
run="$work/sweep/runs/ssd-mamba-seed2"
cp "$run/result.json" "$work/result_before.json"
rm -f "$run/result.json" "$run/DONE_00000030" "$run/model_00000030.bin" "$run"/state_00000030_*.bin
"${sweep[@]}" > "$work/resume.log" 2>&1; s=$?
same=$(python3 -c "
import json, sys
a, b = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
print('same' if a['eval'] == b['eval'] and a['val_curve'] == b['val_curve'] else f\"{a['eval']} vs {b['eval']}\")" \
    "$work/result_before.json" "$run/result.json" 2>&1)
if [ $s -eq 0 ] && [ "$(grep -c 'done, skipped' "$work/resume.log")" = 5 ] && grep -q "resumed from .* at step 20" "$run/train_1.log" &&
   [ "$(grep -c '^step' "$run/train_1.log")" = 10 ] && [ "$same" = same ]; then
    pass "compare_resume" "5 runs skipped; ssd-mamba seed 2 resumed at step 20, trained 10 steps, same eval results and val curve"
else
    fail "compare_resume" "exit $s, $(grep -c 'done, skipped' "$work/resume.log") skipped, $same; $(tail -3 "$work/resume.log")"
fi
if python3 scripts/compare.py --report-only --trainer /nonexistent --configs "$work/word_scalar.json" "$work/word_diagonal.json" \
       --data "$work/word" --raw "$work/raw" --out "$work/sweep" --seeds 3 --steps 30 --batch 4 --seq-len 32 > "$work/ro.log" 2>&1 &&
   grep -q "(6 runs)" "$work/ro.log"; then
    pass "compare_report_only" "$(cat "$work/ro.log")"
else
    fail "compare_report_only" "$(tail -3 "$work/ro.log")"
fi

if grep -q -- "--steps 30" "$report" && grep -q "^Made with" "$report"; then
    pass "compare_report_command" "the report names the command that made it"
else
    fail "compare_report_command" "no 'Made with' command in $report"
fi
# the same --out with other settings: refused, naming the finished run, instead of mixing two sweeps
out=$(python3 scripts/compare.py --configs "$work/word_scalar.json" "$work/word_diagonal.json" --data "$work/word" \
      --raw "$work/raw" --out "$work/sweep" --seeds 3 --steps 20 --batch 4 --seq-len 32 --threads 2 2>&1); s=$?
if [ $s -ne 0 ] && grep -q "result.json: a finished run of 30 steps, but these settings make 20" <<< "$out"; then
    pass "compare_other_settings_refused" "exit $s"
else
    fail "compare_other_settings_refused" "exit $s: $(tail -2 <<< "$out")"
fi

# ---- GPT-2 BPE: perplexity per token and per word ----
python3 scripts/compare.py --configs "$work/bpe_scalar.json" "$work/bpe_diagonal.json" --data "$work/gpt2" --raw "$work/raw_bpe" \
    --out "$work/bpe" --seeds 3 --steps 2 --batch 4 --seq-len 32 --lr 3e-3 --val-every 2 --checkpoint-every 2 --threads 2 \
    > "$work/bpe.log" 2>&1; s=$?
check_bpe=$(python3 - "$work/bpe" "$work/raw_bpe/test.txt" <<'EOF'
import json, math, re, statistics, sys
out, raw = sys.argv[1], sys.argv[2]
runs = json.load(open(f"{out}/results.json"))["runs"]
words = sum(len(line.split()) + 1 for line in open(raw, encoding="utf-8").read().split("\n")[:-1])
report = open(f"{out}/report.md").read()
for variant in ("mamba2", "ssd-mamba"):
    rs = [r for r in runs if r["variant"] == variant]
    e = [r["eval"]["test_carry0"] for r in rs]
    per_word = statistics.mean(math.exp(x["loss"] * x["tokens"] / words) for x in e)
    per_token = statistics.mean(math.exp(x["loss"]) for x in e)
    row = next(l for l in report.splitlines() if l.startswith(f"| {variant} | 3 |"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    if not (cells[4].startswith(f"{per_token:.2f} ±") and cells[6].startswith(f"{per_word:.2f} ±")):
        print(f"problem: {variant} expected per token {per_token:.2f}, per word {per_word:.2f}: {cells}")
        break
    if not e[0]["tokens"] > words:
        print(f"problem: {e[0]['tokens']} BPE tokens for {words} words")
        break
else:
    print(f"test ppl per word = exp(total NLL / {words} words) over {e[0]['tokens']} BPE targets, "
          f"e.g. {per_word:.0f} per word vs {per_token:.0f} per token")
EOF
)
if [ $s -eq 0 ] && grep -q "test ppl per word (carried)" "$work/bpe/report.md" && ! grep -q problem <<< "$check_bpe"; then
    pass "compare_bpe_per_word" "$check_bpe"
else
    fail "compare_bpe_per_word" "exit $s: $check_bpe $(tail -3 "$work/bpe.log")"
fi

# ---- defaults: the output dir is not the committed results/, the presets' files are the repository's ----
defaults=$(cd "$work" && python3 - "$OLDPWD" << 'EOF'
import os, sys
repo = sys.argv[1]
sys.path.insert(0, os.path.join(repo, "scripts"))
import compare
problems = []
for preset in compare.PRESETS:
    a = compare.parse_args(["--preset", preset, "--report-only"])
    if a.out != os.path.join(repo, "runs", "compare", preset):
        problems.append(f"{preset}: out {a.out}")
    if not all(os.path.isfile(c) for c in a.configs) or not a.data.startswith(os.path.join(repo, "datasets")):
        problems.append(f"{preset}: configs {a.configs} data {a.data}")
seeds = {p: compare.parse_args(["--preset", p, "--report-only"]).seeds for p in compare.PRESETS}
if seeds != {"quick": 3, "paper": 5, "word-medium": 3, "gpt2-medium": 3, "gpt2-scaling": 3}:
    problems.append(f"seeds {seeds}")
print("; ".join(problems) if problems else f"from {os.getcwd()}: runs/compare/<preset>, configs and data of the "
      f"repository; seeds {seeds}")
EOF
)
if [ -n "$defaults" ] && ! grep -q ": out\|: configs\|^seeds\|Error" <<< "$defaults"; then
    pass "compare_defaults" "$defaults"
else
    fail "compare_defaults" "$defaults"
fi

# ---- --eval-tokens: the first N targets of val and test ----
python3 scripts/compare.py --configs "$work/word_scalar.json" "$work/word_diagonal.json" --data "$work/word" --raw "$work/raw" \
    --out "$work/firstn" --seeds 3 --steps 2 --batch 4 --seq-len 32 --val-every 2 --checkpoint-every 2 --eval-tokens 100 \
    --threads 2 > "$work/firstn.log" 2>&1; s=$?
firstn=$(python3 -c "
import json, sys
runs = json.load(open(sys.argv[1]))['runs']
tokens = {e['tokens'] for r in runs for e in r['eval'].values()}
print('ok' if len(runs) == 6 and tokens == {100} else f'{len(runs)} runs, eval tokens {tokens}')" "$work/firstn/results.json" 2>&1)
if [ $s -eq 0 ] && [ "$firstn" = ok ] && grep -q "the first targets of the val (100) and test (100) splits (--eval-tokens" "$work/firstn/report.md"; then
    pass "compare_eval_tokens" "6 runs, every evaluation over the first 100 targets, said in the report"
else
    fail "compare_eval_tokens" "exit $s, $firstn: $(tail -3 "$work/firstn.log")"
fi

# ---- a scaling sweep: d_state x width cells, parameters per cell, step times alone ----
python3 scripts/compare.py --configs "$work/word_scalar.json" "$work/word_diagonal.json" --data "$work/word" --raw "$work/raw" \
    --out "$work/scaling" --seeds 3 --steps 2 --batch 4 --seq-len 32 --val-every 2 --checkpoint-every 2 --eval-tokens 100 \
    --sweep-width 16 --sweep-d-state 4,8 --no-carried --timing-steps 6 --jobs 2 --threads 1 > "$work/scaling.log" 2>&1; s=$?
scaling=$(python3 -c "
import json, os, sys
out = sys.argv[1]
r = json.load(open(os.path.join(out, 'results.json')))
runs, timing = r['runs'], r['meta']['timing']
cells = sorted({(x['cell'], x['d_state']) for x in runs})
params = {(x['d_state'], x['variant']): x['params'] for x in runs}
extra = {n: params[(n, 'ssd-mamba')] - params[(n, 'mamba2')] for n in (4, 8)}
rows = [l for l in open(os.path.join(out, 'report.md')) if l.startswith('| 16 |')]
problems = []
if len(runs) != 12 or cells != [('w16-n4', 4), ('w16-n8', 8)]: problems.append(f'{len(runs)} runs, cells {cells}')
if extra != {4: 2 * 3, 8: 2 * 7}: problems.append(f'diagonal minus scalar parameters {extra}')
if any('val_carry1' in x['eval'] for x in runs): problems.append('a carried evaluation ran')
if sorted(timing) != ['w16-n4/mamba2', 'w16-n4/ssd-mamba', 'w16-n8/mamba2', 'w16-n8/ssd-mamba'] or min(timing.values()) <= 0:
    problems.append(f'timing {timing}')
if len(rows) != 2 or not os.path.isfile(os.path.join(out, 'scaling.png')): problems.append(f'{len(rows)} report rows')
print('; '.join(problems) or 'ok')" "$work/scaling" 2>&1)
if [ $s -eq 0 ] && [ "$scaling" = ok ]; then
    pass "compare_scaling_sweep" "2 cells x 2 variants x 3 seeds, d_state in the configs and parameters (diagonal: +nheads x (d_state - 1)), 4 step times alone, report rows and plot"
else
    fail "compare_scaling_sweep" "exit $s, $scaling: $(tail -3 "$work/scaling.log")"
fi

# ---- configs that do not fit ----
check_error() { # name expect args...
    local name="$1" expect="$2"; shift 2
    local out s
    out=$(python3 scripts/compare.py "$@" --out "$work/err" --steps 2 --batch 4 --seq-len 32 2>&1); s=$?
    if [ $s -ne 0 ] && grep -q -- "$expect" <<< "$out"; then pass "compare_error[$name]" "exit $s: $(tail -1 <<< "$out")"
    else fail "compare_error[$name]" "exit $s, expected '$expect': $(tail -2 <<< "$out")"; fi
}
check_error "vocab" "bpe_scalar.json: field 'vocab_size' is 50257 but the data's tokenizer.bin has $word_vocab" \
    --configs "$work/bpe_scalar.json" "$work/bpe_diagonal.json" --data "$work/word"
sed 's/"d_model":16/"d_model":32/' "$work/word_diagonal.json" > "$work/wide_diagonal.json"
check_error "not identical" "they differ in d_model" --configs "$work/word_scalar.json" "$work/wide_diagonal.json" --data "$work/word"
check_error "same structure" "need one scalar and one diagonal" --configs "$work/word_scalar.json" "$work/word_scalar.json" --data "$work/word"
check_error "seeds" "at least 3" --seeds 2 --configs "$work/word_scalar.json" "$work/word_diagonal.json" --data "$work/word"
check_error "trainer" "not an executable" --trainer ./no_such_trainer --configs "$work/word_scalar.json" "$work/word_diagonal.json" --data "$work/word"

# ---- the time-left estimate of a sweep whose runs skip the carried-state evaluation ----
out=$(python3 - 2>&1 <<'PY'
import sys
sys.path.insert(0, "scripts")
import compare
sweep = compare.Sweep(4, 2)
sweep.finished(5.0, None)   # a --no-carried run
sweep.finished()            # a run skipped as already done
print("carried", sweep.carried_seconds())
sweep.finished(6.0, 2.5)
print("carried", sweep.carried_seconds())
PY
)
if grep -q "^carried None" <<< "$out" && grep -q "^carried 2.5" <<< "$out"; then
    pass "sweep_progress_without_carried" "no carried time until a run has one, then its mean"
else
    fail "sweep_progress_without_carried" "$out"
fi
