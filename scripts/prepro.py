#!/usr/bin/env python3
"""
Tokenizes text corpora into token shards for the ssd.c loaders (data/dataloader.h) and writes
tokenizer.bin (data/tokenizer.h) for decoding samples.

Inputs (scripts/prepro_inputs.py): any number of files, directories and globs of plain text, JSON Lines
and Parquet, .gz or .zst compressed; bad records are reported with file and line (or row), skipped and
counted. Recipes: tinyshakespeare (one text file, documents at blank lines, the end of the text is val)
and wikitext2 (train/valid/test files, documents are articles).

Streaming: worker processes (--workers, default every core) read their documents from tasks of about
1 MiB and tokenize them; the main process reads the input, keeps the order, and appends each split's
tokens to its shard in progress (scripts/prepro_shards.py). Memory does not grow with the corpus.

Splits: the val documents are chosen by a seeded hash of each document's index: --val-fraction F (each
document with probability F; 0: train only), --val-docs N or --val-tokens N (the N documents, or the
fewest documents with at least N tokens, of smallest hash).

Resume: the run's state (.<name>_prepro.json in the output directory) is saved whenever a shard fills
(and every 30 s); rerunning the same command after an interruption continues from it, keeping the complete
shards, without re-tokenizing them. A finished run removes its state.

Shards: a header of 256 int32 [20240520, version, ntok], then ntok tokens: uint16 (version 1), or uint32
(version 2, chosen when the vocabulary has more than 65535 ids). --zstd compresses each shard with the
zstd command-line tool into <shard>.bin.zst.

Examples:
  python3 scripts/prepro.py --recipe tinyshakespeare --tokenizer gpt2
  python3 scripts/prepro.py --recipe wikitext2 --tokenizer word --zstd
  python3 scripts/prepro.py --input corpus/ --text-field text --tokenizer neox --val-docs 2000 --out datasets/corpus
"""
import argparse
import codecs
import collections
import concurrent.futures
import glob
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from prepro_inputs import (InputError, InputFile, Position, Reader, discover, describe,  # noqa: E402
                           worker_init, worker_task)
from prepro_shards import ShardWriter, ValReservoir, fsync_dir, write_shard  # noqa: E402,F401
from prepro_instruct import InstructError, prepare_instruct  # noqa: E402
from prepro_tokenizers import (BPETokenizer, BytesTokenizer, TokenizerError, WordTokenizer,  # noqa: E402,F401
                               shard_dtype, write_tokenizer_bin)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared")
DEFAULT_TOKENIZER_PATHS = {
    "gpt2": os.path.join(SHARED, "tokenizers", "gpt2"),
    "neox": os.path.join(SHARED, "tokenizers", "gpt-neox-20b"),
}
DEFAULT_INPUTS = {
    "tinyshakespeare": os.path.join(SHARED, "data", "tinyshakespeare", "input.txt"),
    "wikitext2": os.path.join(SHARED, "data", "wikitext-2"),
}
WIKITEXT_SPLITS = (("train", "train"), ("val", "valid"), ("test", "test"))
STATE_VERSION = 1
CHECKPOINT_SECONDS = 30
SHOWN_PROBLEMS = 20  # bad records printed one per line; the rest are counted


class PreproError(Exception):
    """Stops the run: printed as one line "error: <message>"."""


# ---------------------------------------------------------------------------------------------------
# which documents go to which split

def doc_keys(seed, first, n):
    """A uniform value in [0, 1) for each document index first..first+n-1, from a splitmix64 hash."""
    mask = (1 << 64) - 1
    s = (seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) & mask
    x = np.arange(first, first + n, dtype=np.uint64) ^ np.uint64(s)
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


