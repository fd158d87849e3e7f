"""
Instruction data for scripts/prepro.py (--format instruct): JSONL examples into token shards with loss masks.

Each line is one example, either {"prompt": str, "response": str} or {"messages": [{"role": str, "content": str},
...]}. An example becomes the tokens of its text segments in order, then the end-of-text token:
  prompt/response: prompt (not counted), response (counted), end of text (counted); the prompt and the response
      are taken as they are (no template), so the prompt holds whatever separator the data wants;
  messages: each message is rendered "<Role>: <content>\\n\\n" (Role: the role with a capital first letter,
      e.g. "User: hi\\n\\n"); an assistant message's content is counted, its header "Assistant: " and the blank
      line after it are not, and the last message must be the assistant's: its blank line is replaced by the
      end of text, which counts. So a model learns to write every assistant turn and to stop.
Each segment is encoded on its own (a BPE merge never crosses a segment boundary), so every token's mask is
exact. Examples are packed one after another (no padding); the end-of-text token closes each one, so with the
trainers' document boundaries (-db 1) an example starts right after the previous one's end of text.

Masks (the loader's format, data/dataloader.h): beside each shard P the file P + ".mask": 256 int32 [20261201,
1, ntok] then one byte per token, 1 if the token counts as a prediction target (the loss term predicting it).

Splits: an example goes to val when the seeded hash of its line number is below --val-fraction (prepro.py's
doc_keys); bad lines (not JSON, not one of the two shapes, a field of the wrong type, an empty response, an
example whose messages do not end with the assistant's) are reported with their line number and skipped; a
run with no valid example fails. Shards are written to hidden temporary files and renamed when complete.
"""
import json
import os
import re
import subprocess
import sys

import numpy as np

from prepro_shards import HEADER_BYTES, shard_header

MASK_MAGIC = 20261201
MASK_VERSION = 1
SHOWN_PROBLEMS = 20


class InstructError(Exception):
    """Stops the run: printed as one line "error: <message>"."""


