#!/usr/bin/env python3
"""
scripts/prepare_lastword.py on a synthetic word-level corpus whose token i is i, so a row tells which
window it is: through the C loader (build/tests/test_data_loader dump, shuffled, B=4, two epochs) every
row is exactly one window k (inputs k*T .. k*T+T-1) and its last target is the word after it, (k+1)*T,
every window appears once per epoch; the mask marks exactly the last target of each row; the task file
holds the val windows with their next word; too short a split is refused naming the file.
"""
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))
from prepare_lastword import read_mask  # noqa: E402
from prepro_shards import read_shard, write_shard  # noqa: E402

BUILDER = os.path.join(REPO, "scripts", "prepare_lastword.py")
DRIVER = os.path.join(REPO, "build", "tests", "test_data_loader")
T, B, TRAIN_WINDOWS, VAL_WINDOWS, VOCAB = 8, 4, 20, 6, 400

from report import exit_status, report  # noqa: E402


def write_word_tokenizer(path, vocab):
    header = np.zeros(256, dtype="<i4")
    header[:5] = [20251123, 1, vocab, 0, 3]
    with open(path, "wb") as f:
        f.write(header.tobytes())
        for i in range(vocab):
            word = f"w{i} ".encode()
            f.write(struct.pack("<I", len(word)) + word)


def build(src, out, *extra):
    return subprocess.run([sys.executable, BUILDER, "--data", src, "--out", out, "--window", str(T), "--train-windows",
                           str(TRAIN_WINDOWS), "--val-windows", str(VAL_WINDOWS), *extra], capture_output=True, text=True)


def loader_rows(pattern, epochs):
    """(inputs, targets) rows of `epochs` shuffled epochs from the C loader."""
    batches = epochs * TRAIN_WINDOWS // B
    out = subprocess.run([DRIVER, "dump", pattern, *map(str, (B, T, 0, 1, 1, 7, VOCAB, batches))], capture_output=True, check=True)
    ints = np.frombuffer(out.stdout, dtype=np.int32).reshape(batches, 2, B, T)
    return [(ints[b, 0, r], ints[b, 1, r]) for b in range(batches) for r in range(B)]


def test_windows(out):
    shard = os.path.join(out, "lastword_train_000000.bin")
    tokens, mask = read_shard(shard), read_mask(shard + ".mask")
    report(tokens.size == TRAIN_WINDOWS * T + 1 and mask.size == tokens.size and np.array_equal(tokens, np.arange(tokens.size)),
           "lastword_shard", f"{tokens.size} tokens = {TRAIN_WINDOWS} windows x {T} + 1, the text's first ones in order")
    rows = loader_rows(os.path.join(out, "*_train_*.bin").replace(" ", "?"), 2)
    bad, seen = [], []
    for inputs, targets in rows:
        k = int(inputs[0]) // T
        window_ok = np.array_equal(inputs, np.arange(k * T, k * T + T)) and targets[-1] == (k + 1) * T
        # the loader gives a target the mask does not count as -1 (token i == position i here)
        if not window_ok or mask[targets[-1]] != 1 or (targets[:-1] != -1).any():
            bad.append(k)
        seen.append(k)
    epochs_ok = all(sorted(seen[e * TRAIN_WINDOWS:(e + 1) * TRAIN_WINDOWS]) == list(range(TRAIN_WINDOWS)) for e in (0, 1))
    shuffled = seen[:TRAIN_WINDOWS] != list(range(TRAIN_WINDOWS)) and seen[:TRAIN_WINDOWS] != seen[TRAIN_WINDOWS:]
    report(not bad and epochs_ok and shuffled, "lastword_loader_rows",
           f"{len(rows)} shuffled rows over 2 epochs: each one window with the next word as its last target and the "
           f"only counted one; every window once per epoch, in another order each epoch (bad rows: {bad[:5]})")
    report(not os.path.exists(os.path.join(out, "nomask", "lastword_train_000000.bin.mask")) and
           np.array_equal(read_shard(os.path.join(out, "nomask", "lastword_train_000000.bin")), tokens),
           "lastword_nomask", "nomask/ holds the same tokens without a mask file")


def test_task_file(out):
    data = open(os.path.join(out, "lastword_val.task"), "rb").read()
    magic, (version, kind, items, vocab, body_bytes) = data[:8], struct.unpack("<IIIIQ", data[8:32])
    body = np.frombuffer(data[72:], dtype="<u4")
    val = read_shard(os.path.join(out, "lastword_val_000000.bin"))
    expected = []
    for k in range(VAL_WINDOWS):
        expected += [0, 1, T] + list(val[k * T:(k + 1) * T]) + [1, val[(k + 1) * T]]
    name = data[32:64].rstrip(b"\0").decode()
    report(magic == b"SSDTASK\0" and (version, kind, items, vocab) == (1, 1, VAL_WINDOWS, VOCAB) and
           body_bytes == body.nbytes and np.array_equal(body, expected) and name == "wikitext2-word", "lastword_task",
           f"{items} last-word items: each val window as context, the word after it as the one ending (tokenizer {name})")


def main():
    if not os.path.isfile(DRIVER):
        report(False, "lastword_driver", f"{DRIVER} is missing: run `make test`")
        sys.exit(1)
    with tempfile.TemporaryDirectory() as tmp:
        src, out = os.path.join(tmp, "word src"), os.path.join(tmp, "out dir")
        os.makedirs(src)
        write_word_tokenizer(os.path.join(src, "tokenizer.bin"), VOCAB)
        write_shard(os.path.join(src, "wikitext2_train_000000.bin"), np.arange(TRAIN_WINDOWS * T + 30), VOCAB)
        write_shard(os.path.join(src, "wikitext2_val_000000.bin"), np.arange(VAL_WINDOWS * T + 1) + 50, VOCAB)
        result = build(src, out)
        report(result.returncode == 0, "lastword_build", result.stdout.strip() or result.stderr.strip())
        if result.returncode == 0:
            test_windows(out)
            test_task_file(out)
        short = build(src, os.path.join(tmp, "short"), "--val-windows", str(VAL_WINDOWS + 1))
        report(short.returncode == 1 and "wikitext2_val_000000.bin" in short.stderr and "Traceback" not in short.stderr,
               "lastword_too_short", short.stderr.strip())
    sys.exit(exit_status())


if __name__ == "__main__":
    main()
