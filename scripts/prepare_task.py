#!/usr/bin/env python3
"""
Turns a downstream task into the task file that the trainers score with -ta (format in data/task.h).

Input: JSONL, one item a line, in one of these formats (--format):
  choice     {"context": "...", "endings": ["...", "..."], "label": 1}   multiple choice; each ending
             is appended to the context exactly as written (give it its leading space)
  lastword   {"text": "..."}   a passage whose last word is the target (the word keeps the space before it)
  hellaswag  HellaSwag's own files (hellaswag_val.jsonl): "ctx", "endings", "label"; each ending gets
             a leading space, as in the public evaluations
  lambada    LAMBADA's JSONL (lambada_test.jsonl, one {"text": ...} per line): the same as lastword
Items that cannot be used (bad JSON, a missing field, a label out of range, an empty context or
ending) are reported with their line number and skipped; --max-bad N (default 0) allows that many.

Examples:
  python3 scripts/prepare_task.py --format hellaswag --input hellaswag_val.jsonl --tokenizer gpt2 --out tasks/hellaswag.bin
  python3 scripts/prepare_task.py --format lambada --input lambada_test.jsonl --tokenizer neox --out tasks/lambada.bin
"""
import argparse
import json
import os
import struct
import sys
import zlib

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from prepro import DEFAULT_TOKENIZER_PATHS  # noqa: E402
from prepro_tokenizers import BPETokenizer, TokenizerError  # noqa: E402

TASK_MAGIC = b"SSDTASK\0"
TASK_VERSION = 1
KINDS = {"choice": 0, "hellaswag": 0, "lastword": 1, "lambada": 1}
TOKENIZER_NAMES = {"gpt2": "gpt2", "neox": "gpt-neox-20b", "gpt-neox-20b": "gpt-neox-20b"}  # flag -> stored name


class BadItem(Exception):
    pass


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def item_texts(fmt, record):
    """(context, [endings], label) of one JSON record, or BadItem saying what is wrong."""
    if not isinstance(record, dict):
        raise BadItem("not a JSON object")

    def text_field(name):
        value = record.get(name)
        if not isinstance(value, str) or not value.strip():
            raise BadItem(f'field "{name}" is missing or not a non-empty string')
        return value

    if fmt in ("lastword", "lambada"):
        text = text_field("text").rstrip()
        cut = text.rfind(" ")
        if cut <= 0:
            raise BadItem("the passage has no space before its last word")
        return text[:cut], [text[cut:]], 0
    context = text_field("ctx" if fmt == "hellaswag" else "context")
    endings = record.get("endings")
    if not isinstance(endings, list) or len(endings) < 2 or not all(isinstance(e, str) and e.strip() for e in endings):
        raise BadItem('field "endings" must be a list of at least 2 non-empty strings')
    if fmt == "hellaswag":
        endings = [" " + e.strip() for e in endings]
    label = record.get("label")
    if isinstance(label, str) and label.isdigit():
        label = int(label)
    if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < len(endings):
        raise BadItem(f'field "label" must be an index into the {len(endings)} endings')
    return context, endings, label


def read_items(path, fmt, max_bad):
    items, bad = [], 0
    try:
        f = open(path, encoding="utf-8")
    except OSError as e:
        fail(f"cannot read {path}: {e.strerror}")
    with f:
        try:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    items.append(item_texts(fmt, json.loads(line)))
                except (json.JSONDecodeError, BadItem) as e:
                    bad += 1
                    print(f"{path}:{number}: skipped: {e}", file=sys.stderr)
        except UnicodeDecodeError:
            fail(f"{path}: not UTF-8 text")
    if bad > max_bad:
        fail(f"{path}: {bad} bad items (--max-bad {max_bad} allows {max_bad})")
    if not items:
        fail(f"{path}: no items")
    return items, bad


def encode_items(tokenizer, items):
    """Token lists per item: (context, [endings], label); an empty tokenization is refused."""
    out = []
    for number, (context, endings, label) in enumerate(items):
        ids = tokenizer.encoder.encode_batch([context] + endings, add_special_tokens=False)
        tokens = [e.ids for e in ids]
        if any(len(t) == 0 for t in tokens):
            fail(f"item {number}: a context or ending tokenizes to nothing")
        out.append((tokens[0], tokens[1:], label))
    return out


def task_bytes(kind, tokenizer_name, vocab_size, encoded):
    words = []
    for context, endings, label in encoded:
        words += [label, len(endings), len(context)] + context
        for ending in endings:
            words += [len(ending)] + ending
    body = np.asarray(words, dtype="<u4").tobytes()
    name = tokenizer_name.encode("ascii")
    header = TASK_MAGIC + struct.pack("<IIIIQ", TASK_VERSION, kind, len(encoded), vocab_size, len(body))
    header += name + b"\0" * (32 - len(name)) + struct.pack("<I", zlib.crc32(body))
    header += struct.pack("<I", zlib.crc32(header))
    return header + body


def write_atomic(path, data):
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        fail(f"cannot write {path}: {e.strerror}")


def main(argv=None):
    p = argparse.ArgumentParser(description="Tokenize a downstream task into a task file for ssd.c (-ta).")
    p.add_argument("--format", choices=list(KINDS), required=True)
    p.add_argument("--input", required=True, help="the task's JSONL file")
    p.add_argument("--tokenizer", choices=list(TOKENIZER_NAMES), default="gpt2",
                   help="the model's tokenizer, as its model file names it (default gpt2)")
    p.add_argument("--tokenizer-path", help="gpt2: dir with encoder.json and vocab.bpe; neox: tokenizer.json or its dir")
    p.add_argument("--out", required=True, help="task file to write")
    p.add_argument("--max-items", type=int, default=0, help="keep only the first N items (default all)")
    p.add_argument("--max-bad", type=int, default=0, help="bad items allowed before the run fails (default 0)")
    args = p.parse_args(argv)
    if args.max_items < 0 or args.max_bad < 0:
        fail("--max-items and --max-bad must be >= 0")
    items, bad = read_items(args.input, args.format, args.max_bad)
    if args.max_items:
        items = items[: args.max_items]
    kind = "gpt2" if args.tokenizer == "gpt2" else "neox"
    try:
        tokenizer = BPETokenizer(kind, args.tokenizer_path or DEFAULT_TOKENIZER_PATHS[kind])
    except TokenizerError as e:
        fail(str(e))
    encoded = encode_items(tokenizer, items)
    data = task_bytes(KINDS[args.format], TOKENIZER_NAMES[args.tokenizer], tokenizer.vocab_size, encoded)
    write_atomic(args.out, data)
    longest = max(len(c) + max(len(e) for e in es) for c, es, _ in encoded)
    print(f"wrote {args.out}: {len(encoded)} items ({bad} skipped), longest {longest} tokens, "
          f"{len(data) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
