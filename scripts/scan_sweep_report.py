#!/usr/bin/env python3
"""
results/scan-sweep from the SSD scan sweep (issue #14): our scan's CSV (test_ssd_scan --sweep) and,
when given, flash-linear-attention's (scripts/bench_scan_fla.py), both with the columns

  precision,series,path,a,B,T,H,P,N,Q,iters,fwd_ms,fwd_bwd_ms,fwd_tflops,fwd_bwd_tflops,fwd_gbps,fwd_bwd_gbps,status

(status "ok..." on a timed row, else why the point did not run, its numbers empty). Writes into OUT:
  sweep.csv    both inputs' rows, unchanged
  table.md     per d_state N and length T: forward and forward + backward ms of scalar and diagonal A and of
               fla's two kernels, the diagonal/scalar ratio and ours/fla (below 1: ours is faster); the rates
               (TFLOP/s, GB/s) of every implementation; the diagonal's chunk-size series; the points that
               did not run
  sweep.png    forward + backward ms against T (log-log), a panel per N, and the ratios against T
  report.md    what was run, the findings drawn from the numbers, the target of issue #14 met or not
  command.txt  the command that made the CSVs (--command) and this script's
Every file goes through a temporary name renamed into place. Needs matplotlib.

  python3 scripts/scan_sweep_report.py --ours ours.csv [--fla fla.csv] [--env env.txt] [--command CMD] --out DIR
"""
import argparse
import csv
import io
import os
import statistics
import sys

from results_plot import fail, write_text

COLUMNS = ["precision", "series", "path", "a", "B", "T", "H", "P", "N", "Q", "iters", "fwd_ms", "fwd_bwd_ms",
           "fwd_tflops", "fwd_bwd_tflops", "fwd_gbps", "fwd_bwd_gbps", "status"]
INTEGER = ["B", "T", "H", "P", "N", "Q", "iters"]
MEASURED = ["fwd_ms", "fwd_bwd_ms", "fwd_tflops", "fwd_bwd_tflops", "fwd_gbps", "fwd_bwd_gbps"]
# the four implementations of the comparison, in table order: ours by A, fla's by kernel
IMPLS = ["ours scalar", "ours diagonal", "fla-simple-gla", "fla-gla"]
FLA_OF = {"ours scalar": "fla-simple-gla", "ours diagonal": "fla-gla"}
STYLE = {"ours scalar": ("C0", "-"), "ours diagonal": ("C3", "-"), "fla-simple-gla": ("C0", ":"),
         "fla-gla": ("C3", ":")}


def read_rows(path):
    """The rows of one sweep CSV, checked: integers and measured numbers parsed, a timed row complete."""
    try:
        with open(path, newline="") as f:
            text = f.read()
    except OSError as e:
        fail(f"cannot read {path}: {e.strerror}")
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        fail(f"{path}: no column {', '.join(repr(c) for c in missing)} (want {','.join(COLUMNS)})")
    rows = []
    for i, row in enumerate(reader):
        where = f"{path}, line {i + 2}"
        try:
            for key in INTEGER:
                row[key] = int(row[key])
            for key in MEASURED:
                row[key] = float(row[key]) if row[key] not in ("", None) else None
        except (TypeError, ValueError):
            fail(f"{where}: '{key}' is not a number: {row[key]!r}")
        row["ok"] = row["status"].startswith("ok")
        if row["ok"] and any(row[k] is None or not row[k] > 0 for k in MEASURED):
            fail(f"{where}: a timed row (status ok) needs positive {', '.join(MEASURED)}")
        if row["path"].startswith("fla"):
            row["impl"] = row["path"]
        elif row["a"] in ("scalar", "diagonal"):
            row["impl"] = f"ours {row['a']}"
        else:
            fail(f"{where}: 'a' must be scalar or diagonal, not {row['a']!r}")
        rows.append(row)
    return rows, text


def index_sweep(rows):
    """{(impl, N, T): row} of the series 'sweep'; a point given twice is an error."""
    points = {}
    for r in rows:
        if r["series"] != "sweep":
            continue
        key = (r["impl"], r["N"], r["T"])
        if key in points:
            fail(f"two rows for {r['impl']} at N={r['N']} T={r['T']}")
        points[key] = r
    return points


def ms(row, key):
    return row[key] if row is not None and row["ok"] else None


def ratio(a, b):
    return a / b if a is not None and b is not None else None


def point_ratio(points, a, b, N, T, key):
    """time of implementation a over that of b at (N, T), or None where either did not run"""
    return ratio(ms(points.get((a, N, T)), key), ms(points.get((b, N, T)), key))


