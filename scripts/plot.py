#!/usr/bin/env python3
"""
Loss curves of one or several training runs, from their main.log files (llm.c's format, written by
train_ssd and train_ssdcu with -o): the train loss of every step (faint) with its running mean, and
the val loss (-v) as points joined by a line; a test-split evaluation (-ti) is a star at its step.

  python3 scripts/plot.py runs/quickstart                  # -> runs/quickstart/loss.png
  python3 scripts/plot.py runs/a runs/b/main.log --out ab.png --labels small big

Each argument is a run directory or its main.log. With one run the PNG goes beside its main.log, with
several into loss.png in the current directory (--out to choose). Needs matplotlib (scripts/requirements.txt).
"""
import argparse
import os
import re
import sys

TRAIN = re.compile(r"^s:(\d+) trl:(\S+)")
VAL = re.compile(r"^s:(\d+) tel:(\S+)$")
EVAL = re.compile(r"^s:(\d+) eval:(\w+) loss:(\S+) ")


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def read_log(path):
    """{'train': {step: loss}, 'val': {step: loss}, 'test': {step: loss}}; a step logged twice keeps its last line."""
    curves = {"train": {}, "val": {}, "test": {}}
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                m = TRAIN.match(line)
                if m:
                    curves["train"][int(m.group(1))] = float(m.group(2))
                    continue
                m = VAL.match(line)
                if m:
                    curves["val"][int(m.group(1))] = float(m.group(2))
                    continue
                m = EVAL.match(line)
                if m and m.group(2) == "test":
                    curves["test"][int(m.group(1))] = float(m.group(3))
    except OSError as e:
        fail(f"cannot read {path}: {e.strerror}")
    if not curves["train"] and not curves["val"]:
        fail(f"{path} has no 's:<step> trl:' or 'tel:' lines: is it a main.log of train_ssd / train_ssdcu?")
    return curves


def running_mean(values, window):
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description="Plot train and val loss from main.log files into a PNG.")
    p.add_argument("runs", nargs="+", help="run directories (with main.log) or main.log files")
    p.add_argument("--out", help="PNG to write (default: loss.png beside the main.log of a single run, "
                                 "else loss.png in the current directory)")
    p.add_argument("--labels", nargs="+", help="one legend label per run (default: the run directory's name)")
    p.add_argument("--title", default="", help="plot title")
    p.add_argument("--no-train", action="store_true", help="plot only the val (and test) loss")
    args = p.parse_args(argv)

    logs = [os.path.join(r, "main.log") if os.path.isdir(r) else r for r in args.runs]
    for log in logs:
        if not os.path.isfile(log):
            fail(f"{log} not found (give a run directory made with -o, or its main.log)")
    if args.labels and len(args.labels) != len(logs):
        fail(f"--labels has {len(args.labels)} labels for {len(logs)} runs")
    labels = args.labels or [os.path.basename(os.path.dirname(os.path.abspath(log))) for log in logs]
    out = args.out or (os.path.join(os.path.dirname(logs[0]) or ".", "loss.png") if len(logs) == 1 else "loss.png")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(9, 5.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (log, label) in enumerate(zip(logs, labels)):
        curves, color = read_log(log), colors[i % len(colors)]
        train = sorted(curves["train"].items())
        if train and not args.no_train:
            steps, losses = zip(*train)
            ax.plot(steps, losses, color=color, alpha=0.25, linewidth=0.8)
            ax.plot(steps, running_mean(list(losses), max(1, len(losses) // 50)), color=color, linewidth=1.4,
                    label=f"{label} train")
        val = sorted(curves["val"].items())
        if val:
            steps, losses = zip(*val)
            ax.plot(steps, losses, color=color, linestyle="--", marker="o", markersize=3, linewidth=1.2,
                    label=f"{label} val")
        for step, loss in sorted(curves["test"].items()):
            ax.plot([step], [loss], color=color, marker="*", markersize=11, linestyle="none", label=f"{label} test")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per token)")
    if args.title:
        ax.set_title(args.title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        fig.savefig(out, dpi=110)
    except OSError as e:
        fail(f"cannot write {out}: {e.strerror}")
    print(f"wrote {out} ({len(logs)} run{'s' if len(logs) > 1 else ''})")


if __name__ == "__main__":
    main()
