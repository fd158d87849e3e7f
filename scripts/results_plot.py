#!/usr/bin/env python3
"""
Tables and plots of the SSD experiments in results/ (results/README.md), from the raw numbers the dev/
programs and the GPU script wrote there:

  python3 scripts/results_plot.py equivalence results/equivalence   # cpu_fp64.csv, cpu_fp32.csv [, gpu_*.csv]
  python3 scripts/results_plot.py mixture results/mixture           # runs.json
  python3 scripts/results_plot.py runtime results/runtime           # cpu.csv [, gpu_*.csv]

The GPU files (scripts/results_gpu.sh) are merged when present and left out when not. Each writes its
tables as markdown (table.md, summary.md or slopes.md), a JSON summary and PNG plots into the folder,
every file through a temporary name renamed into place. Needs matplotlib (scripts/requirements.txt).
"""
import argparse
import csv
import glob
import json
import math
import os
import sys


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def write_text(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def save_figure(fig, path):
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    os.replace(tmp, path)
    print(f"wrote {path}")


def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def read_csv(path, numeric):
    """Rows of a CSV file as dicts, the columns in `numeric` as floats (an empty cell is None)."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        fail(f"cannot read {path}: {e.strerror}")
    for i, row in enumerate(rows):
        for key in numeric:
            if key not in row:
                fail(f"{path}: no column '{key}'")
            try:
                row[key] = float(row[key]) if row[key] not in ("", None) else None
            except ValueError:
                fail(f"{path}, row {i + 2}: '{key}' is not a number: {row[key]!r}")
    return rows


def gpu_files(folder):
    return sorted(glob.glob(os.path.join(folder, "gpu_*.csv")))


# ---------------------------------------------------------------------------------------------
# 1. equivalence

EQ_NUMERIC = ["T", "N", "Q", "y_abs", "y_rel", "state_abs", "state_rel", "grad_abs", "grad_rel", "step_grad_rel",
              "param_grad_rel"]


PAIR_COLORS = {"quadratic-recurrent": "C3", "chunked-recurrent": "C2", "chunked-quadratic": "C0"}


def equivalence(folder):
    sources = [os.path.join(folder, "cpu_fp64.csv"), os.path.join(folder, "cpu_fp32.csv")] + gpu_files(folder)
    rows = []
    for path in sources:
        if not os.path.exists(path):
            fail(f"{path} is missing: make results_equivalence writes it")
        for row in read_csv(path, EQ_NUMERIC):
            row["device"] = "gpu" if os.path.basename(path).startswith("gpu") else "cpu"
            rows.append(row)
    # worst over the sweep per (device, precision, pair, A): the table of the report
    groups = {}
    for r in rows:
        key = (r["device"], r["precision"], r["pair"], r["a"])
        g = groups.setdefault(key, {"y_abs": 0.0, "y_rel": 0.0, "state_rel": None, "grad_abs": 0.0, "grad_rel": 0.0,
                                    "step_grad_rel": 0.0, "param_grad_rel": 0.0, "worst_grad": "", "rows": 0,
                                    "worst_at": ""})
        g["rows"] += 1
        for k in ("y_abs", "y_rel", "grad_abs", "step_grad_rel", "param_grad_rel"):
            g[k] = max(g[k], r[k])
        if r["state_rel"] is not None:
            g["state_rel"] = max(g["state_rel"] or 0.0, r["state_rel"])
        if r["grad_rel"] >= g["grad_rel"]:
            g["grad_rel"] = r["grad_rel"]
            g["worst_grad"] = r["worst_grad"]
            g["worst_at"] = f"T={int(r['T'])} N={int(r['N'])}" + (f" Q={int(r['Q'])}" if r["Q"] else "")
    lines = ["| device | precision | pair | A | rows | y: max abs | y: max rel | final state: max rel | "
             "gradients: max abs | gradients: max rel | worst gradient (where) | per-step gradients: max rel | "
             "parameter gradients: max rel |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key in sorted(groups, key=lambda k: (k[0], k[1] != "fp64", k[1], k[2], k[3])):
        g = groups[key]
        state = f"{g['state_rel']:.1e}" if g["state_rel"] is not None else "-"
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {g['rows']} | {g['y_abs']:.1e} | {g['y_rel']:.1e} | "
                     f"{state} | {g['grad_abs']:.1e} | {g['grad_rel']:.1e} | {g['worst_grad']} ({g['worst_at']}) | "
                     f"{g['step_grad_rel']:.1e} | {g['param_grad_rel']:.1e} |")
    write_text(os.path.join(folder, "table.md"), "\n".join(lines) + "\n")
    summary = [{"device": k[0], "precision": k[1], "pair": k[2], "a": k[3], **{x: v for x, v in g.items()}}
               for k, g in sorted(groups.items())]
    write_text(os.path.join(folder, "summary.json"), json.dumps(summary, indent=1) + "\n")
    print("\n".join(lines))

    # relative difference against T: the worst over N and Q at each T, forward and gradients
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(18, 4.8), sharey=True)
    curves = {}
    for r in rows:
        key = (r["device"], r["precision"], r["pair"], r["a"])
        for col, ax_i in (("y_rel", 0), ("step_grad_rel", 1), ("param_grad_rel", 2)):
            c = curves.setdefault((key, ax_i), {})
            c[r["T"]] = max(c.get(r["T"], 0.0), r[col])
    for (key, ax_i), c in sorted(curves.items()):
        device, precision, pair, a = key
        ts = sorted(c)
        vals = [max(c[t], 1e-17) for t in ts]  # an exact match (0) drawn at the floor of the plot
        style = "-" if a == "scalar" else "--"
        marker = {"fp64": "o", "fp32": "s", "bf16": "^"}.get(precision, "x")
        color = PAIR_COLORS.get(pair, "C1") if device == "cpu" else ("C4" if precision == "fp32" else "C6")
        axes[ax_i].plot(ts, vals, style, marker=marker, color=color, label=f"{device} {precision} {pair} ({a})")
    for ax, title in zip(axes, ("outputs y", "per-step gradients", "parameter gradients (dA, dD)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("sequence length T")
        ax.set_title(f"{title}\nmax |a-b| / max |b|, worst over N and Q", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("relative difference")
    axes[2].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    save_figure(fig, os.path.join(folder, "equivalence.png"))


# ---------------------------------------------------------------------------------------------
# 2. mixture of exponentials

def mixture(folder):
    path = os.path.join(folder, "runs.json")
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        fail(f"cannot read {path}: {e}")
    for key in ("target", "setup", "runs"):
        if key not in data:
            fail(f"{path}: no field '{key}'")
    true_rates = data["target"]["rates"]
    weights = data["target"]["weights"]
    runs = data["runs"]
    variants = []
    for r in runs:
        if r["variant"] not in variants:
            variants.append(r["variant"])

    lines = ["| variant | seeds | rel. MSE: median (max) | kernel max error: median (max) | learned rates, per seed |",
             "|---|---|---|---|---|"]
    summary = {}
    for v in variants:
        rs = [r for r in runs if r["variant"] == v]
        mse = sorted(r["final_rel_mse"] for r in rs)
        kerr = sorted(r["kernel_max_error"] for r in rs)
        rates = "; ".join(", ".join(f"{x:.4f}" for x in sorted(r["rates"])) for r in rs)
        lines.append(f"| {v} | {len(rs)} | {mse[len(mse) // 2]:.2e} ({mse[-1]:.2e}) | "
                     f"{kerr[len(kerr) // 2]:.2e} ({kerr[-1]:.2e}) | {rates} |")
        summary[v] = {"seeds": len(rs), "rel_mse": mse, "kernel_max_error": kerr,
                      "rates": [sorted(r["rates"]) for r in rs]}
    write_text(os.path.join(folder, "summary.md"), "\n".join(lines) + "\n")
    write_text(os.path.join(folder, "summary.json"), json.dumps(summary, indent=1) + "\n")
    print("\n".join(lines))

    plt = pyplot()
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    # learned impulse responses against the true kernel
    fig, axes = plt.subplots(1, len(variants), figsize=(5 * len(variants), 4.2), sharey=True)
    klen = len(runs[0]["kernel"])
    true_k = [weights[0] * true_rates[0] ** t + weights[1] * true_rates[1] ** t for t in range(klen)]
    for ax, v in zip(axes, variants):
        ax.plot(range(klen), true_k, color="black", lw=3, alpha=0.35, label="true kernel")
        for i, r in enumerate(x for x in runs if x["variant"] == v):
            ax.plot(range(klen), [max(abs(k), 1e-8) for k in r["kernel"]], color=colors[i % len(colors)], lw=1,
                    label=f"seed {r['seed']}")
        ax.set_yscale("log")
        ax.set_ylim(1e-4, 3)
        ax.set_title(v)
        ax.set_xlabel("lag t - s")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("|impulse response|")
    axes[-1].legend(fontsize=8)
    fig.suptitle(f"learned kernels vs {weights[0]:g}*{true_rates[0]:g}^k + {weights[1]:g}*{true_rates[1]:g}^k")
    save_figure(fig, os.path.join(folder, "kernel.png"))

    # learned rates against the true ones
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, v in enumerate(variants):
        for j, r in enumerate(x for x in runs if x["variant"] == v):
            xs = [i + (j - 2) * 0.06] * len(r["rates"])
            ax.scatter(xs, r["rates"], color=colors[i], s=25, label=v if j == 0 else None)
    for rate in true_rates:
        ax.axhline(rate, color="black", ls=":", lw=1)
        ax.text(len(variants) - 0.55, rate, f"true {rate:g}", va="bottom", fontsize=8)
    ax.set_xticks(range(len(variants)))
    ax.set_xticklabels(variants)
    ax.set_ylabel("learned rate exp(delta A_n)")
    ax.set_title("learned decay rates (one point per state and seed)")
    ax.grid(True, axis="y", alpha=0.3)
    save_figure(fig, os.path.join(folder, "rates.png"))

    # loss curves
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, v in enumerate(variants):
        for j, r in enumerate(x for x in runs if x["variant"] == v):
            steps = [p[0] for p in r["curve"]]
            vals = [max(p[1], 1e-30) for p in r["curve"]]
            ax.plot(steps, vals, color=colors[i], lw=1, alpha=0.8, label=v if j == 0 else None)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("held-out MSE / mean(target^2)")
    ax.set_title("training curves (each seed a line)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    save_figure(fig, os.path.join(folder, "loss.png"))


# ---------------------------------------------------------------------------------------------
# 3. runtime against length

RT_NUMERIC = ["T", "H", "P", "N", "Q", "forward_ms", "forward_backward_ms"]


def fit_slope(points):
    """Least-squares slope of log(time) against log(T) over the points with T >= 1024 (smaller T is
    dominated by fixed costs); the last three points where fewer than three are that long."""
    pts = sorted(points)
    long_pts = [p for p in pts if p[0] >= 1024]
    pts = long_pts if len(long_pts) >= 3 else pts[-3:]
    if len(pts) < 2:
        return None, pts
    xs = [math.log(p[0]) for p in pts]
    ys = [math.log(p[1]) for p in pts]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx, pts


def runtime(folder):
    cpu = os.path.join(folder, "cpu.csv")
    if not os.path.exists(cpu):
        fail(f"{cpu} is missing: make results_runtime writes it")
    rows = read_csv(cpu, RT_NUMERIC)
    for path in gpu_files(folder):
        rows += read_csv(path, RT_NUMERIC)
    series = {}
    for r in rows:
        shape = f"H{int(r['H'])} P{int(r['P'])} N{int(r['N'])} Q{int(r['Q'])}"
        key = (r["device"], r["precision"], shape, r["form"], r["a"])
        s = series.setdefault(key, {"forward_ms": [], "forward_backward_ms": []})
        for col in s:
            s[col].append((r["T"], r[col]))
    lines = ["| device | precision | layer | form | A | T measured | forward slope | forward+backward slope | "
             "forward ms at largest T | forward+backward ms at largest T |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    summary = []
    for key in sorted(series, key=lambda k: (k[0] != "cpu", k[1], k[2], k[3], k[4])):
        s = series[key]
        fs, _ = fit_slope(s["forward_ms"])
        bs, _ = fit_slope(s["forward_backward_ms"])
        ts = sorted(t for t, _ in s["forward_ms"])
        last_f = max(s["forward_ms"])[1]
        last_b = max(s["forward_backward_ms"])[1]
        fmt = lambda v: f"{v:.2f}" if v is not None else "-"
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {key[4]} | {int(ts[0])}-{int(ts[-1])} | "
                     f"{fmt(fs)} | {fmt(bs)} | {last_f:.3g} | {last_b:.3g} |")
        summary.append({"device": key[0], "precision": key[1], "layer": key[2], "form": key[3], "a": key[4],
                        "forward_slope": fs, "forward_backward_slope": bs, "T": ts,
                        "forward_ms": [v for _, v in sorted(s["forward_ms"])],
                        "forward_backward_ms": [v for _, v in sorted(s["forward_backward_ms"])]})
    write_text(os.path.join(folder, "slopes.md"), "\n".join(lines) + "\n")
    write_text(os.path.join(folder, "slopes.json"), json.dumps(summary, indent=1) + "\n")
    print("\n".join(lines))

    plt = pyplot()
    colors = {"recurrent": "C0", "quadratic": "C3", "chunked": "C2"}
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    gpu_styles = ["C4", "C5", "C6", "C7", "C8", "C9", "C1", "C0"]
    gpu_keys = sorted(k for k in series if k[0] != "cpu")
    for ax, col, title in zip(axes, ("forward_ms", "forward_backward_ms"), ("forward", "forward + backward")):
        for key, s in sorted(series.items()):
            device, precision, shape, form, a = key
            pts = sorted(s[col])
            slope, _ = fit_slope(pts)
            color = colors.get(form, "C1") if device == "cpu" else gpu_styles[gpu_keys.index(key) % len(gpu_styles)]
            label = f"{device} {precision} {form} ({a}" + (f", {shape}" if device != "cpu" else "") + ")"
            label += f": slope {slope:.2f}" if slope is not None else ""
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "-" if a == "scalar" else "--",
                    marker="o" if device == "cpu" else "^", ms=3, color=color, label=label)
        for ref_slope, ls in ((1, ":"), (2, "-.")):
            t0, t1 = 128, 65536
            ax.plot([t0, t1], [1e-2, 1e-2 * (t1 / t0) ** ref_slope], color="gray", ls=ls, lw=0.8,
                    label=f"slope {ref_slope}" if ax is axes[0] else None)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length T")
        ax.set_title(f"{title}: time of one SSD layer")
        ax.grid(True, which="both", alpha=0.3)
        ax.set_ylim(bottom=1e-3)
    axes[0].set_ylabel("milliseconds (CPU: one core's CPU time; GPU: CUDA events)")
    axes[0].legend(fontsize=6.5, loc="upper left")
    axes[1].legend(fontsize=6.5, loc="upper left")
    save_figure(fig, os.path.join(folder, "runtime.png"))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", choices=["equivalence", "mixture", "runtime"])
    parser.add_argument("folder", help="the results folder holding the raw numbers")
    args = parser.parse_args()
    if not os.path.isdir(args.folder):
        fail(f"{args.folder} is not a directory")
    {"equivalence": equivalence, "mixture": mixture, "runtime": runtime}[args.experiment](args.folder)


if __name__ == "__main__":
    main()