def cell(value, fmt):
    return "-" if value is None else format(value, fmt)


def time_table(points, Ns, Ts, key, title):
    lines = [f"### {title} (ms)", "",
             "| N | T | B | scalar | diagonal | diagonal / scalar | fla-simple-gla | fla-gla | scalar / fla-simple-gla | "
             "diagonal / fla-gla |", "|---|---|---|---|---|---|---|---|---|---|"]
    for N in Ns:
        for T in Ts:
            row = {impl: points.get((impl, N, T)) for impl in IMPLS}
            B = next((r["B"] for r in row.values() if r is not None), None)
            t = {impl: ms(row[impl], key) for impl in IMPLS}
            lines.append(f"| {N} | {T} | {B} | " + " | ".join([
                cell(t["ours scalar"], ".3f"), cell(t["ours diagonal"], ".3f"),
                cell(point_ratio(points, "ours diagonal", "ours scalar", N, T, key), ".2f"),
                cell(t["fla-simple-gla"], ".3f"), cell(t["fla-gla"], ".3f"),
                cell(point_ratio(points, "ours scalar", "fla-simple-gla", N, T, key), ".2f"),
                cell(point_ratio(points, "ours diagonal", "fla-gla", N, T, key), ".2f")]) + " |")
    return lines


def rate_table(points, Ns, Ts):
    lines = ["### Achieved rates (the FLOP and byte model of test_ssd_scan --sweep)", "",
             "| N | T | implementation | path | fwd TFLOP/s | fwd+bwd TFLOP/s | fwd GB/s | fwd+bwd GB/s |",
             "|---|---|---|---|---|---|---|---|"]
    for N in Ns:
        for T in Ts:
            for impl in IMPLS:
                r = points.get((impl, N, T))
                if r is not None and r["ok"]:
                    lines.append(f"| {N} | {T} | {impl} | {r['path']} | {r['fwd_tflops']:.2f} | "
                                 f"{r['fwd_bwd_tflops']:.2f} | {r['fwd_gbps']:.0f} | {r['fwd_bwd_gbps']:.0f} |")
    return lines


def chunk_table(rows):
    series = sorted((r for r in rows if r["series"] == "chunk_size"), key=lambda r: r["Q"])
    if not series:
        return [], series
    r0 = series[0]
    lines = [f"### Chunk size of the diagonal A (N={r0['N']}, T={r0['T']}, B={r0['B']})", "",
             "| Q | path | fwd ms | fwd+bwd ms | fwd+bwd TFLOP/s | status |", "|---|---|---|---|---|---|"]
    for r in series:
        lines.append(f"| {r['Q']} | {r['path']} | {cell(ms(r, 'fwd_ms'), '.3f')} | {cell(ms(r, 'fwd_bwd_ms'), '.3f')} | "
                     f"{cell(ms(r, 'fwd_bwd_tflops'), '.2f')} | {r['status']} |")
    return lines, series


def skipped_table(rows):
    lines = ["### Points that did not run", "", "| implementation | series | N | T | B | Q | why |",
             "|---|---|---|---|---|---|---|"]
    skipped = [r for r in rows if not r["ok"]]
    for r in skipped:
        lines.append(f"| {r['impl']} | {r['series']} | {r['N']} | {r['T']} | {r['B']} | {r['Q']} | {r['status']} |")
    return (lines if skipped else ["### Points that did not run", "", "None."]), skipped


def plot(points, Ns, Ts, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cols = 3
    rows = (len(Ns) + 2 + cols - 1) // cols
    fig, grid = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.9 * rows), squeeze=False)
    axes = list(grid.flat)
    for ax in axes[len(Ns) + 2:]:
        ax.set_visible(False)
    axes = axes[:len(Ns) + 2]
    for ax, N in zip(axes, Ns):
        for impl in IMPLS:
            xy = [(T, ms(points.get((impl, N, T)), "fwd_bwd_ms")) for T in Ts]
            xy = [(x, y) for x, y in xy if y is not None]
            if xy:
                color, line = STYLE[impl]
                ax.plot(*zip(*xy), line, marker="o", ms=3, color=color, label=impl)
        ax.set(xscale="log", yscale="log", title=f"d_state N = {N}", xlabel="T (B = max(1, 16384 / T))",
               ylabel="forward + backward (ms)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    panels = [(axes[-2], "diagonal / scalar (ours)", [("ours diagonal", "ours scalar", "-")]),
              (axes[-1], "ours / fla (solid: diagonal / fla-gla,\ndotted: scalar / fla-simple-gla)",
               [("ours diagonal", "fla-gla", "-"), ("ours scalar", "fla-simple-gla", ":")])]
    for ax, title, pairs in panels:
        for i, N in enumerate(Ns):
            for a, b, line in pairs:
                xy = [(T, point_ratio(points, a, b, N, T, "fwd_bwd_ms")) for T in Ts]
                xy = [(x, y) for x, y in xy if y is not None]
                if xy:
                    ax.plot(*zip(*xy), line, marker="o", ms=3, color=f"C{i}", label=f"N = {N}" if line == "-" else None)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set(xscale="log", title=title, xlabel="T", ylabel="time ratio, forward + backward")
        ax.grid(True, which="both", alpha=0.3)
        if any(line.get_label() and not line.get_label().startswith("_") for line in ax.lines):
            ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)
    plt.close(fig)


