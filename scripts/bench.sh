#!/usr/bin/env bash
# GPU benchmark (make bench): train_ssdcu on mamba2-130m and ssd-mamba-130m at B=8 x T=2048 on
# synthetic random tokens, then the SSD scan alone (test_ssd_scan --bench). Prints tokens/s, ms per
# step (mean of the timed steps, the first excluded), device memory in use, and MFU, beside the
# reference figures of one H100 80GB (PyTorch + Triton mamba_ssm). MFU counts 6 x (matmul
# parameters, the tied lm_head included) FLOPs per token, the SSD scan not counted, over the dense
# bf16 peak of the GPU (989 TFLOP/s for H100/H200 SXM).
#   STEPS=12 scripts/bench.sh
# Activation recomputation (-r): memory and speed with -r 0, 1, 2 for mamba2-130m at B=8 x T=2048 and
# B=1 x T=131072, and mamba2-2.7b at B=8 x T=2048 (-r 1 and 2 only if -r 0 does not fit); the logs stay
# in $BENCH_LOGS (default: a temporary directory, removed):
#   STEPS=6 BENCH_LOGS=bench_logs scripts/bench.sh recompute
# Where one step's GPU time goes (Nsight Compute, kernel durations only): mamba2-130m (or PROFILE_CONFIG) at
# B=8 (or PROFILE_B) x T=2048, the second training step's kernels grouped by name, largest first, and by kind
# (SSD scan, ...):
#   scripts/bench.sh profile
#   PROFILE_CONFIG=configs/ssd-mamba-130m.json scripts/bench.sh profile
#   PROFILE_CONFIG=configs/mamba2-1.3b.json PROFILE_B=4 scripts/bench.sh profile
# Document boundaries (-db 1): mamba2-130m at B=8 x T=2048 on a shard of documents of random lengths (mean
# ~500 tokens, each starting with the end-of-text id 50256, as scripts/prepro.py writes them; its tokenizer.bin
# beside it records that id), with and without -db 1: tokens/s of both and the cost of the boundaries in %
# (issue #16: at most 5%):
#   STEPS=12 BENCH_LOGS=bench_logs scripts/bench.sh documents
cd "$(dirname "$0")/.." || exit 1
mode=${1:-default}
case "$mode" in default | recompute | profile | documents) ;; *) echo "usage: $0 [recompute | profile | documents]"; exit 1 ;; esac
steps=${STEPS:-12}
[ "$mode" = profile ] && steps=3
if [ -n "$BENCH_LOGS" ]; then
    work=$BENCH_LOGS
    mkdir -p "$work" || exit 1
else
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
fi
[ -x ./train_ssdcu ] || { echo "bench: build train_ssdcu first (make train_ssdcu)"; exit 1; }