class SplitPolicy:
    """mode: "fixed" (each file has its split: wikitext2), "tail" (val is the documents starting after the
    first 1 - value of the characters: tinyshakespeare), "fraction", "docs" or "tokens" (seeded, above)."""

    def __init__(self, mode, value, seed, files, total_chars=0):
        self.mode, self.value, self.seed = mode, value, seed
        self.file_split = [f.split for f in files]
        self.cut = (1 - value) * total_chars if mode == "tail" else 0
        if mode == "fixed":
            self.splits = list(dict.fromkeys(f.split for f in files))
        else:
            self.splits = ["train", "val"] if value > 0 else ["train"]

    def describe(self):
        if self.mode == "fixed":
            return "the inputs' own splits"
        if self.mode == "tail":
            return f"the last {self.value:g} of the text is val"
        return f"--val-{self.mode} {self.value:g}"

    def assign(self, first_doc, chars_before, result):
        """The split index (into self.splits) of each document of a result; for "docs" and "tokens" the
        val reservoir decides later (every document is 0 here, and candidates are picked by keys())."""
        n = len(result.chars)
        if self.mode == "fixed":
            return np.array([self.splits.index(self.file_split[f]) for f in result.files], dtype=np.int64)
        if self.mode == "tail":
            starts = chars_before + np.cumsum(result.chars) - result.chars
            return (starts >= self.cut).astype(np.int64)
        if self.mode == "fraction":
            return (doc_keys(self.seed, first_doc, n) < self.value).astype(np.int64)
        return np.zeros(n, dtype=np.int64)


# ---------------------------------------------------------------------------------------------------
# the worker pool, in input order, with a bounded number of tasks in flight

class Pipeline:
    def __init__(self, workers, files, text_field, tokenizer_spec):
        self.depth = 2 * workers + 2
        self.pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                                           initializer=worker_init,
                                                           initargs=(files, text_field, tokenizer_spec))

    def results(self, items):
        """(ReadItem, Result or None) in input order."""
        pending = collections.deque()
        for item in items:
            pending.append((item, self.pool.submit(worker_task, item.task) if item.task is not None else None))
            while pending and (len(pending) > self.depth or pending[0][1] is None or pending[0][1].done()):
                yield self._take(pending)
        while pending:
            yield self._take(pending)

    @staticmethod
    def _take(pending):
        item, job = pending.popleft()
        try:
            return item, (job.result() if job is not None else None)
        except concurrent.futures.process.BrokenProcessPool:
            raise PreproError("a worker process died (killed, or out of memory?); run the same command again to "
                              "continue from the last complete shard") from None

    def close(self):
        self.pool.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------------------------------------------
# progress and problems

class Progress:
    """A status line on stderr: documents, tokens, tokens/s and, from the input bytes read, the time left.
    Redrawn in place on a terminal, a line every 30 s otherwise."""

    def __init__(self, label, total_bytes, start_bytes):
        self.label, self.total, self.start_bytes = label, max(total_bytes, 1), start_bytes
        self.start = self.last = time.time()
        self.tty = sys.stderr.isatty()
        self.shown = False

    def update(self, docs, tokens, new_tokens, done_bytes):
        now = time.time()
        if now - self.last < (0.5 if self.tty else 30):
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        frac = min(done_bytes / self.total, 1.0)
        left = ""
        if done_bytes > self.start_bytes and frac < 1:
            seconds = elapsed * (self.total - done_bytes) / (done_bytes - self.start_bytes)
            left = f", {format_seconds(seconds)} left"
        line = (f"{self.label}: {docs:,} documents, {tokens:,} tokens, {new_tokens / elapsed / 1e6:.2f}M tokens/s, "
                f"{100 * frac:.1f}% of {self.total / 1e6:,.0f} MB{left}")
        print(("\r" + line + "\033[K") if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)
        self.shown = True

    def finish(self):
        if self.tty and self.shown:
            print(file=sys.stderr, flush=True)


def format_seconds(s):
    s = int(s)
    return f"{s // 3600}h{s // 60 % 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Problems:
    """Bad records and unreadable files: the first SHOWN_PROBLEMS printed, all counted; with strict (the
    recipes, whose files are known) the first one stops the run."""

    def __init__(self, strict, count=0, first=None):
        self.strict, self.count, self.first = strict, count, first

    def add(self, messages):
        for m in messages:
            if self.strict:
                raise PreproError(m)
            self.count += 1
            self.first = self.first or m
            if self.count <= SHOWN_PROBLEMS:
                print(f"warning: {m}{'' if 'skipped' in m else ': skipped'}", file=sys.stderr)
            if self.count == SHOWN_PROBLEMS:
                print("warning: further bad records are counted, not shown", file=sys.stderr)


# ---------------------------------------------------------------------------------------------------
# the run's state (resume)

def file_stamp(path):
    st = os.stat(path)
    return [os.path.abspath(path), st.st_size, st.st_mtime_ns]


