#!/usr/bin/env python3
"""
Tokenizes text into token shards for the ssd.c loaders (data/dataloader.h) and writes tokenizer.bin
(data/tokenizer.h) for decoding samples.

Shards: a header of 256 int32 [20240520, version, ntok], then ntok tokens: uint16 (version 1), or
uint32 (version 2, chosen when the vocabulary has more than 65535 ids). --zstd compresses each shard
with the zstd command-line tool into <shard>.bin.zst.

Documents: BPE tokenizers put the end-of-text token before each document (GPT-2 50256, NeoX 0); the
word-level tokenizer ends every line with <eos> (its end-of-text token); bytes have no separator.
A document is a blank-line separated section of a plain text file (a speech of Tiny Shakespeare) or an
article of WikiText-2 (it starts at a top-level " = Title = " line).

Examples:
  python3 scripts/prepro.py --recipe tinyshakespeare --tokenizer gpt2 --input ../shared/data/tinyshakespeare/input.txt
  python3 scripts/prepro.py --recipe wikitext2 --tokenizer word --input ../shared/data/wikitext-2 --zstd
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np

SHARD_MAGIC = 20240520
SHARD_HEADER_INTS = 256
TOKENIZER_MAGIC = 20251123
TOKENIZER_KINDS = {"bytes": 0, "gpt2": 1, "neox": 2, "word": 3}
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
ARTICLE_TITLE = re.compile(r"^ = [^=].* = $")


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


# ---------------------------------------------------------------------------------------------------
# tokenizers: each gives encode(docs) -> list of int arrays, vocab_size, eot (or None), token_bytes()

def byte_level_alphabet():
    """GPT-2's byte-level BPE writes byte b as a printable character; returns {character: byte}."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    chars = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + shifted)
            shifted += 1
    return {c: b for b, c in chars.items()}


class BytesTokenizer:
    kind = "bytes"
    vocab_size = 256
    eot = None

    def encode(self, docs):
        return [np.frombuffer(d.encode("utf-8"), dtype=np.uint8).astype(np.uint32) for d in docs]

    def token_bytes(self):
        return [bytes([b]) for b in range(256)]


class BPETokenizer:
    """GPT-2 (encoder.json + vocab.bpe) or GPT-NeoX (tokenizer.json) byte-level BPE via `tokenizers`."""

    def __init__(self, kind, path):
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers
        self.kind = kind
        if kind == "gpt2":
            encoder, merges = os.path.join(path, "encoder.json"), os.path.join(path, "vocab.bpe")
            for f in (encoder, merges):
                if not os.path.isfile(f):
                    fail(f"GPT-2 tokenizer file {f} not found (--tokenizer-path)")
            self.tok = Tokenizer(models.BPE.from_file(encoder, merges))
            self.tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            self.tok.decoder = decoders.ByteLevel()
            eot_text = "<|endoftext|>"
        else:
            f = os.path.join(path, "tokenizer.json") if os.path.isdir(path) else path
            if not os.path.isfile(f):
                fail(f"NeoX tokenizer file {f} not found (--tokenizer-path)")
            self.tok = Tokenizer.from_file(f)
            eot_text = "<|endoftext|>"
        self.vocab = self.tok.get_vocab(with_added_tokens=True)
        self.vocab_size = max(self.vocab.values()) + 1
        if eot_text not in self.vocab:
            fail(f"tokenizer at {path} has no {eot_text} token")
        self.eot = self.vocab[eot_text]

    def encode(self, docs):
        encoded = self.tok.encode_batch(docs, add_special_tokens=False)
        return [np.array([self.eot] + e.ids, dtype=np.uint32) for e in encoded]

    def encode_text(self, text):
        return self.tok.encode(text, add_special_tokens=False).ids

    def token_bytes(self):
        alphabet = byte_level_alphabet()
        added = {i: t.content for i, t in self.tok.get_added_tokens_decoder().items()}
        table = [b""] * self.vocab_size
        for token, i in self.vocab.items():
            if i in added:
                table[i] = added[i].encode("utf-8")
            else:
                table[i] = bytes(alphabet[c] for c in token)
        return table


class WordTokenizer:
    """Whitespace-separated words, vocabulary in order of first appearance in the train split, <eos> at
    every line end, <unk> for words outside the vocabulary."""
    kind = "word"

    def __init__(self, train_docs):
        self.ids = {}
        for doc in train_docs:
            for line in self._lines(doc):
                for w in line.split():
                    self.ids.setdefault(w, len(self.ids))
                self.ids.setdefault("<eos>", len(self.ids))
        self.ids.setdefault("<unk>", len(self.ids))
        self.vocab_size = len(self.ids)
        self.eot = self.ids["<eos>"]
        self.unk = self.ids["<unk>"]

    @staticmethod
    def _lines(doc):
        lines = doc.split("\n")
        return lines[:-1] if lines[-1] == "" else lines

    def encode(self, docs):
        out = []
        for doc in docs:
            ids = []
            for line in self._lines(doc):
                ids.extend(self.ids.get(w, self.unk) for w in line.split())
                ids.append(self.eot)
            out.append(np.array(ids, dtype=np.uint32))
        return out

    def token_bytes(self):
        table = [b""] * self.vocab_size
        for w, i in self.ids.items():
            table[i] = b"\n" if w == "<eos>" else (w + " ").encode("utf-8")
        return table