# a shard of random GPT-2 token ids, enough for the steps at the largest B x T (llm.c's shard format, uint16)
max_tokens=$((8 * 2048))
[ "$mode" = recompute ] && max_tokens=131072
python3 - "$work" $(( (steps + 1) * max_tokens + 1 )) "$mode" <<'PY'
import os, sys, numpy as np
work, ntok, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
vocab, eot = 50257, 50256
rng = np.random.default_rng(1234)
tokens = rng.integers(0, eot, size=ntok, dtype=np.uint16)
if mode == "documents":
    # documents of exponentially distributed lengths, mean ~500 tokens, each opened by the end of text
    starts = np.cumsum(1 + rng.exponential(499.0, size=ntok // 100).astype(np.int64))
    tokens[np.concatenate(([0], starts[starts < ntok]))] = eot
    # tokenizer.bin (data/tokenizer.h): [magic, version, vocab, eot, kind gpt2]; each id's bytes are its number
    header = np.zeros(256, dtype="<i4")
    header[:5] = [20251123, 1, vocab, eot, 1]
    parts = [header.tobytes()]
    for i in range(vocab):
        b = str(i).encode()
        parts += [np.uint32(len(b)).tobytes(), b]
    with open(os.path.join(work, "tokenizer.bin.tmp"), "wb") as f:
        f.write(b"".join(parts))
    os.replace(os.path.join(work, "tokenizer.bin.tmp"), os.path.join(work, "tokenizer.bin"))
header = np.zeros(256, dtype=np.int32)
header[:3] = [20240520, 1, ntok]
with open(os.path.join(work, "synthetic_train_000000.bin"), "wb") as f:
    f.write(header.tobytes())
    f.write(tokens.tobytes())
PY

gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2> /dev/null | head -n 1)
rows=()
# run_config <config> <B> <T> <recompute level> [flags]: trains $steps steps, adds a table row and sets tokens_per_s
# (the mean over the steps after the first); fails if the run did
run_config() {
    local config=$1 B=$2 T=$3 level=$4 flags=$5 name log row
    name=$(basename "$config" .json)
    log="$work/$name-b$B-t$T-r$level${flags// /}.log"
    if ! ./train_ssdcu -e "$config" -i "$work/synthetic_train_*.bin" -v 0 -g 0 -sh 0 -b "$B" -t "$T" -r "$level" \
        $flags -x "$steps" > "$log" 2>&1; then
        echo "bench: $name B=$B T=$T -r $level failed: $(grep -m 1 error "$log" || tail -n 1 "$log")"
        return 1
    fi
    grep -E '^step|^average|^device|^activations' "$log" | sed "s/^/[$name B=$B T=$T -r $level] /"
    row=$(python3 - "$config" "$log" "$B" "$T" "$level" <<'PY'
import json, re, sys
c = json.load(open(sys.argv[1]))
log = open(sys.argv[2]).read()
B, T, level = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
D, L, V = c["d_model"], c["n_layer"], c["vocab_size"]
Vp = (V + c["pad_vocab_multiple"] - 1) // c["pad_vocab_multiple"] * c["pad_vocab_multiple"]
E = c["expand"] * D; H = E // c["headdim"]; GN = c["ngroups"] * c["d_state"]
dip = 2 * E + 2 * GN + H
flops_per_token = 6 * (L * (D * dip + E * D) + D * Vp)
ms = float(re.search(r"average ([0-9.]+) ms per step", log).group(1))
tok_s = B * T / (ms / 1e3)
mem = float(re.search(r"in use after the first step: ([0-9.]+) GiB", log).group(1))
est = float(re.search(r"estimated device memory ([0-9.]+) GiB", log).group(1))
mfu = flops_per_token * tok_s / 989e12 * 100
print(round(tok_s))
print(f"| {c['name']:<15} | {B:>2} x {T:<6} | {level:>2} | {tok_s/1e3:8.1f}K | {ms:8.1f} | {mem:8.2f} | {est:8.2f} | {mfu:5.1f}% |")
PY
)
    tokens_per_s=${row%%$'\n'*}
    rows+=("${row#*$'\n'}")
}

if [ "$mode" = profile ]; then
    command -v ncu > /dev/null || { echo "bench: profile needs Nsight Compute (ncu) on the PATH"; exit 1; }
    # step 1 warms up (cuBLASLt heuristics, first allocations); step 2, between the first two AdamW launches'
    # ends, is the one reported; --clock-control none leaves the GPU at its own clocks, as a training run
    ncu --clock-control none --metrics gpu__time_duration.sum --csv --print-units base \
        ./train_ssdcu -e "${PROFILE_CONFIG:-configs/mamba2-130m.json}" -i "$work/synthetic_train_*.bin" -v 0 -g 0 -sh 0 \
        -b "${PROFILE_B:-8}" -t 2048 \
        -x "$steps" > "$work/profile.csv" 2> "$work/profile.err" || { tail -n 5 "$work/profile.err"; exit 1; }
    python3 scripts/profile_table.py "$work/profile.csv" --gpu "${gpu:-unknown GPU}" \
        --model "$(basename "${PROFILE_CONFIG:-configs/mamba2-130m.json}" .json)" --batch "${PROFILE_B:-8}"
    exit 0
fi

if [ "$mode" = documents ]; then
    run_config configs/mamba2-130m.json 8 2048 0 || exit 1
    without=$tokens_per_s
    run_config configs/mamba2-130m.json 8 2048 0 "-db 1" || exit 1
    with=$tokens_per_s
    grep -m 1 '^document boundaries' "$work/mamba2-130m-b8-t2048-r0-db1.log"
    echo
    echo "train_ssdcu mamba2-130m, B=8 x T=2048, bf16, $steps steps, documents of mean ~500 tokens, on: ${gpu:-unknown GPU}"
    awk -v a="$without" -v b="$with" 'BEGIN {
        printf "without -db: %d tokens/s | with -db 1: %d tokens/s | cost of the boundaries: %.2f%% of the step (issue #16: at most 5%%)\n",
               a, b, 100 * (a - b) / a }'
    exit 0
fi

if [ "$mode" = recompute ]; then
    for level in 0 1 2; do run_config configs/mamba2-130m.json 8 2048 $level; done
    for level in 0 1 2; do run_config configs/mamba2-130m.json 1 131072 $level; done
    for level in 0 1 2; do run_config configs/mamba2-2.7b.json 8 2048 $level && break; done
    echo
    echo "train_ssdcu with activation recomputation, bf16, $steps steps, on: ${gpu:-unknown GPU}"
    echo "| config          | B x T       | -r | tokens/s  | ms/step  | mem GiB  | est. GiB | MFU    |"
    echo "|-----------------|-------------|----|-----------|----------|----------|----------|--------|"
    for row in "${rows[@]}"; do echo "$row"; done
    echo "(mem: in use after the first step, CUDA context included; est.: train_ssdcu's own allocations)"
    exit 0
fi

for config in configs/mamba2-130m.json configs/ssd-mamba-130m.json; do run_config "$config" 8 2048 0; done

ssd_bin=build/gpu/BF16/test_ssd_scan
ssd_out="(not built: make $ssd_bin)"
[ -x "$ssd_bin" ] && ssd_out=$("$ssd_bin" --bench 2>&1 | tail -n 8)

echo
echo "SSD scan alone ($ssd_bin --bench):"
echo "$ssd_out"
echo
echo "train_ssdcu, bf16, $steps steps, on: ${gpu:-unknown GPU}"
echo "| config          | B x T       | -r | tokens/s  | ms/step  | mem GiB  | est. GiB | MFU    |"
echo "|-----------------|-------------|----|-----------|----------|----------|----------|--------|"
for row in "${rows[@]}"; do echo "$row"; done
echo "| ref: mamba_ssm 130M (H100, PyTorch+Triton) | 102K tok/s | 161 ms (137 ms GPU kernels) | 22.8 GiB peak |"
echo "| ref: llm.c GPT-2 124M (H100)               | ~305K tok/s |"
echo "| target                                     | >= 150K tok/s |"
