#!/usr/bin/env python3
"""
Plots the train and val loss of one or more runs from their main.log (llm.c's format, written by
train_ssd and train_ssdcu with -o): "s:<step> trl:<loss> ..." per step, "s:<step> tel:<loss>" per val
evaluation, "s:<step> eval:<split> loss:<loss> ..." per full-split evaluation.

  python3 scripts/plot_log.py runs/corpus/main.log --out runs/corpus/loss.png
  python3 scripts/plot_log.py runs/a/main.log runs/b/main.log --labels a b --out compare.png
"""
import argparse
import os
import re
import sys

LINE = re.compile(r"^s:(\d+) (?:(trl|tel):([-\d.eE+naif]+)|eval:(\S+) loss:([-\d.eE+naif]+))")


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def read_log(path):
    """{series: ([steps], [losses])} with series "train", "val" and "eval <split>"."""
    series = {}
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                m = LINE.match(line)
                if not m:
                    continue
                name = {"trl": "train", "tel": "val"}.get(m.group(2)) or f"eval {m.group(4)}"
                steps, losses = series.setdefault(name, ([], []))
                steps.append(int(m.group(1)))
                losses.append(float(m.group(3) or m.group(5)))
    except OSError as e:
        fail(f"{path}: {e.strerror}")
    if not series:
        fail(f"{path}: no loss lines (s:<step> trl:<loss>): not a main.log of train_ssd or train_ssdcu")
    return series


def main():
    p = argparse.ArgumentParser(description="Plot train/val loss from main.log files.")
    p.add_argument("logs", nargs="+", help="main.log files")
    p.add_argument("--labels", nargs="+", help="one label per log (default: the log's directory name)")
    p.add_argument("--out", required=True, help="image file to write (.png, .pdf, .svg)")
    args = p.parse_args()
    if args.labels and len(args.labels) != len(args.logs):
        fail(f"{len(args.labels)} labels for {len(args.logs)} logs")
    labels = args.labels or [os.path.basename(os.path.dirname(os.path.abspath(p))) for p in args.logs]
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 5))
    for path, label in zip(args.logs, labels):
        for name, (steps, losses) in read_log(path).items():
            style = {"train": dict(alpha=0.5, linewidth=0.8), "val": dict(marker="o", markersize=3)}.get(
                name, dict(marker="s", linestyle="none"))
            ax.plot(steps, losses, label=f"{label} {name}", **style)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = args.out + ".tmp" + os.path.splitext(args.out)[1]
    try:
        fig.savefig(tmp)
        os.replace(tmp, args.out)
    except OSError as e:
        fail(f"{args.out}: {e.strerror}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