class Run:
    """Everything the encode pass keeps: position in the input, counters, writers, reservoir; saved as the
    state file, restored from it."""

    def __init__(self, args, plan, tokenizer, settings):
        self.args, self.plan, self.tokenizer, self.settings = args, plan, tokenizer, settings
        self.out, self.name = plan.out_dir, plan.name
        self.state_path = os.path.join(self.out, f".{self.name}_prepro.json")
        self.spill_path = os.path.join(self.out, f".{self.name}_valpool.tmp")
        self.entries_path = os.path.join(self.out, f".{self.name}_valpool.npy")
        self.dtype = shard_dtype(tokenizer.vocab_size)
        self.position, self.docs, self.chars, self.empty, self.done = Position(0, 0), 0, 0, 0, False
        self.split_docs = {s: 0 for s in plan.policy.splits}
        self.problems = Problems(plan.strict)
        self.writers = {s: ShardWriter(self.out, self.name, s, self.dtype, args.shard_size, args.zstd)
                        for s in plan.policy.splits}
        self.reservoir = None
        self.resumed_tokens = 0  # tokens written by an earlier, interrupted run
        self.tokens_this_run = 0

    # --- files of this name in the output directory ---

    def owned_files(self):
        """Shards, temporary shards and state files of this name."""
        pattern = re.compile(rf"^\.?{re.escape(self.name)}_[a-z]+_\d{{6}}\.bin(\.zst)?(\.tmp(\.zst)?)?$")
        extra = {os.path.basename(p) for p in (self.state_path, self.state_path + ".tmp", self.spill_path,
                                                self.entries_path, self.entries_path + ".tmp")}
        return [os.path.join(self.out, f) for f in os.listdir(self.out) if pattern.match(f) or f in extra]

    def remove_owned(self):
        for path in self.owned_files():
            os.remove(path)

    # --- state ---

    def load(self):
        """Restores the state of an unfinished run with the same settings; returns a note for the log, or
        None to start afresh (any earlier shards of this name are removed then)."""
        saved = None
        if os.path.isfile(self.state_path):
            try:
                with open(self.state_path) as f:
                    saved = json.load(f)
            except (OSError, ValueError):
                saved = None
        if saved is None or saved.get("version") != STATE_VERSION:
            note = None if saved is None else f"{self.state_path} is not a state of this version: starting afresh"
            self.remove_owned()
            return note
        if saved["settings"] != self.settings:
            changed = next(k for k in self.settings if saved["settings"].get(k) != self.settings[k])
            self.remove_owned()
            return f"the unfinished preparation in {self.out} has other settings ({changed} differ): starting afresh"
        self.position = Position(*saved["position"])
        self.docs, self.chars, self.empty, self.done = saved["docs"], saved["chars"], saved["empty"], saved["done"]
        self.problems = Problems(self.plan.strict, saved["problems"], saved["first_problem"])
        self.split_docs = saved["split_docs"]
        for s, w in saved["writers"].items():
            writer = self.writers[s] = ShardWriter(self.out, self.name, s, self.dtype, self.args.shard_size,
                                                   self.args.zstd, w["shards"], w["count"], w["tokens"])
            for i in range(writer.shards):
                if not os.path.exists(writer.final_path(i)) and not os.path.exists(writer.tmp_path(i)):
                    raise PreproError(f"{writer.final_path(i)}: a complete shard of the unfinished preparation is "
                                      f"missing: remove {self.state_path} to start afresh")
            self._remove_after(writer)
            if not self.done:
                writer.reopen()
            self.resumed_tokens += writer.tokens
        self.resumed_tokens += saved["reservoir_tokens"]
        if self.plan.reservoir and not self.done:
            entries = np.load(self.entries_path) if saved["reservoir_entries"] else None
            if entries is not None and len(entries) != saved["reservoir_entries"]:
                raise PreproError(f"{self.entries_path} does not match {self.state_path}: remove them to start afresh")
            self.reservoir = ValReservoir(self.spill_path, *self.plan.reservoir, self.dtype, entries,
                                          saved["reservoir_tokens"])
        return (f"resuming the unfinished preparation in {self.out} at {self.docs:,} documents: "
                f"{self.resumed_tokens:,} tokens are written already")

    def _remove_after(self, writer):
        """Shards and temporary files that the state does not know yet (written after it was saved)."""
        prefix = re.compile(rf"^\.?{re.escape(self.name)}_{writer.split}_(\d{{6}})\.bin")
        for f in os.listdir(self.out):
            m = prefix.match(f)
            if not m:
                continue
            i, path = int(m.group(1)), os.path.join(self.out, f)
            if (i > writer.shards or (i == writer.shards and not f.startswith("."))
                    or f.endswith(".tmp.zst")):
                os.remove(path)

    def save(self):
        """Writes the state (after syncing what it refers to), then renames the filled shards into place."""
        for w in self.writers.values():
            w.sync()
        entries = 0
        if self.reservoir is not None:
            self.reservoir.sync()
            entries = len(self.reservoir.entries)
            if entries:
                with open(self.entries_path + ".tmp", "wb") as f:
                    np.save(f, self.reservoir.entries_array())
                os.replace(self.entries_path + ".tmp", self.entries_path)
        state = {
            "version": STATE_VERSION, "settings": self.settings, "position": list(self.position),
            "docs": self.docs, "chars": self.chars, "empty": self.empty, "done": self.done,
            "problems": self.problems.count, "first_problem": self.problems.first, "split_docs": self.split_docs,
            "writers": {s: {"shards": w.shards, "count": w.count, "tokens": w.tokens} for s, w in self.writers.items()},
            "reservoir_entries": entries,
            "reservoir_tokens": self.reservoir.spill_tokens if self.reservoir is not None else 0,
        }
        with open(self.state_path + ".tmp", "w") as f:
            json.dump(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(self.state_path + ".tmp", self.state_path)
        fsync_dir(self.out)
        for w in self.writers.values():
            w.finalize()

    # --- the encode pass ---

    def consume(self, item, result):
        """One task's documents into their splits."""
        self.problems.add(item.problems)
        if result is not None:
            self.problems.add(result.bad)
            self.empty += result.empty
            n = len(result.lengths)
            if n:
                split = self.plan.policy.assign(self.docs, self.chars, result)
                if self.reservoir is not None:
                    self._offer(result, split)
                for i, s in enumerate(self.plan.policy.splits):
                    mask = split == i
                    if mask.any():
                        self.writers[s].add(result.tokens[np.repeat(mask, result.lengths)])
                        self.split_docs[s] += int(mask.sum())
                self.docs += n
                self.chars += int(result.chars.sum())
        self.position = item.end

    def _offer(self, result, split):
        """Candidates for the val reservoir leave the train stream (their split becomes -1)."""
        keys = doc_keys(self.plan.policy.seed, self.docs, len(result.lengths))
        ends = np.cumsum(result.lengths)
        for i in np.flatnonzero(keys < self.reservoir.tau):
            if self.reservoir.offer(self.docs + int(i), float(keys[i]),
                                    result.tokens[ends[i] - result.lengths[i]:ends[i]]):
                split[i] = -1

    def finish_reservoir(self):
        """The reservoir's val documents to val, the other candidates to the end of train."""
        val, train = self.reservoir.split()
        for tokens in self.reservoir.tokens(val):
            self.writers["val"].add(tokens)
        for tokens in self.reservoir.tokens(train):
            self.writers["train"].add(tokens)
        self.split_docs["val"] = len(val)
        self.split_docs["train"] += len(train)
        self.reservoir.close()
        self.reservoir = None


# ---------------------------------------------------------------------------------------------------
# what to read and how

Plan = collections.namedtuple("Plan", "name out_dir files skipped text_docs policy reservoir strict")


def count_chars(f):
    """Characters of a text file as its documents see them ("\r\n" as one), checking that it is UTF-8."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    total, offset, held = 0, 0, ""
    with open(f.path, "rb") as fp:
        while True:
            data = fp.read(1 << 22)
            try:
                text = held + decoder.decode(data, final=not data)
            except UnicodeDecodeError as e:
                raise PreproError(f"{f.path}: not UTF-8 (byte 0x{data[e.start]:02x} at byte {offset + e.start + 1})")
            held = text[-1:] if text.endswith("\r") and data else ""
            text = text[:-1] if held else text
            total += len(text) - text.count("\r\n")
            offset += len(data)
            if not data:
                return total


def make_plan(args):
    name = args.name or args.recipe
    strict = args.recipe is not None
    if args.recipe == "wikitext2":
        directory = args.input[0]
        if len(args.input) != 1 or not os.path.isdir(directory):
            raise PreproError(f"--input {' '.join(args.input)}: the wikitext2 recipe needs the one directory with "
                              "train/valid/test.txt")
        files = []
        for split, stem in WIKITEXT_SPLITS:
            found = [c for c in (os.path.join(directory, f"{stem}.txt"), os.path.join(directory, f"wiki.{stem}.tokens"))
                     if os.path.isfile(c)]
            if not found:
                raise PreproError(f"--input {directory}: no {stem}.txt or wiki.{stem}.tokens in this directory")
            files.append(InputFile(found[0], "text", None, os.path.getsize(found[0]), split))
        policy = SplitPolicy("fixed", None, args.seed, files)
        return Plan(name, out_dir(args, name), files, [], "article", policy, None, strict)
    try:
        files, skipped = discover(args.input, args.format)
    except InputError as e:
        raise PreproError(str(e)) from None
    if name is None:
        name = default_name(args.input[0]) if len(args.input) == 1 else "corpus"
    if args.recipe == "tinyshakespeare":
        if len(files) != 1 or files[0].fmt != "text" or files[0].compression:
            raise PreproError(f"--input {' '.join(args.input)}: the tinyshakespeare recipe reads one plain text file")
        if args.val_docs or args.val_tokens:
            raise PreproError("the tinyshakespeare recipe splits by --val-fraction (the end of the text is val)")
        policy = SplitPolicy("tail", args.val_fraction, args.seed, files, count_chars(files[0]))
        return Plan(name, out_dir(args, name), files, skipped, "blank", policy, None, strict)
    if args.val_docs:
        policy, reservoir = SplitPolicy("docs", args.val_docs, args.seed, files), ("docs", args.val_docs)
    elif args.val_tokens:
        policy, reservoir = SplitPolicy("tokens", args.val_tokens, args.seed, files), ("tokens", args.val_tokens)
    else:
        policy, reservoir = SplitPolicy("fraction", args.val_fraction, args.seed, files), None
    if reservoir and args.tokenizer == "word":
        raise PreproError("the word level tokenizer takes its vocabulary from the train split, which --val-docs and "
                          "--val-tokens settle only at the end: use --val-fraction")
    return Plan(name, out_dir(args, name), files, skipped, args.text_docs, policy, reservoir, strict)


def default_name(path):
    base = os.path.basename(path.rstrip("/")) or "corpus"
    for _ in range(2):
        stem, ext = os.path.splitext(base)
        if ext.lower() in (".gz", ".zst", ".zstd", ".txt", ".text", ".md", ".jsonl", ".ndjson", ".parquet", ".tokens"):
            base = stem
    return re.sub(r"[^A-Za-z0-9._-]", "_", base) or "corpus"


def out_dir(args, name):
    return args.out or os.path.join(REPO, "datasets", name)


def documents_note(plan):
    formats = {f.fmt for f in plan.files}
    notes = []
    if "text" in formats:
        notes.append({"blank": "text documents are cut at blank lines", "line": "one text document per line",
                      "file": "one document per text file", "article": "documents are articles"}[plan.text_docs])
    if "jsonl" in formats:
        notes.append("one document per JSONL record")
    if "parquet" in formats:
        notes.append("one document per Parquet row")
    return "; ".join(notes)


def check_splits(run, plan):
    """Raises if a split came out empty, saying what to do."""
    policy, counts = plan.policy, run.split_docs
    where = plan.files[0].path if len(plan.files) == 1 else f"the {len(plan.files)} input files"
    if run.docs == 0:
        raise PreproError(f"{where}: no documents" + (f" ({run.problems.count} bad record(s) skipped, the first: "
                                                      f"{run.problems.first})" if run.problems.count else
                                                      " (the input is empty)"))
    if policy.mode == "fixed":
        for f in plan.files:
            if counts[f.split] == 0:
                raise PreproError(f"{f.path}: no documents for the {f.split} split (the input is empty)")
        return
    if "val" not in policy.splits:
        return
    if run.docs == 1:
        hint = "cut documents otherwise (--text-docs line: one per line), or " if plan.text_docs == "blank" else ""
        raise PreproError(f"{where}: 1 document ({documents_note(plan)}): a train and a val split need at least 2; "
                          f"{hint}write train only with --val-fraction 0")
    if counts["val"] == 0:
        raise PreproError(f"{where}: {policy.describe()} chose none of the {run.docs:,} documents for val: raise it, "
                          "or give --val-docs N for a fixed number, or --val-fraction 0 for train only")
    if counts["train"] == 0:
        raise PreproError(f"{where}: {policy.describe()} put all {run.docs:,} documents in val: lower it so that "
                          "some are left for train")


# ---------------------------------------------------------------------------------------------------

def make_tokenizer(args, plan, workers):
    if args.tokenizer == "bytes":
        return BytesTokenizer()
    if args.tokenizer == "word":
        words = word_vocabulary(plan, workers)
        if not words:
            train = [f.path for f in plan.files if f.split in (None, "train")]
            raise PreproError(f"{train[0] if len(train) == 1 else f'the {len(train)} input files'}: the train split has "
                              "no text, so the word level tokenizer has no vocabulary (the input is empty)")
        return WordTokenizer(words)
    try:
        return BPETokenizer(args.tokenizer, args.tokenizer_path or DEFAULT_TOKENIZER_PATHS[args.tokenizer])
    except TokenizerError as e:
        raise PreproError(str(e)) from None


def word_vocabulary(plan, workers):
    """The train documents' words in order of first appearance (a pass over the input without tokens)."""
    words = {}
    docs = chars = 0
    reader, policy = Reader(plan.files, plan.text_docs, None), plan.policy
    problems = Problems(plan.strict)
    pipeline = Pipeline(workers, plan.files, None, None)
    progress = Progress("vocabulary", reader.sizes_before[-1], 0)
    try:
        for item, result in pipeline.results(reader.items(Position(0, 0))):
            problems.add(item.problems)
            if result is not None:
                problems.add(result.bad)
                split = policy.assign(docs, chars, result)
                for doc_words, s in zip(result.words, split):
                    if policy.splits[s] == "train":
                        for w in doc_words:
                            words.setdefault(w, None)
                docs += len(result.chars)
                chars += int(result.chars.sum())
            progress.update(docs, 0, 0, item.done_bytes)
    finally:
        pipeline.close()
    progress.finish()
    return list(words)


def settings_of(args, plan):
    tok_files = []
    if args.tokenizer in DEFAULT_TOKENIZER_PATHS:
        path = args.tokenizer_path or DEFAULT_TOKENIZER_PATHS[args.tokenizer]
        names = ["encoder.json", "vocab.bpe"] if args.tokenizer == "gpt2" else ["tokenizer.json"]
        tok_files = [file_stamp(os.path.join(path, n)) for n in names] if os.path.isdir(path) else [file_stamp(path)]
    inputs = json.dumps([file_stamp(f.path) + [f.fmt, f.compression, f.split] for f in plan.files])
    return {  # the inputs as a digest: the state is rewritten at every shard, whatever the number of files
        "recipe": args.recipe, "inputs": f"{len(plan.files)} files, sha256 {hashlib.sha256(inputs.encode()).hexdigest()}",
        "text_docs": plan.text_docs, "text_field": args.text_field, "tokenizer": args.tokenizer,
        "tokenizer_files": tok_files, "split": [plan.policy.mode, plan.policy.value], "seed": args.seed,
        "shard_size": args.shard_size, "zstd": args.zstd,
    }


def prepare(args):
    start = time.time()
    plan = make_plan(args)
    workers = args.workers or len(os.sched_getaffinity(0))
    try:
        os.makedirs(plan.out_dir, exist_ok=True)
    except OSError as e:
        raise PreproError(f"--out {plan.out_dir}: cannot create the directory ({describe(e)})") from None
    if not os.access(plan.out_dir, os.W_OK):
        raise PreproError(f"--out {plan.out_dir}: the directory is not writable")
    if plan.skipped:
        print(f"note: {len(plan.skipped)} file(s) whose names give no format are left out, e.g. {plan.skipped[0]}",
              file=sys.stderr)
    tokenizer = make_tokenizer(args, plan, workers)
    settings = settings_of(args, plan)
    write_tokenizer_bin(os.path.join(plan.out_dir, "tokenizer.bin"), tokenizer)

    run = Run(args, plan, tokenizer, settings)
    note = run.load()
    if note:
        print(note, file=sys.stderr)
    if plan.reservoir and run.reservoir is None and not run.done:
        run.reservoir = ValReservoir(run.spill_path, *plan.reservoir, run.dtype)
    if not run.done:
        encode(run, plan, tokenizer, workers)
        if run.reservoir is not None:
            run.finish_reservoir()
        for w in run.writers.values():
            w.close()
        try:
            check_splits(run, plan)
        except PreproError:
            run.remove_owned()  # the settings cannot make this dataset: leave no shards of it
            raise
        run.done = True
    run.save()
    for w in run.writers.values():
        w.wait()
    for path in (run.state_path, run.spill_path, run.entries_path):
        if os.path.exists(path):
            os.remove(path)
    report(run, plan, tokenizer, workers, time.time() - start)


def instruct_paths(args):
    """The JSONL files of --format instruct: files and globs, in order (globs sorted), plain JSONL only."""
    paths = []
    for arg in args.input:
        found = sorted(glob.glob(arg)) if glob.has_magic(arg) else [arg]
        if not found:
            raise PreproError(f"--input {arg}: no file matches")
        for path in found:
            if not os.path.isfile(path):
                raise PreproError(f"{path}: not a file (--format instruct reads JSONL files)")
            if path.endswith((".gz", ".zst", ".zstd", ".parquet")):
                raise PreproError(f"{path}: --format instruct reads plain JSONL files: decompress it first")
            paths.append(path)
    return paths


def prepare_instruct_data(args):
    start = time.time()
    if args.recipe or args.val_docs or args.val_tokens:
        raise PreproError("--format instruct splits by --val-fraction only, without a recipe")
    if args.tokenizer == "word":
        raise PreproError("--format instruct needs a tokenizer with an end-of-text token: gpt2 or neox")
    paths = instruct_paths(args)
    name = args.name or (default_name(paths[0]) if len(paths) == 1 else "instruct")
    directory = out_dir(args, name)
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise PreproError(f"--out {directory}: cannot create the directory ({describe(e)})") from None
    tokenizer = make_tokenizer(args, None, 1)
    write_tokenizer_bin(os.path.join(directory, "tokenizer.bin"), tokenizer)
    try:
        lines = prepare_instruct(args, paths, directory, name, tokenizer, doc_keys)
    except InstructError as e:
        raise PreproError(str(e)) from None
    for line in lines:
        print(line, file=sys.stderr)
    print(f"total: vocab {tokenizer.vocab_size:,} ({tokenizer.kind}, eot {tokenizer.eot}), {time.time() - start:.1f} s "
          f"-> {directory}", file=sys.stderr)


def encode(run, plan, tokenizer, workers):
    reader = Reader(plan.files, plan.text_docs, run.args.text_field)
    progress = Progress("tokens", reader.sizes_before[-1], reader.sizes_before[min(run.position.file, len(plan.files))])
    before = sum(w.tokens for w in run.writers.values())
    pipeline = Pipeline(workers, plan.files, run.args.text_field, tokenizer.spec())
    last_save = time.time()
    try:
        for item, result in pipeline.results(reader.items(run.position)):
            shards = sum(w.shards for w in run.writers.values())
            run.consume(item, result)
            if result is not None:
                run.tokens_this_run += int(result.lengths.sum())
            if sum(w.shards for w in run.writers.values()) > shards or time.time() - last_save > CHECKPOINT_SECONDS:
                run.save()
                last_save = time.time()
            tokens = sum(w.tokens for w in run.writers.values()) + (run.reservoir.spill_tokens if run.reservoir else 0)
            progress.update(run.docs, tokens, tokens - before, item.done_bytes)
    finally:
        pipeline.close()
    progress.finish()
    run.save()


def report(run, plan, tokenizer, workers, seconds):
    suffix = ".bin.zst" if run.args.zstd else ".bin"
    total_tokens = total_shards = 0
    for s, w in run.writers.items():
        print(f"{s}: {run.split_docs[s]:,} documents, {w.tokens:,} tokens, {w.shards} shard(s) "
              f"{os.path.join(plan.out_dir, f'{plan.name}_{s}_*{suffix}')}", file=sys.stderr)
        total_tokens += w.tokens
        total_shards += w.shards
    if run.problems.count or run.empty:
        print(f"skipped: {run.problems.count:,} bad record(s) or file(s), {run.empty:,} empty document(s)"
              + (f"; the first: {run.problems.first}" if run.problems.first else ""), file=sys.stderr)
    if run.resumed_tokens:
        print(f"resumed: {run.resumed_tokens:,} tokens were written before, {run.tokens_this_run:,} tokenized in "
              "this run", file=sys.stderr)
    print(f"total: {run.docs:,} documents, {total_tokens:,} tokens, {total_shards} shards, vocab "
          f"{tokenizer.vocab_size:,} ({tokenizer.kind}, eot {tokenizer.eot}), split: {plan.policy.describe()}, "
          f"{seconds:.1f} s, {run.tokens_this_run / max(seconds, 1e-9):,.0f} tokens/s on {workers} worker(s) -> "
          f"{plan.out_dir}",
          file=sys.stderr)


def parse_args(argv):
    p = argparse.ArgumentParser(description="Tokenize text corpora into token shards and tokenizer.bin for ssd.c.")
    p.add_argument("--recipe", choices=["tinyshakespeare", "wikitext2"],
                   help="dataset recipe (default input: the copy under ../shared/data)")
    p.add_argument("--tokenizer", choices=["gpt2", "neox", "word", "bytes"], default="gpt2")
    p.add_argument("--tokenizer-path", help="gpt2: dir with encoder.json and vocab.bpe; neox: tokenizer.json or its dir")
    p.add_argument("--input", nargs="+", help="files, directories and globs (text, JSONL, Parquet; .gz, .zst); "
                   "wikitext2: the directory with train/valid/test.txt")
    p.add_argument("--format", choices=["auto", "text", "jsonl", "parquet", "instruct"], default="auto",
                   help="input format (default: from the file names); instruct: JSONL prompt/response or chat "
                        "examples into shards with loss masks (scripts/prepro_instruct.py)")
    p.add_argument("--text-docs", choices=["blank", "line", "file"], default="blank",
                   help="text documents: at blank lines, one per line, or one per file")
    p.add_argument("--text-field", default="text", help="the JSONL field or Parquet column holding the text")
    p.add_argument("--out", help="output directory (default datasets/<name>)")
    p.add_argument("--name", help="shard name prefix (default: the recipe, or the input's name)")
    val = p.add_mutually_exclusive_group()
    val.add_argument("--val-fraction", type=float,
                     help="each document goes to val with this probability (default 0.1; 0: train only); "
                          "tinyshakespeare: this fraction at the end of the text")
    val.add_argument("--val-docs", type=int, help="val is this many documents, chosen by the seed")
    val.add_argument("--val-tokens", type=int, help="val is the fewest documents, chosen by the seed, with at least "
                                                    "this many tokens")
    p.add_argument("--seed", type=int, default=1337, help="seed of the val choice")
    p.add_argument("--shard-size", type=int, default=100_000_000, help="tokens per shard")
    p.add_argument("--zstd", action="store_true", help="write .bin.zst shards (needs the zstd tool)")
    p.add_argument("--workers", type=int, help="tokenizer processes (default: every core)")
    args = p.parse_args(argv)
    if args.input is None:
        if args.recipe is None:
            p.error("give --recipe or --input")
        args.input = [DEFAULT_INPUTS[args.recipe]]
    if args.shard_size < 1:
        p.error("--shard-size must be positive")
    if args.recipe == "wikitext2" and (args.val_docs or args.val_tokens or args.val_fraction is not None):
        p.error("the wikitext2 recipe has its own splits: --val-fraction, --val-docs and --val-tokens do not apply")
    if args.val_fraction is None:
        args.val_fraction = 0.1 if not (args.val_docs or args.val_tokens) else 0
    if not 0 <= args.val_fraction < 1:
        p.error(f"--val-fraction {args.val_fraction} must be in [0, 1)")
    for flag in ("val_docs", "val_tokens"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be positive")
    if args.seed < 0:
        p.error("--seed must not be negative")
    if args.workers is not None and args.workers < 1:
        p.error("--workers must be positive")
    if args.zstd and shutil.which("zstd") is None:
        p.error("--zstd needs the zstd command-line tool on PATH")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        if args.format == "instruct":
            prepare_instruct_data(args)
        else:
            prepare(args)
    except PreproError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except OSError as e:
        where = e.filename or ""
        print(f"error: {where}{': ' if where else ''}{describe(e)}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("\ninterrupted: complete shards are kept; run the same command again to continue", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