def spread(values, fmt=".2f"):
    values = [v for v in values if v is not None]
    if not values:
        return "no points"
    return (f"{format(min(values), fmt)}-{format(max(values), fmt)} (median {format(statistics.median(values), fmt)}, "
            f"{len(values)} points)")


def findings(points, Ns, Ts, chunk_series):
    """The report's findings, each computed from the rows"""
    out = []
    for key, name in (("fwd_bwd_ms", "forward + backward"), ("fwd_ms", "forward")):
        per_n = []
        for N in Ns:
            r = [point_ratio(points, "ours diagonal", "ours scalar", N, T, key) for T in Ts]
            per_n.append(f"N = {N}: {spread(r)}")
        out.append(f"- **Diagonal / scalar, {name} time:** " + "; ".join(per_n) + ".")
    for ours, fla in FLA_OF.items():
        r = {(N, T): point_ratio(points, ours, fla, N, T, "fwd_bwd_ms") for N in Ns for T in Ts}
        ran = {k: v for k, v in r.items() if v is not None}
        if not ran:
            out.append(f"- **{ours} against {fla}:** no point where both ran.")
            continue
        slower = sorted(k for k, v in ran.items() if v >= 1.0)
        worst = max(ran, key=ran.get)
        text = (f"- **{ours} against {fla}, forward + backward:** ours is faster at {len(ran) - len(slower)} of the "
                f"{len(ran)} points where both ran; time ratio ours / fla {spread(list(ran.values()))}, the highest "
                f"{ran[worst]:.2f} at N = {worst[0]}, T = {worst[1]}")
        if len(slower) > 6:  # by d_state, not point by point
            text += f"; not faster at {len(slower)} points (" + ", ".join(
                f"N={N}: {sum(n == N for n, _ in slower)}" for N in Ns if any(n == N for n, _ in slower)) + ")"
        elif slower:
            text += "; not faster at " + ", ".join(f"N={n} T={t}" for n, t in slower)
        text += "."
        out.append(text)
    ran = [r for r in chunk_series if r["ok"]]
    if ran:
        best = min(ran, key=lambda r: r["fwd_bwd_ms"])
        out.append("- **Chunk size of the diagonal A** (N = {}, T = {}, B = {}): forward + backward ".format(
            best["N"], best["T"], best["B"]) + ", ".join(f"{r['fwd_bwd_ms']:.3f} ms at Q = {r['Q']}" for r in ran) +
            f"; the fastest is Q = {best['Q']}.")
    return out


