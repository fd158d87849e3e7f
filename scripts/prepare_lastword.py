#!/usr/bin/env python3
"""
The last-word task of the SSD-Mamba paper's WikiText-2 experiment (arXiv 2510.04944, as a review describes
it): from a window of T words, predict the word that follows it. Builds it from word-level shards of
scripts/prepro.py (--recipe wikitext2 --tokenizer word) so that the trainers train and evaluate on it as is.

Layout. The loader (data/dataloader.h) cuts a shard of ntok tokens into rows r = 0 .. (ntok-1)/T - 1, row r
being the T + 1 tokens from r*T: inputs tokens[r*T .. r*T+T-1], targets tokens[r*T+1 .. r*T+T]. So a shard
holding the first N*T + 1 words of a split has exactly N rows, row r is the r-th consecutive chunk of T
words, and its last target, token (r+1)*T, is the word after the chunk. Shuffling permutes whole rows, so
this holds in any order; full-split evaluation (train/eval_split.h) cuts the same windows. The loss mask
(format: a header of 256 int32 [20261201, 1, ntok], then one uint8 per token) marks tokens r*T, r >= 1: the
last target of every row, and nothing else.

Writes into --out (default datasets/wikitext2_lastword):
  lastword_{train,val}_000000.bin and .bin.mask   N windows each (default 5,000 train, 1,000 val)
  tokenizer.bin                                   the word vocabulary (copied)
  lastword_val.task                               the val windows as last-word task items (data/task.h):
                                                  -ta scores the last position's accuracy (argmax = target)
                                                  and ppl = exp(mean cross-entropy)
  nomask/lastword_{train,val}_000000.bin, tokenizer.bin   the same shards without masks (every target counts)
  lastword.json                                   settings, counts and reference figures (uniform and
                                                  unigram cross-entropy, majority-word accuracy on val)

  python3 scripts/prepare_lastword.py                      # prepares datasets/wikitext2_word first if missing
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from prepare_task import task_bytes, write_atomic  # noqa: E402
from prepro_shards import read_shard, write_shard  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MASK_MAGIC = 20261201
MASK_VERSION = 1
MASK_HEADER_INTS = 256
TASK_KIND_LAST_WORD = 1


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def mask_bytes(mask):
    header = np.zeros(MASK_HEADER_INTS, dtype="<i4")
    header[:3] = [MASK_MAGIC, MASK_VERSION, mask.size]
    return header.tobytes() + mask.astype(np.uint8).tobytes()


def read_mask(path):
    """The per-token uint8 mask of a .mask file, checking its header (tests and tools)."""
    data = open(path, "rb").read()
    header = np.frombuffer(data[:4 * MASK_HEADER_INTS], dtype="<i4")
    if header.size < 3 or header[0] != MASK_MAGIC or header[1] != MASK_VERSION:
        raise ValueError(f"{path}: not a loss mask (magic {header[:1]}, version {header[1:2]})")
    mask = np.frombuffer(data[4 * MASK_HEADER_INTS:], dtype=np.uint8)
    if mask.size != header[2]:
        raise ValueError(f"{path}: header declares {header[2]} tokens, the file holds {mask.size}")
    return mask


def window_tokens(tokens, windows, T, source):
    """The first windows*T + 1 tokens: `windows` consecutive chunks of T and the word after the last."""
    need = windows * T + 1
    if tokens.size < need:
        fail(f"{source}: {tokens.size:,} tokens, fewer than {windows:,} windows of {T} + 1 need ({need:,})")
    return tokens[:need]


def last_target_mask(ntok, T):
    """1 at tokens r*T for r >= 1 (the last target of row r-1), 0 elsewhere."""
    mask = np.zeros(ntok, dtype=np.uint8)
    mask[T::T] = 1
    return mask


def lastword_items(tokens, T):
    """Task items (context, [ending], label): window r's T tokens and the word after it."""
    n = (tokens.size - 1) // T
    return [(tokens[r * T:(r + 1) * T].tolist(), [[int(tokens[(r + 1) * T])]], 0) for r in range(n)]


def reference_figures(train_tokens, val_targets, vocab_size):
    """What a model needs no context for: uniform guessing, the train unigram (add-one smoothed) and always
    naming the train split's most frequent word, on the val targets."""
    counts = np.bincount(train_tokens, minlength=vocab_size).astype(np.float64) + 1.0
    log_p = np.log(counts / counts.sum())
    majority = int(np.argmax(counts))
    return {"uniform_ce": math.log(vocab_size), "train_unigram_ce": float(-log_p[val_targets].mean()),
            "majority_word_id": majority, "majority_word_acc": float(np.mean(val_targets == majority)),
            "val_target_unigram_entropy": float(entropy_of(val_targets))}


def entropy_of(values):
    p = np.unique(values, return_counts=True)[1] / values.size
    return -(p * np.log(p)).sum()


