#!/usr/bin/env python3
"""
Tests of scripts/prepro.py on corpora the test makes (from WikiText-2 lines in ../shared):
  - inputs: a directory of JSONL, JSONL.gz, JSONL.zst, Parquet and text files gives exactly the tokens of
    its valid documents, in order; bad records are reported with file and line (or row), skipped, counted;
    text documents at blank lines, per line, per file;
  - val splits by whole documents: --val-fraction, --val-docs, --val-tokens chosen by the seed (checked
    against the documents of a train-only run), --val-fraction 0 writes train only;
  - resume: a run killed (SIGKILL, SIGINT) and run again gives the same shards as one run, without
    re-tokenizing the complete shards; a shard the loader can see is always whole;
  - hostile inputs: one "error:" line naming the file and a non-zero exit, never a traceback;
  - end-of-text literals in documents stay text (GPT-2, NeoX); a literal <eos> word is <unk>;
  - the C loader reads a prepared corpus.
"""
import gzip
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared")
PREPRO = os.path.join(REPO, "scripts", "prepro.py")
DRIVER = os.path.join(REPO, "build", "tests", "test_data_loader")
WIKITEXT = os.path.join(SHARED, "data", "wikitext-2")
GPT2_PATH = os.path.join(SHARED, "tokenizers", "gpt2")
NEOX_PATH = os.path.join(SHARED, "tokenizers", "gpt-neox-20b")

sys.path.insert(0, os.path.join(REPO, "scripts"))
import prepro  # noqa: E402

from report import exit_status, report  # noqa: E402


def run_prepro(*args):
    """(exit status, stderr) of a run with two workers."""
    result = subprocess.run([sys.executable, PREPRO, "--workers", "2", *map(str, args)], capture_output=True, text=True)
    return result.returncode, result.stderr


def read_shard(path):
    data = open(path, "rb").read()
    header = np.frombuffer(data[:1024], dtype="<i4")
    return np.frombuffer(data[1024:], dtype="<u2" if header[1] == 1 else "<u4")


def split_tokens(out, split):
    names = sorted(f for f in os.listdir(out) if f"_{split}_" in f and f.endswith(".bin"))
    return np.concatenate([read_shard(os.path.join(out, f)) for f in names]) if names else np.zeros(0, np.uint16)


def documents(tokens, eot):
    """A BPE token stream cut into documents (each starts with eot)."""
    starts = np.flatnonzero(tokens == eot)
    return [tokens[s:e] for s, e in zip(starts, list(starts[1:]) + [tokens.size])]