def target(points, Ns, Ts):
    """Issue #14's target: the diagonal scan faster than fla-gla at every point where fla-gla runs"""
    both = [(N, T) for N in Ns for T in Ts if ms(points.get(("fla-gla", N, T)), "fwd_bwd_ms") is not None]
    if not both:
        return "not measured: fla-gla ran at no point of this sweep."
    ratios = {(N, T): point_ratio(points, "ours diagonal", "fla-gla", N, T, "fwd_bwd_ms") for N, T in both}
    lost = [k for k, r in ratios.items() if r is None or r >= 1.0]  # None: fla-gla ran and ours did not
    if not lost:
        return f"**met** at all {len(both)} points where fla-gla ran (forward + backward)."
    return (f"**not met** at {len(lost)} of the {len(both)} points where fla-gla ran (forward + backward): " +
            ", ".join(f"N={n} T={t}" for n, t in lost) + ".")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ours", required=True, help="test_ssd_scan --sweep's CSV")
    parser.add_argument("--fla", help="bench_scan_fla.py's CSV (left out: no fla columns)")
    parser.add_argument("--env", help="a text file about the machine and versions, quoted in report.md")
    parser.add_argument("--command", default="", help="the command that made the CSVs, for command.txt")
    parser.add_argument("--out", required=True, help="the folder to write (made if missing)")
    args = parser.parse_args()
    rows, ours_text = read_rows(args.ours)
    fla_text = ""
    if args.fla:
        fla_rows, fla_text = read_rows(args.fla)
        rows += fla_rows
    env = ""
    if args.env:
        try:
            with open(args.env) as f:
                env = f.read().strip()
        except OSError as e:
            fail(f"cannot read {args.env}: {e.strerror}")
    points = index_sweep(rows)
    if not points:
        fail(f"{args.ours}: no rows of the series 'sweep'")
    Ns = sorted({k[1] for k in points})
    Ts = sorted({k[2] for k in points})
    os.makedirs(args.out, exist_ok=True)

    fla_lines = fla_text.splitlines()[1:] if fla_text else []
    write_text(os.path.join(args.out, "sweep.csv"), "\n".join(ours_text.splitlines() + fla_lines) + "\n")
    chunk_lines, chunk_series = chunk_table(rows)
    skipped_lines, skipped = skipped_table(rows)
    table = (time_table(points, Ns, Ts, "fwd_bwd_ms", "Forward + backward") + [""] +
             time_table(points, Ns, Ts, "fwd_ms", "Forward") + [""] + rate_table(points, Ns, Ts) + [""] +
             (chunk_lines + [""] if chunk_lines else []) + skipped_lines)
    write_text(os.path.join(args.out, "table.md"), "\n".join(table) + "\n")
    plot(points, Ns, Ts, os.path.join(args.out, "sweep.png"))

    shape = next(iter(points.values()))
    precisions = sorted({r["precision"] for r in rows if not r["impl"].startswith("fla")})
    fla_ran = any(r["ok"] for r in rows if r["impl"].startswith("fla"))
    report = [
        "# SSD scan sweep: scalar against diagonal A, and the per-dimension-decay kernel (issue #14)", "",
        f"**What ran.** One SSD layer at the Mamba-2 130M layer shape (H = {shape['H']} heads of P = {shape['P']}, "
        f"one group of B and C), d_state N = {', '.join(map(str, Ns))}, T = {Ts[0]} ... {Ts[-1]} with "
        "B = max(1, 16384 / T) sequences, so every point holds at least 16K tokens (B T = 16384 up to T = 16384, "
        "then T). Ours: `test_ssd_scan --sweep` (tests/gpu/test_ssd_scan.cu), " + "/".join(precisions) +
        " build, chunk Q = 256, on the path the trainer takes (the `path` column: `mma` the tensor-core kernels, "
        "`sub` the sub-block kernels). fla: `scripts/bench_scan_fla.py`, flash-linear-attention's `chunk_gla` "
        "(a decay per step, head and state: the diagonal A) and `chunk_simple_gla` (one per step and head: the "
        "scalar A), bf16, chunks of 64, scale 1, its inputs (B and C per head, delta x, delta A) formed outside "
        "its timing. " + ("" if fla_ran else "**fla did not run here** (see the points that did not run). ") +
        "Times are medians of CUDA-event timings after a warm-up; TFLOP/s and GB/s come from one model of the "
        "chunked algorithm's products and of the bytes of the inputs and outputs (the comment of `bench_sweep` "
        "in tests/gpu/test_ssd_scan.cu), each implementation's at its own chunk size (ours 256, fla 64: the "
        "intra-chunk products grow with the chunk), so compare the times, not the rates, across implementations.", ""]
    if env:
        report += ["**Machine.**", "", "```", env, "```", ""]
    report += ["![forward + backward time against T](sweep.png)", "", "**Findings** (from `sweep.csv`; every "
               "number per point in [table.md](table.md)):", ""] + findings(points, Ns, Ts, chunk_series) + [
        "", f"**Target of issue #14** (the diagonal scan faster than the public per-dimension-decay kernel at "
        f"every point where that kernel runs): {target(points, Ns, Ts)}", "",
        f"**Points that did not run:** {len(skipped)} (listed at the end of [table.md](table.md)).", ""]
    write_text(os.path.join(args.out, "report.md"), "\n".join(report))
    command = (args.command + "\n" if args.command else "") + " ".join(
        ["python3 scripts/scan_sweep_report.py", "--ours", args.ours] + (["--fla", args.fla] if args.fla else []) +
        (["--env", args.env] if args.env else []) + ["--out", args.out]) + "\n"
    write_text(os.path.join(args.out, "command.txt"), command)
    print(f"wrote {args.out}/{{sweep.csv,table.md,sweep.png,report.md,command.txt}}")


if __name__ == "__main__":
    main()
