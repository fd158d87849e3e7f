#!/usr/bin/env python3
"""
Benchmark of the data path at scale: scripts/prepro.py on a synthetic corpus of WikiText-2 records, and
the C loader's start-up on the shards it writes.

  1. Makes the corpus in --work: the paragraphs (non-empty lines) of WikiText-2's train split, shuffled
     anew for every repetition, as JSONL files ({"id", "text"}) and Parquet files (column "text"), half
     and half, --gb gigabytes in all (refused unless the disk has room for the corpus and its shards).
  2. Scaling: prepares the first JSONL file alone with 1, 2, ... --workers workers (GPT-2 tokens).
  3. The whole corpus with --workers workers, into --shards shards: tokens/s, and the peak memory of
     prepro.py and its workers together (their resident sizes summed, sampled every 0.2 s).
  4. Loader start-up (dataloader_init over every shard, the driver of tests/test_data_loader.c) on the raw
     shards, and again after compressing them with zstd; the page cache is dropped first where allowed.
Removes the corpus and the shards at the end (--keep keeps them). Needs `make build/tests/test_data_loader`.

  python3 scripts/bench_prepro.py --work /work/bench_prepro --gb 2
"""
import argparse
import glob
import json
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared")
DRIVER = os.path.join(REPO, "build", "tests", "test_data_loader")
WIKITEXT_TRAIN = os.path.join(SHARED, "data", "wikitext-2", "train.txt")
FILE_BYTES = 100 << 20


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def make_corpus(work, total_bytes):
    import pyarrow as pa
    import pyarrow.parquet as pq
    with open(WIKITEXT_TRAIN, encoding="utf-8") as f:
        lines = [line.strip() for line in f if line.strip()]
    corpus = os.path.join(work, "corpus")
    os.makedirs(corpus)
    rng = random.Random(0)
    written, index, record = 0, 0, 0
    while written < total_bytes:
        parquet = index % 2 == 1
        path = os.path.join(corpus, f"part_{index:03d}.{'parquet' if parquet else 'jsonl'}")
        size = 0
        if parquet:
            writer = None
            while size < FILE_BYTES:
                rng.shuffle(lines)
                table = pa.table({"id": list(range(record, record + len(lines))), "text": lines})
                writer = writer or pq.ParquetWriter(path, table.schema)
                writer.write_table(table, row_group_size=8192)
                record += len(lines)
                size += sum(len(t) for t in lines)
            writer.close()
        else:
            with open(path, "w", encoding="utf-8") as f:
                while size < FILE_BYTES:
                    rng.shuffle(lines)
                    chunk = "".join(json.dumps({"id": record + i, "text": t}) + "\n" for i, t in enumerate(lines))
                    record += len(lines)
                    f.write(chunk)
                    size += len(chunk)
        written += os.path.getsize(path)
        index += 1
    return corpus, record, written


def tree_rss(pid):
    """Resident bytes of a process and all its descendants."""
    children = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.split("/")[2]))
        except (OSError, IndexError, ValueError):
            continue
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) * 1024
        except (OSError, StopIteration):
            continue
    return total


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_prepro(args):
    """(seconds, CPU seconds of prepro.py and its workers, peak bytes of the process tree, stderr)."""
    cmd = [sys.executable, os.path.join(REPO, "scripts", "prepro.py"), *map(str, args)]
    start, cpu = time.time(), cpu_seconds()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc.pid))
        time.sleep(0.2)
    err = proc.stderr.read()
    if proc.returncode != 0:
        fail(f"{' '.join(cmd)} failed:\n{err[-2000:]}")
    return time.time() - start, cpu_seconds() - cpu, peak, err


def summary_tokens(err):
    line = next(l for l in err.splitlines() if l.startswith("total: "))
    return int(re.search(r"documents, ([\d,]+) tokens", line).group(1).replace(",", ""))


