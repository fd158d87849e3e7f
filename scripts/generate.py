#!/usr/bin/env python3
"""
Talk to a model: encodes a text prompt with the model's own tokenizer, has the trainer continue it, and
prints the continuation as it is drawn, then the speed (tokens/s) on stderr.

  python3 scripts/generate.py --model runs/quickstart/model_00000150.bin --prompt "ROMEO:"
  python3 scripts/generate.py --model runs/sft/model_00002000.bin --chat --prompt "Name three colours."
  python3 scripts/generate.py --model model.bin --prompt "The" --tokens 200 --temperature 0.8 --top-k 40 --seed 1 --device gpu

The model file records its tokenizer ("tokenizer": "gpt2", "gpt-neox-20b", "bytes" or "word-..."): GPT-2 and
NeoX are built from ../shared/tokenizers (or --tokenizer-path, as for scripts/prepro.py), bytes need nothing,
and a word-level vocabulary is read from the tokenizer.bin beside the model file. The token ids go to
./train_ssd (--device cpu) or ./train_ssdcu (--device gpu) as -gf, with -x 0: the model reads an end-of-text
token and the prompt in one chunked forward, then draws each token through the recurrence, O(1) work per
token (model/cpu_sample.h); on the GPU both run on the device. --chat writes the prompt as a user turn of
the chat format of scripts/prepro.py --format instruct ("User: ...\\n\\nAssistant: ") and stops at the end of
the answer (its end-of-text token); --stop-at-eot alone stops at an end of text too. --verbose shows the
trainer's own output. The exit status is the trainer's.
"""
import argparse
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from prepro import DEFAULT_TOKENIZER_PATHS  # noqa: E402
from prepro_instruct import chat_header  # noqa: E402
from prepro_tokenizers import BPETokenizer, BytesTokenizer, TokenizerError, WordTokenizer, write_tokenizer_bin  # noqa: E402
from ssd_model_file import ModelFileError, read_model_config  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START = b"generating:\n---\n"
END = b"\n---\ngenerated "


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def read_tokenizer_bin(path):
    """The token table of a tokenizer.bin (data/tokenizer.h): [bytes of id 0, 1, ...]."""
    import numpy as np
    with open(path, "rb") as f:
        data = f.read()
    header = np.frombuffer(data[:1024], dtype="<i4")
    if len(header) < 5 or header[0] != 20251123:
        fail(f"{path}: not a tokenizer.bin (bad magic)")
    table, offset = [], 1024
    for _ in range(int(header[2])):
        n = int.from_bytes(data[offset:offset + 4], "little")
        table.append(data[offset + 4:offset + 4 + n])
        offset += 4 + n
    return table


def model_tokenizer(note, model_path, tokenizer_path):
    """The tokenizer a model file's note names (the same matching as tokenizer_note_kind in data/tokenizer.c)."""
    if "neox" in note or "gpt2" in note:
        kind = "neox" if "neox" in note else "gpt2"
        return BPETokenizer(kind, tokenizer_path or DEFAULT_TOKENIZER_PATHS[kind])
    if note in ("bytes", "byte"):
        return BytesTokenizer()
    if "word" in note:
        beside = os.path.join(os.path.dirname(os.path.abspath(model_path)), "tokenizer.bin")
        if not os.path.isfile(beside):
            fail(f"{model_path} is a word-level model ('{note}'): its vocabulary is read from {beside}, which is missing")
        words = [b[:-1].decode("utf-8") if b.endswith(b" ") else "<eos>" for b in read_tokenizer_bin(beside)]
        return WordTokenizer(words)
    fail(f"{model_path} records the tokenizer '{note or '(none)'}': this script encodes gpt2, gpt-neox-20b, bytes "
         "and word-level models")


def encode(tokenizer, text):
    if isinstance(tokenizer, BPETokenizer):
        return tokenizer.encode_text(text)
    ids = tokenizer.encode_docs([text])[0].tolist()
    if isinstance(tokenizer, WordTokenizer) and not text.endswith("\n") and ids and ids[-1] == tokenizer.eot:
        ids.pop()  # the last line of a prompt is not ended
    return ids


def prompt_ids(tokenizer, args):
    if not args.chat:
        return encode(tokenizer, args.prompt)
    # each segment on its own, as scripts/prepro.py --format instruct encodes the turns
    return encode(tokenizer, chat_header("user") + args.prompt + "\n\n") + encode(tokenizer, chat_header("assistant"))


