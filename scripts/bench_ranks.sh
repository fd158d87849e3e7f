#!/usr/bin/env bash
# Multi-GPU benchmark: train_ssdcu at W = 1, 2, 4, 8 GPUs (as many as this machine has, or the list in
# WORLDS), one process per GPU with torchrun's variables, with and without ZeRO-1, on synthetic
# random tokens; mamba2-130m at B=8 x T=2048 per GPU and mamba2-1.3b (and 2.7b with BIG=1) at
# B=4 x T=2048 per GPU. Prints per row: tokens/s over all GPUs, ms per step (mean of the steps after
# the first), scaling efficiency (tokens/s over W x the one-GPU figure), device memory in use after
# the first step (the largest rank's), and the share of the gradient all-reduce hidden behind the
# backward: 1 - (time a step waits for the buckets after the backward's last kernel) / (time of one
# all-reduce of the gradients alone); the trainer measures both with CUDA events and prints them at
# the end of a multi-rank run.
#   STEPS=10 WORLDS="1 2" scripts/bench_ranks.sh
cd "$(dirname "$0")/.." || exit 1
steps=${STEPS:-10}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
[ -x ./train_ssdcu ] || { echo "bench_ranks: build train_ssdcu first (make train_ssdcu)"; exit 1; }
gpus=$(nvidia-smi -L 2> /dev/null | grep -c '^GPU')
worlds=${WORLDS:-$(for w in 1 2 4 8; do [ "$w" -le "${gpus:-0}" ] && echo $w; done)}
export NCCL_NVLS_ENABLE="${NCCL_NVLS_ENABLE:-0}"
configs=("configs/mamba2-130m.json:8" "configs/mamba2-1.3b.json:4")
[ "${BIG:-0}" = 1 ] && configs+=("configs/mamba2-2.7b.json:4")

# random GPT-2 token ids for the largest world (llm.c's shard format, uint16)
max_world=$(echo "$worlds" | tr ' ' '\n' | sort -n | tail -1)
python3 - "$work/synthetic_train_000000.bin" $(( (steps + 1) * max_world * 8 * 2048 + 1 )) <<'PY'
import sys, numpy as np
path, ntok = sys.argv[1], int(sys.argv[2])
header = np.zeros(256, dtype=np.int32)
header[:3] = [20240520, 1, ntok]
with open(path, "wb") as f:
    f.write(header.tobytes())
    f.write(np.random.default_rng(1234).integers(0, 50257, size=ntok, dtype=np.uint16).tobytes())
PY

# run_world LOG W B CONFIG ZERO: W processes; rank k logs to LOG.k
run_world() {
    local log="$1" world="$2" B="$3" config="$4" zero="$5"
    local port ps=() status=0
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    for ((k = 0; k < world; k++)); do
        local launcher=()
        [ "$world" -gt 1 ] && launcher=(env RANK=$k WORLD_SIZE=$world LOCAL_RANK=$k LOCAL_WORLD_SIZE=$world
                                        MASTER_ADDR=127.0.0.1 MASTER_PORT=$port)
        "${launcher[@]}" ./train_ssdcu -e "$config" -i "$work/synthetic_train_*.bin" -v 0 -g 0 -sh 0 -b "$B" -t 2048 \
            -x "$steps" -z "$zero" > "$log.$k" 2>&1 &
        ps+=($!)
    done
    for p in "${ps[@]}"; do wait "$p" || status=1; done
    return $status
}

rows=()
for entry in "${configs[@]}"; do
    config=${entry%%:*}; B=${entry##*:}; name=$(basename "$config" .json)
    one_ms=""
    for world in $worlds; do
        for zero in 0 1; do
            [ "$world" = 1 ] && [ "$zero" = 1 ] && continue  # ZeRO-1 on one GPU shards nothing
            log="$work/$name.w$world.z$zero.log"
            if ! run_world "$log" "$world" "$B" "$config" "$zero"; then
                echo "bench_ranks: $name W=$world zero=$zero failed:"; tail -n 5 "$log".*; continue
            fi
            grep -hE '^average|^device memory|^all-reduce' "$log.0" | sed "s/^/[$name W=$world z=$zero] /"
            row=$(python3 - "$log" "$world" "$B" "$zero" "$name" "${one_ms:-0}" <<'PY'
import glob, re, sys
log, world, B, zero, name, one_ms = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], float(sys.argv[6])
text0 = open(log + ".0").read()
ms = float(re.search(r"average ([0-9.]+) ms per step", text0).group(1))
mem = max(float(m) for f in glob.glob(log + ".*") for m in re.findall(r"in use after the first step: ([0-9.]+) GiB", open(f).read()))
tok_s = world * B * 2048 / (ms / 1e3)
eff = "" if one_ms == 0 else f"{(one_ms / ms) * 100:.1f}%"
ar = re.search(r"all-reduce of the [0-9]+ gradients alone: ([0-9.]+) ms", text0)
exposed = re.search(r"all-reduce exposed after the backward: ([0-9.]+) ms per step", text0)
hidden = ""
if ar and exposed and zero == "0":
    alone, tail = float(ar.group(1)), float(exposed.group(1))
    hidden = f"{max(0.0, 1 - tail / alone) * 100:.0f}% of {alone:.2f} ms ({tail:.2f} ms exposed)"
print(f"| {name:<12} | {world} | {'ZeRO-1' if zero == '1' else 'all-reduce':<10} | {tok_s/1e3:8.1f}K | {ms:8.1f} | {eff or '-':>6} | {mem:6.1f} | {hidden or '-'} |")
print(f"MS {ms}")
PY
)
            rows+=("$(grep -v '^MS ' <<< "$row")")
            [ "$world" = 1 ] && one_ms=$(sed -n 's/^MS //p' <<< "$row")
        done
    done
done

echo
echo "train_ssdcu, bf16, $steps steps, T=2048, on $(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1) x ${gpus:-0}"
echo "| config       | W | gradients  | tokens/s  | ms/step  | scaling | GiB/GPU | all-reduce hidden |"
echo "|--------------|---|------------|-----------|----------|---------|---------|-------------------|"
for row in "${rows[@]}"; do echo "$row"; done