def write_tokenizer_bin(path, tokenizer):
    header = np.zeros(SHARD_HEADER_INTS, dtype=np.int32)
    header[:5] = [TOKENIZER_MAGIC, 1, tokenizer.vocab_size, -1 if tokenizer.eot is None else tokenizer.eot,
                  TOKENIZER_KINDS[tokenizer.kind]]
    with open(path, "wb") as f:
        f.write(header.tobytes())
        for b in tokenizer.token_bytes():
            f.write(np.uint32(len(b)).tobytes())
            f.write(b)


# ---------------------------------------------------------------------------------------------------
# shards

def shard_version(vocab_size):
    return 2 if vocab_size > 65535 else 1


def write_shard(path, tokens, vocab_size):
    """Writes one raw shard; tokens must all be < vocab_size."""
    tokens = np.asarray(tokens)
    if tokens.size == 0:
        raise ValueError(f"{path}: a shard needs at least one token")
    if tokens.max() >= vocab_size:
        raise ValueError(f"{path}: token {tokens.max()} >= vocab_size {vocab_size}")
    version = shard_version(vocab_size)
    header = np.zeros(SHARD_HEADER_INTS, dtype=np.int32)
    header[:3] = [SHARD_MAGIC, version, tokens.size]
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(tokens.astype("<u2" if version == 1 else "<u4").tobytes())


def compress_zstd(path):
    """path -> path.zst with the zstd tool (content checksum on, the default); removes path."""
    result = subprocess.run(["zstd", "-q", "-f", "--rm", "-o", path + ".zst", path], capture_output=True, text=True)
    if result.returncode != 0:
        fail(f"zstd failed on {path}: {result.stderr.strip()}")


class ShardWriter:
    """Cuts one split's token stream into shards of shard_size tokens."""

    def __init__(self, out_dir, name, split, vocab_size, shard_size, zstd):
        self.prefix = os.path.join(out_dir, f"{name}_{split}_")
        self.vocab_size, self.shard_size, self.zstd = vocab_size, shard_size, zstd
        self.pending, self.pending_count = [], 0
        self.num_shards, self.num_tokens = 0, 0

    def add(self, ids):
        self.pending.append(ids)
        self.pending_count += ids.size
        while self.pending_count >= self.shard_size:
            stream = np.concatenate(self.pending)
            self._write(stream[:self.shard_size])
            rest = stream[self.shard_size:]
            self.pending, self.pending_count = [rest], rest.size

    def close(self):
        if self.pending_count > 0:
            self._write(np.concatenate(self.pending))
        self.pending, self.pending_count = [], 0

    def _write(self, tokens):
        path = f"{self.prefix}{self.num_shards:06d}.bin"
        write_shard(path, tokens, self.vocab_size)
        if self.zstd:
            compress_zstd(path)
        self.num_shards += 1
        self.num_tokens += tokens.size


def remove_old_shards(out_dir, name, split):
    prefix = f"{name}_{split}_"
    for f in os.listdir(out_dir):
        if f.startswith(prefix) and (f.endswith(".bin") or f.endswith(".bin.zst")):
            os.remove(os.path.join(out_dir, f))


# ---------------------------------------------------------------------------------------------------
# documents

def read_text(path):
    if not os.path.isfile(path):
        fail(f"input file {path} not found")
    with open(path, "r", encoding="utf-8") as f:
        return f.read()


def blank_line_documents(text):
    """Sections separated by a blank line, each keeping its separator, so they join back to text."""
    sections = text.split("\n\n")
    return [s + "\n\n" for s in sections[:-1]] + ([sections[-1]] if sections[-1] else [])


def wikitext_articles(text):
    docs, current = [], []
    for line in text.splitlines(keepends=True):
        if ARTICLE_TITLE.match(line.rstrip("\n")) and any(l.strip() for l in current):
            docs.append("".join(current))
            current = []
        current.append(line)
    if current:
        docs.append("".join(current))
    return docs


def split_tail(docs, val_fraction):
    """(train, val): val is the documents starting after the first (1 - val_fraction) of the characters."""
    if not 0 < val_fraction < 1:
        fail(f"--val-fraction {val_fraction} must be in (0, 1)")
    total = sum(len(d) for d in docs)
    cut, start = len(docs), 0
    for i, d in enumerate(docs):
        if start >= (1 - val_fraction) * total:
            cut = i
            break
        start += len(d)
    if cut == 0 or cut == len(docs):
        fail(f"cannot split {len(docs)} documents into train and val with --val-fraction {val_fraction}")
    return docs[:cut], docs[cut:]


