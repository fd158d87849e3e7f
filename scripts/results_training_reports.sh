#!/usr/bin/env bash
# Turns the raw output of scripts/results_gpu_training.sh (the directory OUT, brought back here) into the committed
# reports: results/wikitext2-lastword, results/wikitext2-scaling and results/parity-torch. Give every OUT
# of the runs (one per GPU command when the items ran separately); each item's folder is taken where found.
#   bash scripts/results_training_reports.sh OUT [OUT...]
set -eu
[ $# -ge 1 ] || { echo "usage: bash scripts/results_training_reports.sh OUT [OUT...]"; exit 1; }
dirs=()
for R in "$@"; do
    [ -d "$R" ] || { echo "error: $R is not a directory"; exit 1; }
    dirs+=("$(cd "$R" && pwd)")
done
cd "$(dirname "$0")/.."
for R in "${dirs[@]}"; do
if [ -d "$R/lastword" ]; then
    python3 scripts/lastword.py report --runs "$R/lastword" --out results/wikitext2-lastword
fi
if [ -d "$R/scaling" ]; then
    python3 scripts/compare.py --preset gpt2-scaling --trainer ./train_ssdcu --out "$R/scaling" --jobs 8 --report-only
    mkdir -p results/wikitext2-scaling
    cp "$R/scaling/report.md" "$R/scaling/scaling.png" "$R/scaling/results.json" "$R/scaling/command.txt" \
       results/wikitext2-scaling/
    cp -r "$R/scaling/configs" results/wikitext2-scaling/
    if [ -f "$R/scaling/timing/timing.json" ]; then cp "$R/scaling/timing/timing.json" results/wikitext2-scaling/; fi
fi
if [ -d "$R/parity" ]; then
    python3 scripts/parity_torch.py report --out "$R/parity"
    mkdir -p results/parity-torch
    for f in report.md parity.png parity.json command.txt settings.json config.json torch_losses.json \
             train_ssdcu.log train_ssd.log; do
        if [ -f "$R/parity/$f" ]; then cp "$R/parity/$f" results/parity-torch/; fi
    done
fi
done
ls results/wikitext2-lastword results/wikitext2-scaling results/parity-torch 2>/dev/null