def stream(proc, verbose):
    """Shows the continuation between the trainer's START and END markers as it arrives; returns the trainer's
    other output and the speed line."""
    other, pending, speed, state = b"", b"", b"", "before"
    out = sys.stdout.buffer
    while True:
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            break
        if verbose:
            out.write(chunk)
            out.flush()
            continue
        pending += chunk
        if state == "before" and START in pending:
            head, pending = pending.split(START, 1)
            other += head
            state = "text"
        if state == "text":
            if END in pending:
                text, pending = pending.split(END, 1)
                out.write(text + b"\n")
                state = "after"
            else:  # hold back what could be the start of END
                keep = len(END) - 1
                out.write(pending[:-keep] if len(pending) > keep else b"")
                pending = pending[-keep:] if len(pending) > keep else pending
            out.flush()
        if state == "after" and b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            speed = b"generated " + line
            state = "done"
    return other + pending, speed.decode("utf-8", "replace")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a model file (model_*.bin of a run, or scripts/hf_import.py's)")
    ap.add_argument("--prompt", required=True, help="the text to continue")
    ap.add_argument("--tokens", type=int, default=200, help="tokens to generate at most (default 200)")
    ap.add_argument("--temperature", type=float, default=0.8, help="0 for the most likely token (default 0.8)")
    ap.add_argument("--top-k", type=int, default=40, help="sample among the k most likely, 0 for all (default 40)")
    ap.add_argument("--seed", type=int, default=1, help="the sampling seed: the same seed, the same text (default 1)")
    ap.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="./train_ssd or ./train_ssdcu")
    ap.add_argument("--chat", action="store_true", help="a user turn of the instruct chat format; stops at its end")
    ap.add_argument("--stop-at-eot", action="store_true", help="stop at an end-of-text token")
    ap.add_argument("--tokenizer-path", help="GPT-2's directory or NeoX's tokenizer.json (default ../shared/tokenizers)")
    ap.add_argument("--trainer", help="the trainer binary (default ./train_ssd or ./train_ssdcu of the repository)")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads, 0 for all (default 0)")
    ap.add_argument("--verbose", action="store_true", help="show all of the trainer's output")
    args = ap.parse_args()
    if not 1 <= args.tokens <= 1048576:
        fail(f"--tokens must be in [1, 1048576] (got {args.tokens})")
    if not 0 <= args.temperature <= 100:
        fail(f"--temperature must be in [0, 100] (got {args.temperature})")
    if args.top_k < 0 or args.seed < 0:
        fail("--top-k and --seed must not be negative")
    trainer = args.trainer or os.path.join(REPO, "train_ssdcu" if args.device == "gpu" else "train_ssd")
    if not os.access(trainer, os.X_OK):
        fail(f"{trainer} is not built: run make{' train_ssdcu' if args.device == 'gpu' else ''} in {REPO}")
    try:
        config = read_model_config(args.model)
        tokenizer = model_tokenizer(config.get("tokenizer", ""), args.model, args.tokenizer_path)
    except (ModelFileError, TokenizerError) as e:
        fail(str(e))
    ids = prompt_ids(tokenizer, args)
    if not ids:
        fail("the prompt encodes to no tokens")
    if max(ids) >= config["vocab_size"]:
        fail(f"the prompt has token {max(ids)}, outside the model's vocab_size {config['vocab_size']}")
    with tempfile.TemporaryDirectory() as tmp:
        ids_path = os.path.join(tmp, "prompt.txt")
        with open(ids_path, "w") as f:
            f.write(",".join(map(str, ids)))
        cmd = [trainer, "-e", args.model, "-x", "0", "-v", "0", "-b", "1", "-t", "1024", "-gf", ids_path,
               "-g", str(args.tokens), "-st", str(args.temperature), "-sk", str(args.top_k), "-R", str(args.seed),
               "-ge", "1" if args.chat or args.stop_at_eot else "0", "-th", str(args.threads)]
        beside = os.path.join(os.path.dirname(os.path.abspath(args.model)), "tokenizer.bin")
        if not os.path.isfile(beside):  # the trainer decodes with a tokenizer.bin: write the model's
            write_tokenizer_bin(os.path.join(tmp, "tokenizer.bin"), tokenizer)
            cmd += ["-tk", os.path.join(tmp, "tokenizer.bin")]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        other, speed = stream(proc, args.verbose)
        status = proc.wait()
    if status != 0:
        sys.stderr.write(other.decode("utf-8", "replace"))
        fail(f"{os.path.basename(trainer)} exited with status {status}: {' '.join(cmd)}")
    if speed:
        print(f"[{speed}]", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