def source_shard(data_dir, split):
    path = os.path.join(data_dir, f"wikitext2_{split}_000000.bin")
    if not os.path.isfile(path):
        fail(f"{path} not found: prepare word-level WikiText-2 with scripts/prepro.py --recipe wikitext2 "
             f"--tokenizer word --out {data_dir} (raw .bin shards, one per split)")
    return path


def prepare_source(data_dir, raw):
    if all(os.path.isfile(os.path.join(data_dir, f"wikitext2_{s}_000000.bin")) for s in ("train", "val")):
        return
    cmd = [sys.executable, os.path.join(REPO, "scripts", "prepro.py"), "--recipe", "wikitext2", "--tokenizer", "word",
           "--out", data_dir] + (["--input", raw] if raw else [])
    print("preparing word-level WikiText-2:", " ".join(cmd), flush=True)
    if subprocess.run(cmd).returncode != 0:
        fail("data preparation failed (see above)")


def tokenizer_vocab_size(path):
    header = np.fromfile(path, dtype="<i4", count=5)
    if header.size < 5 or header[4] != 3:
        fail(f"{path}: not a word-level tokenizer.bin (kind {header[4] if header.size >= 5 else '?'})")
    return int(header[2])


def build(args):
    prepare_source(args.data, args.raw)
    tokenizer = os.path.join(args.data, "tokenizer.bin")
    if not os.path.isfile(tokenizer):
        fail(f"{tokenizer} not found beside the shards")
    vocab_size = tokenizer_vocab_size(tokenizer)
    T = args.window
    nomask = os.path.join(args.out, "nomask")
    os.makedirs(nomask, exist_ok=True)
    for folder in (args.out, nomask):
        shutil.copyfile(tokenizer, os.path.join(folder, "tokenizer.bin"))
    counts = {}
    train_all = read_shard(source_shard(args.data, "train"))
    for split, windows in (("train", args.train_windows), ("val", args.val_windows)):
        source = source_shard(args.data, split)
        tokens = window_tokens(train_all if split == "train" else read_shard(source), windows, T, source)
        name = f"lastword_{split}_000000.bin"
        for folder in (args.out, nomask):
            write_shard(os.path.join(folder, name), tokens, vocab_size)
        write_atomic(os.path.join(args.out, name + ".mask"), mask_bytes(last_target_mask(tokens.size, T)))
        counts[split] = {"windows": windows, "tokens": int(tokens.size), "source": os.path.relpath(source, REPO)}
        if split == "val":
            val_targets = tokens[T::T]
            write_atomic(os.path.join(args.out, "lastword_val.task"),
                         task_bytes(TASK_KIND_LAST_WORD, args.task_tokenizer, vocab_size, lastword_items(tokens, T)))
    meta = {"window": T, "vocab_size": vocab_size, "splits": counts, "task_tokenizer": args.task_tokenizer,
            "reference": reference_figures(train_all, val_targets, vocab_size)}
    write_atomic(os.path.join(args.out, "lastword.json"), json.dumps(meta, indent=1).encode())
    ref = meta["reference"]
    print(f"wrote {args.out}: {args.train_windows:,} train and {args.val_windows:,} val windows of {T} words "
          f"(masks, lastword_val.task, nomask/); val targets: uniform CE {ref['uniform_ce']:.3f}, train-unigram CE "
          f"{ref['train_unigram_ce']:.3f}, majority-word accuracy {100 * ref['majority_word_acc']:.1f}%")
    return meta


def parse_args(argv):
    p = argparse.ArgumentParser(description="Build the WikiText-2 last-word task (shards, loss masks, task file).")
    p.add_argument("--data", default=os.path.join(REPO, "datasets", "wikitext2_word"),
                   help="word-level WikiText-2 shards from scripts/prepro.py (prepared there when missing)")
    p.add_argument("--raw", help="WikiText-2 text dir for preparing --data (default: prepro.py's)")
    p.add_argument("--out", default=os.path.join(REPO, "datasets", "wikitext2_lastword"))
    p.add_argument("--window", type=int, default=128, help="words of context per window (the trainer's -t)")
    p.add_argument("--train-windows", type=int, default=5000)
    p.add_argument("--val-windows", type=int, default=1000)
    p.add_argument("--task-tokenizer", default="wikitext2-word",
                   help="tokenizer note stored in the task file: the model config's \"tokenizer\" "
                        "(configs/wikitext2-word-small-*.json: %(default)s)")
    args = p.parse_args(argv)
    if min(args.window, args.train_windows, args.val_windows) < 1:
        p.error("--window, --train-windows and --val-windows must be positive")
    if len(args.task_tokenizer.encode()) > 31:
        p.error("--task-tokenizer: at most 31 bytes")
    return args


if __name__ == "__main__":
    build(parse_args(sys.argv[1:]))