def wikitext_lines(split="valid"):
    with open(os.path.join(WIKITEXT, f"{split}.txt"), encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def last_line(stderr):
    lines = stderr.strip().splitlines()
    return lines[-1] if lines else ""


# ---------------------------------------------------------------------------------------------------

def make_corpus(root):
    """A directory of every input kind; returns (expected document texts in order, expected problems)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    lines = wikitext_lines()
    os.makedirs(root)
    texts, problems = [], []
    notes = ["First note.\nIt has two lines.\n\n", "Second note.\n\n", "Third note, the last, no newline"]
    with open(os.path.join(root, "a_notes.txt"), "w") as f:
        f.write("".join(notes))
    texts += notes
    part1 = lines[:200]
    with open(os.path.join(root, "b_part1.jsonl"), "wb") as f:
        for i, text in enumerate(part1[:100]):
            f.write(json.dumps({"id": i, "text": text}).encode() + b"\n")
        f.write(b"this is not json\n")                                     # line 101
        f.write(json.dumps({"id": 5, "body": "x"}).encode() + b"\n")      # 102: no text field
        f.write(json.dumps({"text": 7}).encode() + b"\n")                 # 103: not a string
        f.write(b"[1, 2]\n")                                              # 104: not an object
        f.write(b'{"text": "caf\xe9"}\n')                                 # 105: not UTF-8
        f.write(b"\n")                                                    # 106: blank line, skipped silently
        f.write(json.dumps({"text": ""}).encode() + b"\n")               # 107: empty document
        for text in part1[100:]:
            f.write(json.dumps({"text": text}).encode() + b"\n")
    texts += part1
    problems += ["b_part1.jsonl:101: not JSON", "b_part1.jsonl:102: no 'text' field", "b_part1.jsonl:103: 'text' is a JSON int",
                 "b_part1.jsonl:104: a JSON list", "b_part1.jsonl:105: not UTF-8"]
    part2 = lines[200:400]
    with gzip.open(os.path.join(root, "c_part2.jsonl.gz"), "wb") as f:
        f.write(b"".join(json.dumps({"text": t}).encode() + b"\n" for t in part2))
    texts += part2
    part3 = lines[400:600]
    path3 = os.path.join(root, "d_part3.jsonl")
    with open(path3, "wb") as f:
        f.write(b"".join(json.dumps({"text": t}).encode() + b"\n" for t in part3))
    subprocess.run(["zstd", "-q", "--rm", path3], check=True)
    texts += part3
    part4 = lines[600:900]
    pq.write_table(pa.table({"text": part4 + [None], "n": list(range(len(part4) + 1))}),
                   os.path.join(root, "e_part4.parquet"), row_group_size=128)
    texts += part4
    problems += ["e_part4.parquet: row 300: 'text' is null"]
    with open(os.path.join(root, "README"), "w") as f:
        f.write("not an input\n")
    with open(os.path.join(root, ".hidden.jsonl"), "w") as f:
        f.write("hidden files are left out\n")
    return texts, problems


def test_inputs(tmp, gpt2):
    root = os.path.join(tmp, "corpus")
    texts, problems = make_corpus(root)
    out = os.path.join(tmp, "corpus_all")
    rc, err = run_prepro("--input", root, "--out", out, "--val-fraction", 0)
    tokens = split_tokens(out, "train")
    expected, _ = gpt2.encode_docs(texts)
    report(rc == 0 and np.array_equal(tokens, expected), "corpus_all_formats",
           f"text + JSONL + .jsonl.gz + .jsonl.zst + Parquet: {len(texts)} documents, {tokens.size:,} tokens equal to "
           f"encoding the valid records in order (exit {rc})")
    shown = [p for p in problems if p in err]
    report(len(shown) == len(problems) and "skipped: 6 bad record(s) or file(s), 1 empty document(s)" in err,
           "corpus_bad_records", f"{len(shown)} of {len(problems)} bad records reported by file and line/row; "
           f"summary: {[l for l in err.splitlines() if l.startswith('skipped')]}")
    report("1 file(s) whose names give no format are left out" in err and ".hidden" not in err, "corpus_unknown_files",
           "README (no format in its name) left out with a note, hidden files ignored")
    report(not any(f.startswith(".") for f in os.listdir(out)) and "val" not in "".join(os.listdir(out)),
           "corpus_train_only", f"--val-fraction 0: files {sorted(os.listdir(out))}")
    dump = subprocess.run([DRIVER, "dump", os.path.join(out, "*_train_*.bin"), *map(str, (2, 64, 0, 1, 1, 3, 50257, -1))],
                          capture_output=True)
    report(dump.returncode == 0 and len(dump.stdout) > 0, "corpus_loader_reads",
           f"the C loader reads the corpus shards: {len(dump.stdout) // (2 * 2 * 64 * 4)} batches of B=2, T=64")
    return root, out, texts


def test_text_docs(tmp):
    root = os.path.join(tmp, "text_docs")
    os.makedirs(root)
    with open(os.path.join(root, "one.txt"), "w") as f:
        f.write("para one line a\npara one line b\n\npara two\n\n\npara three\n")
    with open(os.path.join(root, "two.txt"), "w") as f:
        f.write("single\r\n\r\nwindows para\r\n")
    counts = {}
    for mode in ("blank", "line", "file"):
        out = os.path.join(tmp, f"text_docs_{mode}")
        rc, err = run_prepro("--input", root, "--out", out, "--val-fraction", 0, "--text-docs", mode, "--tokenizer", "bytes")
        summary = [l for l in err.splitlines() if l.startswith("train: ")]
        counts[mode] = int(summary[0].split()[1]) if rc == 0 and summary else f"exit {rc}: {last_line(err)}"
    report(counts == {"blank": 5, "line": 6, "file": 2}, "corpus_text_docs",
           f"documents at blank lines / per line / per file: {counts} (expected 5, 6, 2; \\r\\n read as \\n)")


def test_val_splits(tmp, corpus, all_out, texts):
    all_docs = documents(split_tokens(all_out, "train"), 50256)
    n = len(all_docs)
    keys = prepro.doc_keys(1337, 0, n)
    order = np.argsort(keys)

    def check(name, args, val_index):
        out = os.path.join(tmp, name)
        rc, err = run_prepro("--input", corpus, "--out", out, *args)
        val, train = split_tokens(out, "val"), split_tokens(out, "train")
        val_index = sorted(val_index)
        rest = [i for i in range(n) if i not in set(val_index)]
        ok = (rc == 0 and np.array_equal(val, np.concatenate([all_docs[i] for i in val_index]))
              and sorted(map(bytes, documents(train, 50256))) == sorted(bytes(all_docs[i]) for i in rest))
        return ok, out, err

    ok, out, _ = check("val_docs", ["--val-docs", 40], order[:40])
    again = os.path.join(tmp, "val_docs_again")
    run_prepro("--input", corpus, "--out", again, "--val-docs", 40)
    other = os.path.join(tmp, "val_docs_seed")
    run_prepro("--input", corpus, "--out", other, "--val-docs", 40, "--seed", 7)
    same = np.array_equal(split_tokens(out, "val"), split_tokens(again, "val"))
    differs = not np.array_equal(split_tokens(out, "val"), split_tokens(other, "val"))
    report(ok and same and differs, "val_docs", f"--val-docs 40: the 40 documents of smallest seeded key, in order; "
           f"train has the other {n - 40}; the same again: {same}; another seed, another val: {differs}")
    sizes = np.array([all_docs[i].size for i in order])
    k = int(np.searchsorted(np.cumsum(sizes), 3000)) + 1
    ok, _, _ = check("val_tokens", ["--val-tokens", 3000], order[:k])
    report(ok, "val_tokens", f"--val-tokens 3000: the fewest smallest-key documents with >= 3000 tokens ({k} documents, "
           f"{sizes[:k].sum():,} tokens)")
    ok, _, _ = check("val_fraction", ["--val-fraction", 0.2], np.flatnonzero(keys < 0.2))
    report(ok, "val_fraction", f"--val-fraction 0.2: the {int((keys < 0.2).sum())} of {n} documents whose key is < 0.2")


def test_resume(tmp):
    lines = wikitext_lines("train")[:8000]
    corpus = os.path.join(tmp, "resume.jsonl")
    with open(corpus, "w") as f:
        f.write("".join(json.dumps({"text": t}) + "\n" for t in lines))
    args = ["--input", corpus, "--shard-size", 20000, "--val-docs", 200]
    whole = os.path.join(tmp, "resume_whole")
    rc, err = run_prepro(*args, "--out", whole)
    expected = {f: open(os.path.join(whole, f), "rb").read() for f in os.listdir(whole)}
    total = sum(len(read_shard(os.path.join(whole, f))) for f in expected if f != "tokenizer.bin")
    for sig in (signal.SIGKILL, signal.SIGINT):
        out = os.path.join(tmp, f"resume_{sig.name}")
        cmd = [sys.executable, PREPRO, "--workers", "2", *map(str, args), "--out", out]
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
        seen, partial_visible, deadline = 0, [], time.time() + 60
        while proc.poll() is None and seen < 12 and time.time() < deadline:
            shards = [f for f in os.listdir(out) if f.endswith(".bin") and f != "tokenizer.bin"] if os.path.isdir(out) else []
            for f in shards:
                data = open(os.path.join(out, f), "rb").read()
                if len(data) < 1024 or np.frombuffer(data[:12], "<i4")[2] * 2 + 1024 != len(data):
                    partial_visible.append(f)
            seen = len(shards)
            time.sleep(0.02)
        os.kill(proc.pid, sig)
        _, first_err = proc.communicate()
        rc1 = proc.returncode
        rc2, err2 = run_prepro(*args, "--out", out)
        got = {f: open(os.path.join(out, f), "rb").read() for f in os.listdir(out)}
        new = int(next((l.split(", ")[1].split()[0].replace(",", "") for l in err2.splitlines()
                        if l.startswith("resumed:")), total))
        interrupted = ("interrupted" in first_err and "Traceback" not in first_err) if sig == signal.SIGINT else True
        report(rc2 == 0 and got == expected and not partial_visible and interrupted and new < total
               and "resuming" in err2, f"resume_after_{sig.name}",
               f"stopped after {seen} shards (exit {rc1}), run again: {len(got)} files identical to one whole run; "
               f"{new:,} of {total:,} tokens tokenized again; no partial shard ever visible: {not partial_visible}")


def test_hostile(tmp):
    bad = os.path.join(tmp, "hostile")
    os.makedirs(bad)

    def write(name, data):
        path = os.path.join(bad, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        return path

    latin1 = write("latin1.txt", "caf\u00e9 au lait\n\nna\u00efve\n".encode("latin-1"))
    empty = write("empty.txt", b"")
    one = write("one.txt", b"a single document without blank lines\nsecond line\n")
    write("wt/train.txt", b"")
    write("wt/valid.txt", b" = A = \n")
    write("wt/test.txt", b" = B = \n")
    write("gpt2bad/encoder.json", b'{"a": ')
    write("gpt2bad/vocab.bpe", b"#version: 0.2\n")
    neox = write("neox/tokenizer.json", b"not json at all")
    afile = write("a_file", b"x")
    no_column = write("nocol.parquet", b"")
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"body": ["x", "y"]}), no_column)
    cases = [
        ("non_utf8", [latin1], "latin1.txt", "not UTF-8"),
        ("non_utf8_recipe", ["--recipe", "tinyshakespeare", "--input", latin1], "latin1.txt", "not UTF-8"),
        ("unwritable_out", ["--input", one, "--val-fraction", 0, "--out", os.path.join(afile, "out")], "a_file/out",
         "cannot create"),
        ("corrupt_gpt2_tokenizer", [one, "--tokenizer-path", os.path.join(bad, "gpt2bad")], "encoder.json", "not a GPT-2"),
        ("corrupt_neox_tokenizer", [one, "--tokenizer", "neox", "--tokenizer-path", neox], "tokenizer.json",
         "not a tokenizers"),
        ("wikitext_empty_train", ["--recipe", "wikitext2", "--tokenizer", "word", "--input", os.path.join(bad, "wt")],
         "train.txt", "no text"),
        ("empty_input", [empty], "empty.txt", "no documents"),
        ("one_document", [one], "one.txt", "--val-fraction 0"),
        ("parquet_no_column", [no_column], "nocol.parquet", "no column 'text'"),
        ("missing_input", [os.path.join(bad, "nope.jsonl")], "nope.jsonl", "no such file"),
    ]
    for name, args, file_named, problem in cases:
        if not args[0].startswith("--"):
            args = ["--input"] + args
        if "--tokenizer" not in args and "--tokenizer-path" not in args:
            args = args + ["--tokenizer", "bytes"]
        if "--out" not in args:
            args = args + ["--out", os.path.join(tmp, "hostile_out", name)]
        rc, err = run_prepro(*args)
        line = last_line(err)
        report(rc == 1 and line.startswith("error: ") and file_named in line and problem in line and "Traceback" not in err,
               f"hostile_{name}", f"exit {rc}: {line}")
    gz = write("mixed/bad.jsonl.gz", gzip.compress(b'{"text": "a"}\n' * 1000)[:-40])
    write("mixed/good.jsonl", b'{"text": "one"}\n{"text": "two"}\n')
    rc, err = run_prepro("--input", os.path.dirname(gz), "--val-fraction", 0, "--out", os.path.join(tmp, "mixed_out"),
                         "--tokenizer", "bytes")
    report(rc == 0 and "bad.jsonl.gz: unreadable after line" in err and "Traceback" not in err,
           "hostile_truncated_gzip", f"exit {rc}; {[l for l in err.splitlines() if 'bad.jsonl.gz' in l][:1]}")


def test_end_of_text_literals(tmp, gpt2):
    literal = ["plain text <|endoftext|> inside", "and <|padding|> too<|endoftext|>", "none here"]
    src = os.path.join(tmp, "eot.jsonl")
    with open(src, "w") as f:
        f.write("".join(json.dumps({"text": t}) + "\n" for t in literal))
    results = []
    for kind, path in (("gpt2", GPT2_PATH), ("neox", NEOX_PATH)):
        out = os.path.join(tmp, f"eot_{kind}")
        rc, err = run_prepro("--input", src, "--out", out, "--val-fraction", 0, "--tokenizer", kind)
        tok = gpt2 if kind == "gpt2" else prepro.BPETokenizer("neox", path)
        tokens = split_tokens(out, "train")
        table = tok.token_bytes()
        text = b"".join(table[t] for t in tokens)
        eots = int((tokens == tok.eot).sum())
        specials = {i for i, t in tok.tok.get_added_tokens_decoder().items() if t.special}
        ok = rc == 0 and eots == len(literal) and not set(tokens.tolist()) & (specials - {tok.eot}) and \
            text == "".join("<|endoftext|>" + t for t in literal).encode()
        results.append(ok)
        report(ok, f"eot_literal_{kind}", f"{eots} end-of-text ids for {len(literal)} documents; the literal "
               "<|endoftext|> and <|padding|> inside them decode back as text")
    wt = os.path.join(tmp, "eot_wt")
    os.makedirs(wt)
    for stem in ("train", "valid", "test"):
        with open(os.path.join(wt, f"{stem}.txt"), "w") as f:
            f.write(" = T = \n a b <eos> c \n")
    out = os.path.join(tmp, "eot_word")
    rc, err = run_prepro("--recipe", "wikitext2", "--tokenizer", "word", "--input", wt, "--out", out)
    header = np.fromfile(os.path.join(out, "tokenizer.bin"), dtype="<i4", count=256)
    tokens = split_tokens(out, "train")
    eos, unk = header[3], header[2] - 1
    report(rc == 0 and int((tokens == eos).sum()) == 2 and int((tokens == unk).sum()) == 1, "eot_literal_word",
           f"a literal <eos> word is <unk> (id {unk}); <eos> (id {eos}) only at the 2 line ends: {tokens.tolist()}")


def main():
    if not os.path.isfile(DRIVER):
        report(False, "data_driver", f"{DRIVER} is missing: run `make test` (or make {os.path.relpath(DRIVER, REPO)})")
        return 1
    gpt2 = prepro.BPETokenizer("gpt2", GPT2_PATH)
    with tempfile.TemporaryDirectory(prefix="ssd_test_corpus_") as tmp:
        corpus, all_out, texts = test_inputs(tmp, gpt2)
        test_text_docs(tmp)
        test_val_splits(tmp, corpus, all_out, texts)
        test_resume(tmp)
        test_hostile(tmp)
        test_end_of_text_literals(tmp, gpt2)
    return exit_status()


if __name__ == "__main__":
    sys.exit(main())
