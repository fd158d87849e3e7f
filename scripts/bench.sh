#!/usr/bin/env bash
# GPU benchmark (make bench): train_ssdcu on mamba2-130m and ssd-mamba-130m at B=8 x T=2048 on
# synthetic random tokens, then the SSD scan alone (test_ssd_scan --bench). Prints tokens/s, ms per
# step (mean of the timed steps, the first excluded), device memory in use, and MFU, beside the
# reference figures of one H100 80GB (PyTorch + Triton mamba_ssm). MFU counts 6 x (matmul
# parameters, the tied lm_head included) FLOPs per token, the SSD scan not counted, over the dense
# bf16 peak of the GPU (989 TFLOP/s for H100/H200 SXM).
#   STEPS=12 scripts/bench.sh
cd "$(dirname "$0")/.." || exit 1
steps=${STEPS:-12}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
[ -x ./train_ssdcu ] || { echo "bench: build train_ssdcu first (make train_ssdcu)"; exit 1; }

# a shard of random GPT-2 token ids, enough for the steps (llm.c's shard format, uint16)
python3 - "$work/synthetic_train_000000.bin" $(( (steps + 1) * 8 * 2048 + 1 )) <<'PY'
import sys, numpy as np
path, ntok = sys.argv[1], int(sys.argv[2])
header = np.zeros(256, dtype=np.int32)
header[:3] = [20240520, 1, ntok]
tokens = np.random.default_rng(1234).integers(0, 50257, size=ntok, dtype=np.uint16)
with open(path, "wb") as f:
    f.write(header.tobytes())
    f.write(tokens.tobytes())
PY

gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2> /dev/null | head -n 1)
rows=()
for config in configs/mamba2-130m.json configs/ssd-mamba-130m.json; do
    name=$(basename "$config" .json)
    log="$work/$name.log"
    ./train_ssdcu -e "$config" -i "$work/synthetic_train_*.bin" -v 0 -g 0 -sh 0 -b 8 -t 2048 -x "$steps" > "$log" 2>&1 ||
        { echo "bench: $name failed"; tail -n 5 "$log"; continue; }
    grep -E '^step|^average|^device' "$log" | sed "s/^/[$name] /"
    row=$(python3 - "$config" "$log" <<'PY'
import json, re, sys
c = json.load(open(sys.argv[1]))
log = open(sys.argv[2]).read()
D, L, V = c["d_model"], c["n_layer"], c["vocab_size"]
Vp = (V + c["pad_vocab_multiple"] - 1) // c["pad_vocab_multiple"] * c["pad_vocab_multiple"]
E = c["expand"] * D; H = E // c["headdim"]; GN = c["ngroups"] * c["d_state"]
dip = 2 * E + 2 * GN + H
flops_per_token = 6 * (L * (D * dip + E * D) + D * Vp)
ms = float(re.search(r"average ([0-9.]+) ms per step", log).group(1))
tok_s = 8 * 2048 / (ms / 1e3)
mem = float(re.search(r"in use after the first step: ([0-9.]+) GiB", log).group(1))
mfu = flops_per_token * tok_s / 989e12 * 100
print(f"| {c['name']:<15} | {tok_s/1e3:8.1f}K | {ms:8.1f} | {mem:8.1f} | {mfu:5.1f}% |")
PY
)
    rows+=("$row")
done

ssd_bin=build/gpu/BF16/test_ssd_scan
ssd_out="(not built: make $ssd_bin)"
[ -x "$ssd_bin" ] && ssd_out=$("$ssd_bin" --bench 2>&1 | tail -n 8)

echo
echo "SSD scan alone ($ssd_bin --bench):"
echo "$ssd_out"
echo
echo "train_ssdcu, B=8 x T=2048, bf16, $steps steps, on: ${gpu:-unknown GPU}"
echo "| config          | tokens/s  | ms/step  | mem GiB  | MFU    |"
echo "|-----------------|-----------|----------|----------|--------|"
for row in "${rows[@]}"; do echo "$row"; done
echo "| ref: mamba_ssm 130M (H100, PyTorch+Triton) | 102K tok/s | 161 ms (137 ms GPU kernels) | 22.8 GiB peak |"
echo "| ref: llm.c GPT-2 124M (H100)               | ~305K tok/s |"
echo "| target                                     | >= 150K tok/s |"
