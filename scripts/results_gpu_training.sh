#!/usr/bin/env bash
# Issue 18, items 4-6, on one GPU machine: the WikiText-2 last-word experiment (scripts/lastword.py), the
# d_state x width scaling sweep (scripts/compare.py --preset gpt2-scaling) and the loss-curve parity with
# PyTorch (scripts/parity_torch.py). Each item runs under its own time cap; logs and raw numbers go to OUT.
#
#   bash scripts/results_gpu_training.sh OUT [DATA] [ITEMS]     e.g. bash scripts/results_gpu_training.sh $OUT datasets "4 6"
#
# DATA (default datasets) must hold wikitext2_lastword/ (scripts/prepare_lastword.py), wikitext2_gpt2/
# (scripts/prepro.py --recipe wikitext2 --tokenizer gpt2) and parity_bytes/ (scripts/parity_torch.py data).
# ITEMS defaults to "4 5 6" (about 3 + 6 + 3 minutes after the build). Afterwards, where the repository is:
#   bash scripts/results_training_reports.sh OUT
set -u
OUT=${1:?usage: bash scripts/results_gpu_training.sh OUT [DATA] [ITEMS]}
DATA=${2:-datasets}
ITEMS=${3:-4 5 6}
WORK=${WORK:-/tmp/ssd_issue18b}
mkdir -p "$OUT" "$WORK"
# builds what is missing or stale (a machine that built them before keeps its build outputs)
make -j 16 train_ssd train_ssdcu > "$OUT/build.log" 2>&1 || { tail -20 "$OUT/build.log"; exit 1; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT/device.txt" 2>&1
status=0
for item in $ITEMS; do
    start=$SECONDS
    case $item in
        4) name=lastword
           timeout 200 python3 scripts/lastword.py run --trainer ./train_ssdcu --data "$DATA/wikitext2_lastword" \
               --out "$OUT/lastword" --jobs 12 --time-cap 180 > "$OUT/lastword.log" 2>&1 ;;
        5) name=scaling  # the runs' models and checkpoints (GBs) stay in $WORK; their logs and results go to OUT
           timeout -s INT 390 python3 scripts/compare.py --preset gpt2-scaling --trainer ./train_ssdcu \
               --data "$DATA/wikitext2_gpt2" --out "$WORK/scaling" --jobs 8 --checkpoint-every 300 \
               --progress-every 30 > "$OUT/scaling.log" 2>&1
           code=$?
           mkdir -p "$OUT/scaling"
           (cd "$WORK/scaling" && find . -type f \( -name '*.json' -o -name '*.log' -o -name '*.txt' \) \
                -exec cp --parents {} "$OUT/scaling/" \;)
           (exit $code) ;;
        6) name=parity
           timeout 240 python3 scripts/parity_torch.py run --data "$DATA/parity_bytes" --out "$OUT/parity" \
               --cpu-seconds 100 > "$OUT/parity.log" 2>&1 ;;
        *) echo "unknown item $item (4, 5 or 6)"; exit 1 ;;
    esac
    code=$?
    [ $code -ne 0 ] && status=1
    echo "item $item: exit $code after $((SECONDS - start)) s"
    tail -4 "$OUT/$name.log"
done
exit $status
