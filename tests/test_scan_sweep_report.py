#!/usr/bin/env python3
"""
scripts/scan_sweep_report.py on a small synthetic sweep (N 16 and 256, T 512 and 1024, a chunk-size series,
one point that did not run), with times chosen so every ratio is known: the table's rows carry the times and
ratios of the inputs, the points that did not run are listed with their reason, the report finds issue #14's
target not met at exactly the one point where fla-gla is faster, all five files are written (the PNG a PNG),
sweep.csv holds both inputs' rows; a CSV without a column is refused naming the file and the column.
"""
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))
from report import exit_status, report  # noqa: E402

SCRIPT = os.path.join(REPO, "scripts", "scan_sweep_report.py")
HEADER = ("precision,series,path,a,B,T,H,P,N,Q,iters,fwd_ms,fwd_bwd_ms,fwd_tflops,fwd_bwd_tflops,fwd_gbps,"
          "fwd_bwd_gbps,status")
# fwd+bwd ms per (implementation, N, T); forward = half of it. fla-gla is faster only at N 256, T 1024.
TIMES = {("scalar", 16, 512): 1.0, ("diagonal", 16, 512): 2.0, ("scalar", 16, 1024): 1.5, ("diagonal", 16, 1024): 4.5,
         ("scalar", 256, 512): 3.0, ("diagonal", 256, 512): 9.0, ("scalar", 256, 1024): 4.0,
         ("diagonal", 256, 1024): 10.0}
FLA = {("fla-simple-gla", 16, 512): 0.5, ("fla-gla", 16, 512): 4.0, ("fla-simple-gla", 16, 1024): 3.0,
       ("fla-gla", 16, 1024): 9.0, ("fla-gla", 256, 512): 18.0, ("fla-gla", 256, 1024): 8.0}


def row(path, a, T, N, Q, both, series="sweep", status="ok"):
    B = max(1, 16384 // T)
    if both is None:
        return f"bf16,{series},{path},{a},{B},{T},24,64,{N},{Q},0,,,,,,,{status}"
    return f"bf16,{series},{path},{a},{B},{T},24,64,{N},{Q},30,{both / 2},{both},1.5,1.25,400.0,350.0,{status}"


def run(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True)


def main():
    with tempfile.TemporaryDirectory() as tmp:
        ours = [HEADER] + [row("mma" if a == "scalar" else "sub", a, T, N, 256, t) for (a, N, T), t in TIMES.items()]
        ours += [row("sub", "diagonal", 2048, 128, 64, 7.0, "chunk_size"),
                 row("sub", "diagonal", 2048, 128, 256, 6.0, "chunk_size")]
        fla = [HEADER] + [row(p, "scalar" if p == "fla-simple-gla" else "diagonal", T, N, 64, t)
                          for (p, N, T), t in FLA.items()]
        fla.append(row("fla-simple-gla", "scalar", 1024, 256, 64, None, status="failed: OutOfMemoryError: test"))
        fla.append(row("fla-simple-gla", "scalar", 512, 256, 64, None, status="failed: ValueError: K too large"))
        paths = {name: os.path.join(tmp, name + ".csv") for name in ("ours", "fla")}
        for name, lines in (("ours", ours), ("fla", fla)):
            with open(paths[name], "w") as f:
                f.write("\n".join(lines) + "\n")
        out = os.path.join(tmp, "scan-sweep")
        result = run("--ours", paths["ours"], "--fla", paths["fla"], "--command", "bash scripts/bench_scan_sweep.sh X",
                     "--out", out)
        report(result.returncode == 0, "scan_sweep_report_runs", f"exit {result.returncode} {result.stderr.strip()[-300:]}")
        files = ["sweep.csv", "table.md", "sweep.png", "report.md", "command.txt"]
        missing = [f for f in files if not os.path.exists(os.path.join(out, f))]
        report(not missing, "scan_sweep_report_files", f"missing: {missing}" if missing else "all five written")
        if missing:
            return exit_status()
        with open(os.path.join(out, "sweep.png"), "rb") as f:
            report(f.read(8) == b"\x89PNG\r\n\x1a\n", "scan_sweep_report_png", "sweep.png starts with the PNG signature")
        with open(os.path.join(out, "sweep.csv")) as f:
            merged = f.read().splitlines()
        report(merged == ours + fla[1:], "scan_sweep_report_merged_csv", f"{len(merged)} lines, want {len(ours) + len(fla) - 1}")
        with open(os.path.join(out, "table.md")) as f:
            table = f.read()
        # N 16 T 512, fwd+bwd: scalar 1, diagonal 2 (ratio 2), fla 0.5 and 4 (ours / fla: 2 and 0.5)
        want_rows = ["| 16 | 512 | 32 | 1.000 | 2.000 | 2.00 | 0.500 | 4.000 | 2.00 | 0.50 |",
                     "| 256 | 1024 | 16 | 4.000 | 10.000 | 2.50 | - | 8.000 | - | 1.25 |",
                     "| 16 | 512 | 32 | 0.500 | 1.000 | 2.00 | 0.250 | 2.000 | 2.00 | 0.50 |",  # forward
                     "| 64 | sub | 3.500 | 7.000 | 1.25 |",  # chunk size Q 64
                     "| fla-simple-gla | sweep | 256 | 1024 | 16 | 64 | failed: OutOfMemoryError: test |"]
        absent = [r for r in want_rows if r not in table]
        report(not absent, "scan_sweep_report_table_rows", f"absent: {absent}" if absent else f"{len(want_rows)} rows found")
        with open(os.path.join(out, "report.md")) as f:
            text = f.read()
        want = ["**not met** at 1 of the 4 points where fla-gla ran (forward + backward): N=256 T=1024.",
                "the fastest is Q = 256", "**Points that did not run:** 2", "N = 16: 2.00-3.00 (median 2.50, 2 points)"]
        absent = [w for w in want if w not in text]
        bad = [p for p in ("None", "{", "}") if p in text]
        report(not absent and not bad, "scan_sweep_report_findings",
               f"absent: {absent}, placeholders: {bad}" if absent or bad else "target, chunk size, skips, ratios")
        with open(paths["ours"], "w") as f:
            f.write("\n".join(line.rsplit(",", 1)[0] for line in ours) + "\n")
        result = run("--ours", paths["ours"], "--out", os.path.join(tmp, "bad"))
        named = paths["ours"] in result.stderr and "'status'" in result.stderr
        report(result.returncode != 0 and named, "scan_sweep_report_missing_column",
               f"exit {result.returncode}: {result.stderr.strip()}")
    return exit_status()


if __name__ == "__main__":
    sys.exit(main())
