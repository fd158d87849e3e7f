#!/usr/bin/env bash
# Training with a carried state (-cs 1) on a tiny byte-level model on Tiny Shakespeare, T 32, one OpenMP thread:
#  (the stream layout is checked by test_data_loader, the model's carried forward and backward by test_carry)
#  - save at step 6 and resume: steps 7-12 bit-identical to the uninterrupted run, the final model file
#    byte-identical (the carried states come back from the checkpoint exactly); resuming with -cs 1 a
#    checkpoint written without it is refused;
#  - 2 MPI ranks x B 2 equal 1 rank x B 2 with 2-fold accumulation (the same streams: loss 1e-5 relative),
#    and the 2-rank run resumes bit-identically on 2 ranks, while resuming it on 1 rank is refused;
#  - -cs 1 with -sh 1 is refused. (train_ssdcu's -cs 1: tests/gpu/test_train.sh.)
source "$(dirname "$0")/common.sh"

python3 scripts/prepro.py --tokenizer bytes --input ../shared/data/tinyshakespeare/input.txt --out "$work/data" > "$work/prep.log" 2>&1 ||
    { fail "carry_prepare_data" "$(tail -3 "$work/prep.log")"; exit 1; }
printf '{"name":"carry-test","d_model":32,"n_layer":2,"vocab_size":256,"pad_vocab_multiple":8,"d_state":8,"d_conv":4,"expand":2,"headdim":16,"ngroups":1,"chunk_size":16}' > "$work/model.json"
common=(-e "$work/model.json" -i "$work/data/*_train_*.bin" -j "$work/data/*_val_*.bin" -b 2 -t 32 -d 128
        -l 3e-3 -u 2 -v 0 -g 0 -th 1 -x 12 -sh 0)
steps() { grep -E '^step +[0-9]+/' "$1" | sed -E 's/ \| [0-9.]+ ms.*//'; }
drop_step12() { rm -f "$1/DONE_00000012" "$1/model_00000012.bin" "$1"/state_00000012_*.bin; }

# ---- resume restores the carried states exactly ----
./train_ssd "${common[@]}" -cs 1 -n 6 -o "$work/full" > "$work/full.log" 2>&1
cp -r "$work/full" "$work/half"
drop_step12 "$work/half"
./train_ssd "${common[@]}" -cs 1 -n 6 -y 1 -o "$work/half" > "$work/resume.log" 2>&1
if [ "$(steps "$work/full.log" | wc -l)" -eq 12 ] && grep -q "resumed from .* at step 6$" "$work/resume.log" &&
   [ "$(steps "$work/full.log" | tail -6)" = "$(steps "$work/resume.log")" ] &&
   cmp -s "$work/full/model_00000012.bin" "$work/half/model_00000012.bin"; then
    pass "carry_resume_exact" "steps 7-12 bit-identical, model_00000012.bin byte-identical"
else
    fail "carry_resume_exact" "$(steps "$work/resume.log" | tail -1) vs $(steps "$work/full.log" | tail -1); $(tail -2 "$work/resume.log")"
fi

# ---- refusals ----
if ./train_ssd "${common[@]}" -cs 1 -sh 1 > "$work/sh.log" 2>&1; then
    fail "carry_refuses_shuffle" "ran with -cs 1 -sh 1"
elif grep -q "give -sh 0" "$work/sh.log"; then
    pass "carry_refuses_shuffle" "$(grep error "$work/sh.log")"
else
    fail "carry_refuses_shuffle" "$(tail -1 "$work/sh.log")"
fi
./train_ssd "${common[@]}" -n 6 -o "$work/plain" > "$work/plain.log" 2>&1
drop_step12 "$work/plain"
if ./train_ssd "${common[@]}" -cs 1 -n 6 -y 1 -o "$work/plain" > "$work/mix.log" 2>&1; then
    fail "carry_resume_needs_carry" "resumed a checkpoint without carried states"
else
    pass "carry_resume_needs_carry" "$(grep error "$work/mix.log" | head -1)"
fi

# ---- two ranks ----
if ! command -v mpirun > /dev/null || ! nm train_ssd 2> /dev/null | grep -q MPI_Init; then
    exit 0 # tests/test_ranks.sh reports a missing MPI
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
ranks=(-e "$work/model.json" -i "$work/data/*_train_*.bin" -j "$work/data/*_val_*.bin" -b 2 -t 32 -d 128
       -l 3e-3 -u 2 -v 0 -g 0 -th 1 -x 12 -sh 0 -cs 1)
mpirun --oversubscribe -np 2 ./train_ssd "${ranks[@]}" -n 6 -o "$work/two" > "$work/two.log" 2>&1
d=$(paste <(steps "$work/two.log" | sed -E 's/.*loss ([0-9.]+).*/\1/') <(steps "$work/full.log" | sed -E 's/.*loss ([0-9.]+).*/\1/') |
    awk 'NF != 2 { bad = 1 } { x = ($1 - $2) / $2; if (x < 0) x = -x; if (x > m) m = x; n++ }
         END { if (bad || n != 12) print "inf"; else printf "%.3g\n", m }')
if awk -v d="$d" 'BEGIN { exit !(d != "inf" && d <= 1e-5) }'; then
    pass "carry_two_ranks_equal_accumulation" "2 ranks x B 2 vs 1 rank x B 2 x 2 micro-batches: 12 step losses max rel diff $d (tol 1e-5)"
else
    fail "carry_two_ranks_equal_accumulation" "max rel diff $d; $(tail -2 "$work/two.log")"
fi
cp -r "$work/two" "$work/two_half"
drop_step12 "$work/two_half"
cp -r "$work/two_half" "$work/two_on_one"
mpirun --oversubscribe -np 2 ./train_ssd "${ranks[@]}" -n 6 -y 1 -o "$work/two_half" > "$work/two_resume.log" 2>&1
if [ "$(steps "$work/two.log" | tail -6)" = "$(steps "$work/two_resume.log")" ] && [ -n "$(steps "$work/two_resume.log")" ] &&
   cmp -s "$work/two/model_00000012.bin" "$work/two_half/model_00000012.bin"; then
    pass "carry_resume_two_ranks_exact" "each rank's carried states restored: steps 7-12 bit-identical"
else
    fail "carry_resume_two_ranks_exact" "$(tail -2 "$work/two_resume.log")"
fi
if ./train_ssd "${ranks[@]}" -n 6 -y 1 -o "$work/two_on_one" > "$work/two_on_one.log" 2>&1; then
    fail "carry_resume_other_world_refused" "a 2-rank carried checkpoint resumed on 1 rank"
elif grep -q "written by 2 ranks" "$work/two_on_one.log"; then
    pass "carry_resume_other_world_refused" "$(grep error "$work/two_on_one.log")"
else
    fail "carry_resume_other_world_refused" "$(tail -1 "$work/two_on_one.log")"
fi
