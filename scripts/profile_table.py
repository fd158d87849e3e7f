#!/usr/bin/env python3
"""
The per-kernel table of one training step from Nsight Compute's CSV (scripts/bench.sh profile):
  ncu --metrics gpu__time_duration.sum --csv --print-units base ./train_ssdcu ... > profile.csv
  python3 scripts/profile_table.py profile.csv [--gpu NAME] [--model NAME] [--batch B]
The step reported is the second one: the kernels after the end of the first AdamW update up to the end of
the second (each update launches adamw_kernel once per parameter group or shard, in a row). Prints the
kernels grouped by name, largest first, then by kind, in milliseconds per step and share of the step.
"""
import argparse
import csv
import io
import re
import sys

KINDS = [  # (kind, pattern on the kernel name), first match wins
    ("SSD scan", r"^(void )?ssd"),
    ("matmuls (cuBLASLt)", r"nvjet|gemm|cutlass|xmma|splitK|Kernel2"),
    ("norms and gated norm", r"rmsnorm|gated_norm"),
    ("conv1d", r"conv1d"),
    ("classifier (lm_head loss)", r"classifier|mean_loss"),
    ("AdamW and gradient norm", r"adamw|norm_squared|norm_finish|sqrt_in_place"),
    ("parameter-gradient sums", r"sum_rows"),
    ("embedding", r"encoder"),
]


def kind_of(name):
    for kind, pattern in KINDS:
        if re.search(pattern, name):
            return kind
    return "other (casts, copies, residual adds)"


def read_kernels(path):
    """[(kernel name, duration in ms)] in launch order."""
    text = open(path, errors="replace").read()
    start = text.find('"ID"')
    if start < 0:
        sys.exit(f"error: {path} holds no ncu CSV table (no \"ID\" header)")
    rows = csv.DictReader(io.StringIO(text[start:]))
    kernels = []
    for row in rows:
        if row.get("Metric Name") != "gpu__time_duration.sum":
            continue
        value = float(row["Metric Value"].replace(",", ""))
        kernels.append((row["Kernel Name"], value / 1e6))  # ns -> ms
    return kernels


def second_step(kernels):
    """The kernels of the second step: after the first run of adamw launches, through the second run."""
    runs, inside = [], False  # runs: index one past the end of each run of adamw launches
    for i, (name, _) in enumerate(kernels):
        is_adamw = "adamw_kernel" in name
        if inside and not is_adamw:
            runs.append(i)
        inside = is_adamw
    if inside:
        runs.append(len(kernels))
    if len(runs) < 2:
        sys.exit(f"error: found {len(runs)} AdamW updates in the profile; need at least 2 steps")
    return kernels[runs[0]:runs[1]]


def short_name(name):
    name = re.sub(r"^void ", "", name)
    return name if len(name) <= 60 else name[:57] + "..."


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("csv")
    ap.add_argument("--gpu", default="unknown GPU")
    ap.add_argument("--model", default="mamba2-130m", help="the profiled model's name, for the title")
    ap.add_argument("--batch", type=int, default=8, help="the profiled batch size B, for the title")
    ap.add_argument("--top", type=int, default=25, help="kernel names listed (default 25)")
    args = ap.parse_args()
    step = second_step(read_kernels(args.csv))
    total = sum(ms for _, ms in step)
    by_name, by_kind = {}, {}
    for name, ms in step:
        key = re.sub(r"[<(].*", "", short_name(name))  # template instances of one kernel together
        calls, acc = by_name.get(key, (0, 0.0))
        by_name[key] = (calls + 1, acc + ms)
        by_kind[kind_of(name)] = by_kind.get(kind_of(name), 0.0) + ms
    print(f"One training step of {args.model}, B={args.batch} x T=2048, bf16, on {args.gpu}: {len(step)} kernel launches, "
          f"{total:.2f} ms of GPU time (Nsight Compute durations, kernels one at a time)")
    print()
    print("| kernel | calls | ms per step | share |")
    print("| --- | --- | --- | --- |")
    for key, (calls, ms) in sorted(by_name.items(), key=lambda kv: -kv[1][1])[:args.top]:
        print(f"| `{key}` | {calls} | {ms:.2f} | {100 * ms / total:.1f}% |")
    print()
    print("| kind | ms per step | share |")
    print("| --- | --- | --- |")
    for kind, ms in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        print(f"| {kind} | {ms:.2f} | {100 * ms / total:.1f}% |")


if __name__ == "__main__":
    main()