def load_splits(recipe, input_path, val_fraction):
    """[(split, documents)] with train first."""
    if recipe == "wikitext2":
        if not os.path.isdir(input_path):
            fail(f"--input {input_path}: the wikitext2 recipe needs the directory with train/valid/test.txt")
        splits = []
        for split, stem in WIKITEXT_SPLITS:
            candidates = [os.path.join(input_path, f"{stem}.txt"), os.path.join(input_path, f"wiki.{stem}.tokens")]
            found = [c for c in candidates if os.path.isfile(c)]
            if not found:
                fail(f"--input {input_path}: no {stem}.txt or wiki.{stem}.tokens in this directory")
            splits.append((split, wikitext_articles(read_text(found[0]))))
        return splits
    train, val = split_tail(blank_line_documents(read_text(input_path)), val_fraction)
    return [("train", train), ("val", val)]


# ---------------------------------------------------------------------------------------------------

class Progress:
    """A one-line progress bar on stderr."""

    def __init__(self, label, total):
        self.label, self.total, self.done, self.start = label, max(total, 1), 0, time.time()

    def update(self, n):
        self.done += n
        frac = min(self.done / self.total, 1.0)
        bar = "#" * int(30 * frac)
        rate = self.done / max(time.time() - self.start, 1e-9) / 1e6
        print(f"\r{self.label:>8} [{bar:<30}] {100 * frac:5.1f}% {rate:6.1f} MB/s", end="", file=sys.stderr, flush=True)

    def finish(self):
        print(file=sys.stderr, flush=True)


def make_tokenizer(kind, path, train_docs):
    if kind == "bytes":
        return BytesTokenizer()
    if kind == "word":
        return WordTokenizer(train_docs)
    return BPETokenizer(kind, path or DEFAULT_TOKENIZER_PATHS[kind])


def parse_args(argv):
    p = argparse.ArgumentParser(description="Tokenize text into token shards and tokenizer.bin for ssd.c.")
    p.add_argument("--recipe", choices=["tinyshakespeare", "wikitext2"],
                   help="dataset recipe (default input: the copy under ../shared/data)")
    p.add_argument("--tokenizer", choices=list(TOKENIZER_KINDS), default="gpt2")
    p.add_argument("--tokenizer-path", help="gpt2: dir with encoder.json and vocab.bpe; neox: tokenizer.json or its dir")
    p.add_argument("--input", help="a text file, or for wikitext2 the directory with train/valid/test.txt")
    p.add_argument("--out", help="output directory (default datasets/<recipe or input name>)")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="fraction of the text (its end) for the val split; wikitext2 has its own splits")
    p.add_argument("--shard-size", type=int, default=100_000_000, help="tokens per shard")
    p.add_argument("--zstd", action="store_true", help="write .bin.zst shards (needs the zstd tool)")
    args = p.parse_args(argv)
    if args.input is None:
        if args.recipe is None:
            p.error("give --recipe or --input")
        args.input = DEFAULT_INPUTS[args.recipe]
    if args.shard_size < 1:
        p.error("--shard-size must be positive")
    return args


def main(argv=None):
    args = parse_args(argv)
    name = args.recipe or os.path.splitext(os.path.basename(args.input.rstrip("/")))[0]
    out_dir = args.out or os.path.join(REPO, "datasets", name)
    if args.zstd and shutil.which("zstd") is None:
        fail("--zstd needs the zstd command-line tool on PATH")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")  # zstd is run as a subprocess after encoding

    start = time.time()
    splits = load_splits(args.recipe, args.input, args.val_fraction)
    tokenizer = make_tokenizer(args.tokenizer, args.tokenizer_path, splits[0][1])
    os.makedirs(out_dir, exist_ok=True)
    write_tokenizer_bin(os.path.join(out_dir, "tokenizer.bin"), tokenizer)

    total_docs = total_tokens = total_shards = 0
    suffix = ".bin.zst" if args.zstd else ".bin"
    for split, docs in splits:
        remove_old_shards(out_dir, name, split)
        writer = ShardWriter(out_dir, name, split, tokenizer.vocab_size, args.shard_size, args.zstd)
        progress = Progress(split, sum(len(d) for d in docs))
        batch = 512
        for i in range(0, len(docs), batch):
            chunk = docs[i:i + batch]
            for ids in tokenizer.encode(chunk):
                writer.add(ids)
            progress.update(sum(len(d) for d in chunk))
        writer.close()
        progress.finish()
        print(f"{split}: {len(docs):,} documents, {writer.num_tokens:,} tokens, {writer.num_shards} shard(s) "
              f"{os.path.join(out_dir, f'{name}_{split}_*{suffix}')}", file=sys.stderr)
        total_docs += len(docs)
        total_tokens += writer.num_tokens
        total_shards += writer.num_shards
    seconds = time.time() - start
    print(f"total: {total_docs:,} documents, {total_tokens:,} tokens, {total_shards} shards, "
          f"vocab {tokenizer.vocab_size:,} ({args.tokenizer}, eot {tokenizer.eot}), {seconds:.1f} s, "
          f"{total_tokens / max(seconds, 1e-9):,.0f} tokens/s -> {out_dir}", file=sys.stderr)


if __name__ == "__main__":
    main()
