#!/usr/bin/env python3
"""
End-to-end tests of scripts/prepro.py with the C loader and tokenizer reader (through the driver
build/tests/test_data_loader, built by `make test`), on the corpora in ../shared:
  - GPT-2 and NeoX encodings of sample texts match published ids; all of Tiny Shakespeare is 338,025
    GPT-2 tokens; tokenizer.bin bytes agree with the `tokenizers` decoder for every id;
  - text -> shards -> loader -> tokenizer.bin decode gives back the text (bytes, GPT-2, NeoX, word level);
  - raw and zstd shards give identical batches (shuffled, 2 ranks);
  - WikiText-2 word level: 33,278 types, 2,088,628 / 217,646 / 245,569 tokens (words + line ends);
  - v2 shards for vocabularies above 65535; bad inputs are refused with the file named.
"""
import importlib.util
import os
import subprocess
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared")
PREPRO = os.path.join(REPO, "scripts", "prepro.py")
DRIVER = os.path.join(REPO, "build", "tests", "test_data_loader")
SHAKESPEARE = os.path.join(SHARED, "data", "tinyshakespeare", "input.txt")
WIKITEXT = os.path.join(SHARED, "data", "wikitext-2")

from report import exit_status, report  # noqa: E402


def load_prepro():
    spec = importlib.util.spec_from_file_location("prepro", PREPRO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_prepro(*args):
    result = subprocess.run([sys.executable, PREPRO, *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"prepro {' '.join(args)} failed: {result.stderr[-2000:]}")
    return result.stderr


def driver(*args, check=True):
    result = subprocess.run([DRIVER, *map(str, args)], capture_output=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"{DRIVER} {args} failed: {result.stderr.decode(errors='replace')[-2000:]}")
    return result


def read_shard(path):
    """Independent reader of a raw shard: (version, tokens)."""
    data = open(path, "rb").read()
    header = np.frombuffer(data[:1024], dtype="<i4")
    dtype = "<u2" if header[1] == 1 else "<u4"
    return int(header[1]), np.frombuffer(data[1024:], dtype=dtype)


def test_known_ids(prepro):
    gpt2 = prepro.BPETokenizer("gpt2", os.path.join(SHARED, "tokenizers", "gpt2"))
    ids = gpt2.encode_text("Hello world")
    report(ids == [15496, 995] and gpt2.eot == 50256 and gpt2.vocab_size == 50257, "gpt2_known_ids",
           f"'Hello world' -> {ids}, eot {gpt2.eot}, vocab {gpt2.vocab_size}")
    neox = prepro.BPETokenizer("neox", os.path.join(SHARED, "tokenizers", "gpt-neox-20b"))
    a, b = neox.encode_text("Hello world"), neox.encode_text("The quick brown fox.")
    report(a == [12092, 1533] and b == [510, 3158, 8516, 30013, 15] and neox.eot == 0 and neox.vocab_size == 50277,
           "neox_known_ids", f"'Hello world' -> {a}, 'The quick brown fox.' -> {b}, eot {neox.eot}, vocab {neox.vocab_size}")
    text = open(SHAKESPEARE, encoding="utf-8").read()
    n = len(gpt2.encode_text(text))
    report(n == 338025, "gpt2_tinyshakespeare_count", f"{n:,} GPT-2 tokens (expected 338,025)")
    for tok in (gpt2, neox):
        table = tok.token_bytes()
        checked = mismatched = 0
        for i, b in enumerate(table):
            try:
                text_i = b.decode("utf-8")
            except UnicodeDecodeError:
                continue  # a partial UTF-8 sequence: the library's decoder would print a replacement character
            checked += 1
            mismatched += tok.tok.decode([i], skip_special_tokens=False) != text_i
        report(mismatched == 0 and checked > 40000, f"{tok.kind}_token_bytes",
               f"tokenizer.bin bytes equal the tokenizers decoder for {checked:,} ids: {mismatched} differ")


def decoded_pass(out, split_glob, T, vocab):
    """The bytes of one unshuffled pass (B=1) of the C loader, decoded with the C tokenizer."""
    return driver("decode", os.path.join(out, split_glob), os.path.join(out, "tokenizer.bin"), T, vocab).stdout


def check_roundtrip(name, decoded, expected, max_missing, note=""):
    """decoded must be a prefix of expected, missing at most max_missing bytes at the end."""
    prefix = expected.startswith(decoded)
    ok = prefix and len(expected) - len(decoded) <= max_missing
    report(ok, name, f"decoded {len(decoded):,} of {len(expected):,} bytes, an exact prefix: {prefix}{note}")


def shard_names(out, split, suffix=".bin"):
    return sorted(f for f in os.listdir(out) if f.endswith(suffix) and f"_{split}_" in f)


def test_bytes_roundtrip(tmp):
    out = os.path.join(tmp, "bytes")
    run_prepro("--recipe", "tinyshakespeare", "--tokenizer", "bytes", "--input", SHAKESPEARE, "--out", out)
    text = open(SHAKESPEARE, "rb").read()
    _, train = read_shard(os.path.join(out, "tinyshakespeare_train_000000.bin"))
    _, val = read_shard(os.path.join(out, "tinyshakespeare_val_000000.bin"))
    report(train.size + val.size == len(text) and bytes(np.concatenate([train, val]).astype(np.uint8)) == text,
           "prepro_bytes_shards", f"train {train.size:,} + val {val.size:,} tokens = the {len(text):,} bytes of the file, "
           f"val starts at {train.size / len(text):.3f} of the text")
    T = 64
    check_roundtrip("roundtrip_bytes_train", decoded_pass(out, "*_train_*.bin", T, 256), text[:train.size], T)
    check_roundtrip("roundtrip_bytes_val", decoded_pass(out, "*_val_*.bin", T, 256), text[train.size:], T)


def check_bpe_roundtrip(tokenizer, out, T):
    """Tokens of all shards decode (tokenizer.bin table) to the whole text with <|endoftext|> between documents,
    and every shard's pass through the C loader and tokenizer is a prefix of its own decoding."""
    name = tokenizer.kind
    table = tokenizer.token_bytes()
    eot = table[tokenizer.eot]
    longest = max(len(b) for b in table)
    whole, documents, c_exact, missing, num_shards = b"", 0, True, 0, 0
    for split in ("train", "val"):
        for f in shard_names(out, split):
            version, tokens = read_shard(os.path.join(out, f))
            shard_text = b"".join(table[t] for t in tokens)
            whole += shard_text
            documents += int((tokens == tokenizer.eot).sum())
            c_text = decoded_pass(out, f, T, tokenizer.vocab_size)
            c_exact &= version == 1 and shard_text.startswith(c_text) and len(shard_text) - len(c_text) <= (T + 1) * longest
            missing += len(shard_text) - len(c_text)
            num_shards += 1
    text = open(SHAKESPEARE, "rb").read()
    report(whole.replace(eot, b"") == text and whole.startswith(eot), f"prepro_{name}_lossless",
           f"{num_shards} shards, {documents:,} documents: decoded and joined without {eot.decode()} they are the file")
    report(c_exact, f"roundtrip_{name}", f"each shard through the C loader (T={T}) and C tokenizer gives its text, "
           f"less {missing} bytes in all at shard ends that fill no whole batch")


def test_gpt2_raw_zstd(prepro, tmp):
    raw, zst = os.path.join(tmp, "gpt2"), os.path.join(tmp, "gpt2zst")
    log = run_prepro("--recipe", "tinyshakespeare", "--tokenizer", "gpt2", "--input", SHAKESPEARE, "--out", raw,
                     "--shard-size", "100000")
    run_prepro("--recipe", "tinyshakespeare", "--tokenizer", "gpt2", "--input", SHAKESPEARE, "--out", zst,
               "--shard-size", "100000", "--zstd")
    raw_shards, zst_shards = shard_names(raw, "train"), shard_names(zst, "train", ".bin.zst")
    report(len(raw_shards) == 4 and [f + ".zst" for f in raw_shards] == zst_shards and "documents" in log,
           "prepro_gpt2_shards", f"train shards {raw_shards}, zstd {zst_shards}; summary: {log.strip().splitlines()[-1]}")
    same = True
    for shuffle in (0, 1):
        for rank in (0, 1):
            a = driver("dump", os.path.join(raw, "*_train_*.bin"), 4, 64, rank, 2, shuffle, 7, 50257, 2500).stdout
            b = driver("dump", os.path.join(zst, "*_train_*.bin.zst"), 4, 64, rank, 2, shuffle, 7, 50257, 2500).stdout
            same &= len(a) == 2500 * 2 * 4 * 64 * 4 and a == b
    report(same, "raw_vs_zstd_gpt2", "2,500 batches (B=4, T=64, ~2 epochs) identical from raw and zstd shards, "
           "shuffled and not, ranks 0 and 1 of 2")
    check_bpe_roundtrip(prepro.BPETokenizer("gpt2", os.path.join(SHARED, "tokenizers", "gpt2")), raw, 32)


def test_neox_roundtrip(prepro, tmp):
    out = os.path.join(tmp, "neox")
    run_prepro("--recipe", "tinyshakespeare", "--tokenizer", "neox", "--input", SHAKESPEARE, "--out", out)
    check_bpe_roundtrip(prepro.BPETokenizer("neox", os.path.join(SHARED, "tokenizers", "gpt-neox-20b")), out, 32)


def test_wikitext_word(prepro, tmp):
    out = os.path.join(tmp, "wt")
    run_prepro("--recipe", "wikitext2", "--tokenizer", "word", "--input", WIKITEXT, "--out", out)
    header = np.fromfile(os.path.join(out, "tokenizer.bin"), dtype="<i4", count=256)
    counts = {s: read_shard(os.path.join(out, f"wikitext2_{s}_000000.bin"))[1].size for s in ("train", "val", "test")}
    expected = {"train": 2088628, "val": 217646, "test": 245569}
    report(header[2] == 33278 and counts == expected, "wikitext2_word_vocab",
           f"vocab {header[2]:,} (expected 33,278), tokens {counts}")
    lines = open(os.path.join(WIKITEXT, "valid.txt"), encoding="utf-8").read().split("\n")[:-1]
    expected_text = "".join("".join(w + " " for w in line.split()) + "\n" for line in lines).encode("utf-8")
    decoded = decoded_pass(out, "*_val_*.bin", 128, 33278)
    check_roundtrip("roundtrip_word_val", decoded, expected_text, 129 * 40, f"; <eos> (id {header[3]}) decodes to a newline")


def test_v2_and_refusals(prepro, tmp):
    path = os.path.join(tmp, "big_train_000000.bin")
    rng = np.random.default_rng(3)
    tokens = rng.integers(0, 70000, size=5000)
    prepro.write_shard(path, tokens, 70000)
    version, back = read_shard(path)
    dump = np.frombuffer(driver("dump", path, 1, 100, 0, 1, 0, 0, 70000, 49).stdout, dtype="<i4")
    inputs = dump.reshape(49, 2, 100)[:, 0, :].ravel()
    report(version == 2 and np.array_equal(back, tokens) and np.array_equal(inputs, tokens[:4900]), "prepro_v2_shards",
           f"vocab 70,000 -> version {version} (uint32) shard, read back by the C loader")
    refused = driver("dump", path, 1, 100, 0, 1, 0, 0, 65536, 1, check=False)
    msg = refused.stderr.decode()
    report(refused.returncode != 0 and path in msg and "out of range" in msg, "loader_refuses_vocab",
           f"vocab_size 65536 on this shard: exit {refused.returncode}, {msg.strip()}")
    result = subprocess.run([sys.executable, PREPRO, "--input", os.path.join(tmp, "nope.txt"), "--out", tmp],
                            capture_output=True, text=True)
    report(result.returncode != 0 and "nope.txt" in result.stderr, "prepro_refuses_missing_input",
           f"exit {result.returncode}: {result.stderr.strip()}")
    result = subprocess.run([sys.executable, PREPRO, "--recipe", "wikitext2", "--input", SHAKESPEARE, "--out", tmp],
                            capture_output=True, text=True)
    report(result.returncode != 0 and "input.txt" in result.stderr, "prepro_refuses_wikitext_file",
           f"exit {result.returncode}: {result.stderr.strip()}")


def main():
    if not os.path.isfile(DRIVER):
        report(False, "data_driver", f"{DRIVER} is missing: run `make test` (or make {os.path.relpath(DRIVER, REPO)})")
        return 1
    prepro = load_prepro()
    with tempfile.TemporaryDirectory(prefix="ssd_test_prepro_") as tmp:
        test_known_ids(prepro)
        test_bytes_roundtrip(tmp)
        test_gpt2_raw_zstd(prepro, tmp)
        test_neox_roundtrip(prepro, tmp)
        test_wikitext_word(prepro, tmp)
        test_v2_and_refusals(prepro, tmp)
    return exit_status()


if __name__ == "__main__":
    sys.exit(main())