def mask_header(ntok):
    header = np.zeros(HEADER_BYTES // 4, dtype="<i4")
    header[:3] = [MASK_MAGIC, MASK_VERSION, ntok]
    return header.tobytes()


def chat_header(role):
    """The header of a chat message: the role with a capital first letter, e.g. "User: "."""
    return f"{role[:1].upper()}{role[1:]}: "


def example_segments(record):
    """[(text, counted)] of one example (the end of text excluded), or raises ValueError naming the problem."""
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    if "messages" in record:
        messages = record["messages"]
        if not isinstance(messages, list) or not messages:
            raise ValueError('"messages" is not a non-empty list')
        segments = []
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise ValueError(f'message {i} is not {{"role": string, "content": string}}')
            role, content = m["role"], m["content"]
            header = chat_header(role)
            last = i == len(messages) - 1
            if role == "assistant":
                if not content:
                    raise ValueError(f"message {i}: an empty assistant message")
                segments += [(header, False), (content, True)] + ([] if last else [("\n\n", False)])
            else:
                if last:
                    raise ValueError(f'the last message is the "{role}"\'s: an example ends with the assistant\'s')
                segments.append((header + content + "\n\n", False))
        return segments
    prompt, response = record.get("prompt"), record.get("response")
    if not isinstance(prompt, str) or not isinstance(response, str):
        raise ValueError('neither "messages" nor string "prompt" and "response" fields')
    if not response:
        raise ValueError("an empty response")
    return [(prompt, False), (response, True)]


def line_segments(raw):
    """The segments of one JSONL line (bytes); ValueError names the problem."""
    try:
        record = json.loads(raw.decode("utf-8"))
    except ValueError as e:  # UnicodeDecodeError and JSONDecodeError both
        raise ValueError(f"not a UTF-8 JSON line ({e})") from None
    return example_segments(record)


def encode_example(tokenizer, segments):
    """The example's tokens and mask (uint8), the end of text appended and counted."""
    tokens, mask = [], []
    for text, counted in segments:
        ids = tokenizer.encode_text(text) if text else []
        tokens += ids
        mask += [1 if counted else 0] * len(ids)
    tokens.append(tokenizer.eot)
    mask.append(1)
    return tokens, mask


class MaskedShardWriter:
    """One split's shards and their masks: tokens and mask bytes appended to hidden temporary files, which get
    their headers and final names (--zstd: the shard compressed) when shard_size tokens are in."""

    def __init__(self, out_dir, name, split, dtype, shard_size, zstd):
        self.out_dir, self.name, self.split = out_dir, name, split
        self.dtype, self.shard_size, self.zstd = dtype, shard_size, zstd
        self.shards = self.count = self.tokens = self.counted = 0
        self.fp = self.mask_fp = None

    def final_path(self, i):
        return os.path.join(self.out_dir, f"{self.name}_{self.split}_{i:06d}.bin" + (".zst" if self.zstd else ""))

    def _tmp(self, i):
        return os.path.join(self.out_dir, f".{self.name}_{self.split}_{i:06d}.bin.tmp")

    def add(self, tokens, mask):
        tokens, mask = np.asarray(tokens, dtype=self.dtype), np.asarray(mask, dtype=np.uint8)
        self.counted += int(mask.sum())
        while tokens.size:
            if self.fp is None:
                self.fp = open(self._tmp(self.shards), "wb")
                self.mask_fp = open(self._tmp(self.shards) + ".mask", "wb")
                self.fp.write(shard_header(0, self.dtype))
                self.mask_fp.write(mask_header(0))
            take = min(self.shard_size - self.count, tokens.size)
            self.fp.write(tokens[:take].tobytes())
            self.mask_fp.write(mask[:take].tobytes())
            self.count += take
            self.tokens += take
            tokens, mask = tokens[take:], mask[take:]
            if self.count == self.shard_size:
                self._finish_shard()

    def _finish_shard(self):
        tmp = self._tmp(self.shards)
        for fp, header in ((self.fp, shard_header(self.count, self.dtype)), (self.mask_fp, mask_header(self.count))):
            fp.seek(0)
            fp.write(header)
            fp.close()
        final = self.final_path(self.shards)
        if self.zstd:
            done = subprocess.run(["zstd", "-q", "-f", "-o", tmp + ".zst", tmp], stderr=subprocess.PIPE)
            if done.returncode != 0:
                raise InstructError(f"zstd failed on {tmp}: {done.stderr.decode(errors='replace').strip()}")
            os.remove(tmp)
            tmp += ".zst"
        os.replace(tmp, final)
        os.replace(self._tmp(self.shards) + ".mask", final + ".mask")
        self.fp = self.mask_fp = None
        self.shards += 1
        self.count = 0

    def close(self):
        if self.count > 0:
            self._finish_shard()


def remove_old_shards(out_dir, name):
    """A rerun into the same directory replaces that name's shards and masks."""
    pattern = re.compile(re.escape(name) + r"_(train|val)_\d{6}\.bin(\.zst)?(\.mask)?")
    for f in os.listdir(out_dir):
        if pattern.fullmatch(f):
            os.remove(os.path.join(out_dir, f))


def prepare_instruct(args, paths, out_dir, name, tokenizer, doc_keys):
    """Writes the shards and masks of the JSONL files `paths` (in order); returns the summary lines."""
    if tokenizer.eot is None:
        raise InstructError(f"--tokenizer {args.tokenizer} has no end-of-text token, which closes every example")
    from prepro_tokenizers import shard_dtype
    remove_old_shards(out_dir, name)
    dtype = shard_dtype(tokenizer.vocab_size)
    splits = ["train", "val"] if args.val_fraction > 0 else ["train"]
    writers = {s: MaskedShardWriter(out_dir, name, s, dtype, args.shard_size, args.zstd) for s in splits}
    examples = {s: 0 for s in splits}
    bad, index = [], 0
    for path in paths:
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                try:
                    segments = line_segments(raw)
                except ValueError as e:
                    bad.append(f"{path}:{lineno}: {e}")
                    if len(bad) <= SHOWN_PROBLEMS:
                        print(f"warning: {bad[-1]}", file=sys.stderr)
                    continue
                tokens, mask = encode_example(tokenizer, segments)
                split = "val" if len(splits) == 2 and doc_keys(args.seed, index, 1)[0] < args.val_fraction else "train"
                index += 1
                writers[split].add(tokens, mask)
                examples[split] += 1
    for w in writers.values():
        w.close()
    where = paths[0] if len(paths) == 1 else f"the {len(paths)} input files"
    if index == 0:
        raise InstructError(f"{where}: no valid example ({len(bad)} bad line(s)"
                            + (f"; the first: {bad[0]}" if bad else "") + ")")
    for s in splits:
        if examples[s] == 0:
            raise InstructError(f"{where}: the {s} split has no example: "
                                + ("lower --val-fraction" if s == "train" else "raise --val-fraction, or 0 for train only"))
    lines = []
    for s, w in writers.items():
        suffix = ".bin.zst" if args.zstd else ".bin"
        lines.append(f"{s}: {examples[s]:,} examples, {w.tokens:,} tokens, {w.counted:,} counted (response and end "
                     f"of text), {w.shards} shard(s) {os.path.join(out_dir, f'{name}_{s}_*{suffix}')} with .mask files")
    if bad:
        lines.append(f"skipped: {len(bad):,} bad line(s); the first: {bad[0]}")
    return lines