def loader_startup(pattern, label):
    dropped = False
    try:
        subprocess.run(["sync"], check=True)
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        dropped = True
    except OSError:
        pass
    out = subprocess.run([DRIVER, "bench", pattern, "8", "1024", "50257", str(1 << 24), "0.5"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        fail(f"loader bench failed: {out.stderr.strip()}")
    first = out.stdout.splitlines()[0]
    init = float(re.search(r"init ([\d.]+) s", first).group(1))
    print(f"loader start-up, {label}: {init:.3f} s ({'page cache dropped' if dropped else 'page cache warm'}); "
          f"then {first.split('= ')[-1]}")


def main():
    p = argparse.ArgumentParser(description="Benchmark scripts/prepro.py and the loader's start-up at scale.")
    p.add_argument("--work", default="/tmp/bench_prepro", help="scratch directory (removed at the end)")
    p.add_argument("--gb", type=float, default=2.0, help="corpus size in GB")
    p.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--shards", type=int, default=1000, help="shards of the whole corpus (loader start-up)")
    p.add_argument("--keep", action="store_true", help="keep the corpus and the shards")
    args = p.parse_args()
    if not os.path.isfile(DRIVER):
        fail(f"{DRIVER} is missing: make build/tests/test_data_loader")
    total = int(args.gb * 1e9)
    os.makedirs(args.work, exist_ok=True)
    free = shutil.disk_usage(args.work).free
    if free < 2 * total:
        fail(f"{args.work}: {free / 1e9:.1f} GB free, the corpus and its shards need about {2 * total / 1e9:.1f} GB")
    if os.listdir(args.work):
        fail(f"{args.work} is not empty")
    try:
        t0 = time.time()
        corpus, records, written = make_corpus(args.work, total)
        files = sorted(os.listdir(corpus))
        print(f"corpus: {written / 1e9:.2f} GB in {len(files)} files (JSONL and Parquet), {records:,} records, "
              f"made in {time.time() - t0:.0f} s", flush=True)

        first = os.path.join(corpus, files[0])
        for w in sorted({1, args.workers} | set(range(2, args.workers + 1, max(1, args.workers // 4)))):
            seconds, cpu, peak, err = run_prepro(["--input", first, "--out", os.path.join(args.work, f"scale{w}"),
                                                  "--workers", w, "--val-fraction", 0])
            tokens = summary_tokens(err)
            print(f"scaling: {os.path.getsize(first) / 1e6:.0f} MB JSONL, {w} worker(s): {tokens:,} tokens in "
                  f"{seconds:.1f} s = {tokens / seconds / 1e6:.2f}M tokens/s; {cpu:.0f} CPU-s = "
                  f"{tokens / cpu / 1e6:.2f}M tokens per CPU-second, {cpu / seconds:.2f} cores busy; peak "
                  f"{peak / 1e6:.0f} MB; "
                  f"load average {os.getloadavg()[0]:.1f}", flush=True)
            shutil.rmtree(os.path.join(args.work, f"scale{w}"))

        out = os.path.join(args.work, "shards")
        shard_size = max(1, int(written / 4.3 / args.shards))  # about 4.3 bytes of JSONL/Parquet per GPT-2 token
        seconds, cpu, peak, err = run_prepro(["--input", corpus, "--out", out, "--workers", args.workers,
                                              "--val-docs", 10000, "--shard-size", shard_size])
        tokens = summary_tokens(err)
        shards = glob.glob(os.path.join(out, "*_train_*.bin"))
        print(f"prepare: {written / 1e9:.2f} GB, {tokens:,} GPT-2 tokens in {seconds:.0f} s = "
              f"{tokens / seconds / 1e6:.2f}M tokens/s on {args.workers} worker(s); {cpu:.0f} CPU-s = "
              f"{tokens / cpu / 1e6:.2f}M tokens per CPU-second, {cpu / seconds:.2f} cores busy; "
              f"{len(shards)} train shards; peak memory "
              f"{peak / 1e9:.2f} GB (all processes); load average {os.getloadavg()[0]:.1f}", flush=True)
        print("  " + next(l for l in err.splitlines() if l.startswith("total: ")), flush=True)

        loader_startup(os.path.join(out, "*_train_*.bin"), f"{len(shards)} raw shards")
        subprocess.run(["zstd", "-q", "-T0", "--rm", *shards], check=True)
        loader_startup(os.path.join(out, "*_train_*.bin.zst"), f"{len(shards)} zstd shards")
    finally:
        if not args.keep:
            shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
