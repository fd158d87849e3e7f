#!/usr/bin/env python3
"""
Instruction data and loss masks end to end, on small JSONL files this test writes:
  - scripts/prepro.py --format instruct (NeoX): each example is its prompt tokens (mask 0), its response tokens
    and the end of text (mask 1), packed in input order; a chat example renders "<Role>: content\\n\\n" with only
    the assistant contents and the closing end of text counted; the tokens decode back to the rendered text;
    bad lines are reported with their line numbers; a file with no valid example fails; --zstd shards carry masks;
  - the C loader (driver build/tests/test_data_loader dump) hands out -1 exactly at the masked targets;
  - train_ssd trains on masked shards (finite losses), a step whose targets are all masked is skipped without
    NaN, and with masks 2 MPI ranks x B equal 1 rank x B x 2 micro-batches (the loss is the mean over the
    step's counted targets, summed over ranks before the backward): step losses within 1e-5.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared")
PREPRO = os.path.join(REPO, "scripts", "prepro.py")
DRIVER = os.path.join(REPO, "build", "tests", "test_data_loader")
TRAINER = os.path.join(REPO, "train_ssd")
NEOX = os.path.join(SHARED, "tokenizers", "gpt-neox-20b", "tokenizer.json")
sys.path.insert(0, os.path.join(REPO, "scripts"))
from prepro_shards import shard_header  # noqa: E402

from report import exit_status, report  # noqa: E402


def prepro(*args):
    return subprocess.run([sys.executable, PREPRO, "--format", "instruct", *args], capture_output=True, text=True)


def read_pair(path):
    """(tokens, mask) of a raw shard and its .mask, read independently of the scripts."""
    data = open(path, "rb").read()
    header = np.frombuffer(data[:1024], dtype="<i4")
    tokens = np.frombuffer(data[1024:], dtype="<u2" if header[1] == 1 else "<u4")[:header[2]]
    mdata = open(path + ".mask", "rb").read()
    mheader = np.frombuffer(mdata[:1024], dtype="<i4")
    assert list(mheader[:3]) == [20261201, 1, header[2]], (path, mheader[:3])
    return tokens.astype(np.int64), np.frombuffer(mdata[1024:], dtype=np.uint8)


def test_prepro_neox(tmp):
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(NEOX)
    src = os.path.join(tmp, "chat.jsonl")
    examples = [
        {"prompt": "Q: What is two plus two?\nA:", "response": " Four."},
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                      {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"},
                      {"role": "assistant", "content": "Goodbye."}]},
    ]
    lines = [json.dumps(examples[0]), "{not json", json.dumps({"prompt": 1, "response": "x"}), "",
             json.dumps(examples[1]), json.dumps({"messages": [{"role": "user", "content": "only a question"}]})]
    open(src, "w").write("\n".join(lines) + "\n")
    out = os.path.join(tmp, "neox")
    r = prepro("--input", src, "--tokenizer", "neox", "--val-fraction", "0", "--out", out)
    named = all(f"chat.jsonl:{n}:" in r.stderr for n in (2, 3, 6))
    report(r.returncode == 0 and named, "instruct_bad_lines_named", f"exit {r.returncode}, lines 2, 3 and 6 reported: "
           f"{named}")
    tokens, mask = read_pair(os.path.join(out, "chat_train_000000.bin"))
    enc = lambda s: tok.encode(s, add_special_tokens=False).ids  # noqa: E731
    want_t, want_m = [], []
    for text, counted in [("Q: What is two plus two?\nA:", 0), (" Four.", 1), (None, 1),
                          ("System: Be brief.\n\n", 0), ("User: Hi\n\n", 0), ("Assistant: ", 0), ("Hello!", 1),
                          ("\n\n", 0), ("User: Bye\n\n", 0), ("Assistant: ", 0), ("Goodbye.", 1), (None, 1)]:
        ids = [0] if text is None else enc(text)
        want_t += ids
        want_m += [counted] * len(ids)
    ok = tokens.tolist() == want_t and mask.tolist() == want_m
    report(ok, "instruct_tokens_and_mask", f"{len(tokens)} tokens, {int(mask.sum())} counted; the expected "
           f"{len(want_t)} tokens and {sum(want_m)} counted: {ok}")
    dump = subprocess.run([DRIVER, "dump", os.path.join(out, "chat_train_*.bin"),
                           *map(str, (1, len(tokens) - 1, 0, 1, 0, 1, 50277, 1))], capture_output=True)
    got = np.frombuffer(dump.stdout, dtype="<i4")
    targets = got[len(tokens) - 1:]
    expect = np.where(mask[1:] == 1, tokens[1:], -1)
    report(dump.returncode == 0 and np.array_equal(targets, expect), "instruct_loader_targets",
           f"the loader's targets are the tokens with -1 at the {int((mask[1:] == 0).sum())} masked positions")

    bad = os.path.join(tmp, "bad.jsonl")
    open(bad, "w").write("nope\n{\"prompt\": \"a\"}\n")
    r = prepro("--input", bad, "--tokenizer", "neox", "--val-fraction", "0", "--out", os.path.join(tmp, "bad"))
    report(r.returncode != 0 and "no valid example" in r.stderr and "bad.jsonl:1" in r.stderr, "instruct_none_valid",
           f"exit {r.returncode}: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ''}")


def write_examples(path, n, seed):
    rng = np.random.default_rng(seed)
    words = ["alpha", "beta", "gamma", "delta", "sun", "moon", "river", "stone", "green", "blue"]
    with open(path, "w") as f:
        for i in range(n):
            q = " ".join(rng.choice(words, 1 + i % 7))
            a = " ".join(rng.choice(words, 2 + i % 5))
            f.write(json.dumps({"prompt": f"Repeat: {q}\nAnswer:", "response": f" {a}"}) + "\n")


def steps(log):
    return [float(line.split("| loss ")[1].split()[0]) for line in log.splitlines()
            if line.startswith("step ") and "| loss " in line]


def train(args, np_=1):
    cmd = [TRAINER, *args]
    if np_ > 1:
        cmd = ["mpirun", "--oversubscribe", "-np", str(np_), *cmd]
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_btl_vader_single_copy_mechanism="none")
    return subprocess.run(cmd, capture_output=True, text=True, env=env)


def test_training(tmp):
    src = os.path.join(tmp, "qa.jsonl")
    write_examples(src, 600, 1)
    data = os.path.join(tmp, "qa")
    r = prepro("--input", src, "--tokenizer", "gpt2", "--val-fraction", "0.1", "--zstd", "--out", data)
    names = sorted(os.listdir(data)) if os.path.isdir(data) else []
    ok = r.returncode == 0 and "qa_train_000000.bin.zst.mask" in names and "qa_val_000000.bin.zst.mask" in names
    report(ok, "instruct_zstd_masks", f"exit {r.returncode}, files {names}")
    if not ok:
        return
    config = os.path.join(tmp, "model.json")
    open(config, "w").write(json.dumps({"name": "instruct-test", "d_model": 32, "n_layer": 1, "vocab_size": 50257,
                                        "pad_vocab_multiple": 64, "d_state": 8, "d_conv": 4, "expand": 2,
                                        "headdim": 16, "ngroups": 1, "chunk_size": 16}))
    common = ["-e", config, "-i", os.path.join(data, "qa_train_*.bin.zst"), "-j", os.path.join(data, "qa_val_*.bin.zst"),
              "-b", "2", "-t", "32", "-d", "128", "-x", "4", "-v", "4", "-g", "0", "-th", "1", "-l", "3e-3"]
    one = train(common)
    losses = steps(one.stdout)
    report(one.returncode == 0 and len(losses) == 4 and all(np.isfinite(losses)), "instruct_train_cpu",
           f"exit {one.returncode}, step losses {losses}; {one.stderr.strip()[-300:]}")
    if shutil.which("mpirun"):
        two = train(common, np_=2)
        losses2 = steps(two.stdout)
        diff = max((abs(a - b) / b for a, b in zip(losses, losses2)), default=float("inf"))
        report(two.returncode == 0 and len(losses2) == 4 and diff <= 1e-5, "instruct_two_ranks_equal_one",
               f"2 ranks x B=2 against 1 rank x B=2 x 2 micro-batches: max rel diff {diff:.2e} (tol 1e-5)")

    # a full-split evaluation counts only the val split's counted targets (mask[1:]: the first token is context)
    val = subprocess.run(["zstd", "-q", "-d", "-c", os.path.join(data, "qa_val_000000.bin.zst")], capture_output=True)
    val_tokens = int(np.frombuffer(val.stdout[:12], dtype="<i4")[2])
    vmask = np.fromfile(os.path.join(data, "qa_val_000000.bin.zst.mask"), dtype=np.uint8, offset=1024)
    r = train(common[:6] + ["-b", "2", "-t", "32", "-x", "0", "-m", "-1", "-g", "0", "-th", "1"])
    line = next((x for x in r.stdout.splitlines() if x.startswith("eval val loss")), "")
    counted = int(vmask[1:].sum())
    report(r.returncode == 0 and f"tokens {counted} " in line, "instruct_eval_counted_targets",
           f"{line!r}: {counted} counted of {val_tokens - 1} targets")

    # a shard whose first 128 targets are masked: the first step (4 rows of 32) has none and is skipped
    empty = os.path.join(tmp, "empty")
    os.makedirs(empty)
    tokens = np.arange(1, 1 + 129 * 4, dtype="<u2") % 50000
    mask = np.ones(tokens.size, dtype=np.uint8)
    mask[:129] = 0
    with open(os.path.join(empty, "e_train_000000.bin"), "wb") as f:
        f.write(shard_header(tokens.size, np.dtype("<u2")) + tokens.tobytes())
    header = np.zeros(256, dtype="<i4")
    header[:3] = [20261201, 1, tokens.size]
    with open(os.path.join(empty, "e_train_000000.bin.mask"), "wb") as f:
        f.write(header.tobytes() + mask.tobytes())
    r = train(["-e", config, "-i", os.path.join(empty, "e_train_*.bin"), "-j", os.path.join(empty, "e_train_*.bin"),
               "-b", "4", "-t", "32", "-x", "2", "-v", "0", "-g", "0", "-th", "1", "-sh", "0"])
    skipped = "no target counts in this step" in r.stdout
    losses = steps(r.stdout)
    report(r.returncode == 0 and skipped and len(losses) == 1 and np.isfinite(losses[0]), "instruct_empty_step",
           f"exit {r.returncode}, step 1 skipped: {skipped}, step 2 loss {losses}")


def main():
    with tempfile.TemporaryDirectory() as tmp:
        test_prepro_neox(tmp)
        test_training(tmp)
    sys.exit(exit_status())


if __name__ == "__main__":
    main()
