"""
Tokenizers of scripts/prepro.py and the tokenizer.bin they write (read by data/tokenizer.h).

Each tokenizer has kind, vocab_size, eot (None for bytes), token_bytes() (the bytes of every id, for
tokenizer.bin), spec() (a picklable description from which make_tokenizer() builds the same tokenizer in a
worker process) and encode_docs(texts) -> (tokens, lengths): the documents' tokens in one array of the
shard's dtype, and the number of tokens of each document.

End of text. Only prepro.py writes end-of-text tokens: BPE puts one before every document (GPT-2 50256,
NeoX 0), the word level one at every line end (<eos>); bytes have none. Inside a document the literal
text of a special token is ordinary text: GPT-2 and NeoX encode "<|endoftext|>" (and NeoX "<|padding|>")
as the characters they are, never as the special id; the word level tokenizer reads a literal "<eos>" word
as <unk>. So the shards hold end-of-text ids exactly at document (line) boundaries.
"""
import itertools
import json
import os

import numpy as np

TOKENIZER_MAGIC = 20251123
HEADER_INTS = 256
TOKENIZER_KINDS = {"bytes": 0, "gpt2": 1, "neox": 2, "word": 3}
EOT_TEXT = "<|endoftext|>"


class TokenizerError(Exception):
    """A tokenizer that cannot be built: the message names the file and the problem."""


def shard_dtype(vocab_size):
    """Shard version 1 (uint16) up to 65535 ids, version 2 (uint32) above."""
    return np.dtype("<u2") if vocab_size <= 65535 else np.dtype("<u4")


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

    def spec(self):
        return ("bytes", None)

    def encode_docs(self, texts):
        data = [t.encode("utf-8") for t in texts]
        lengths = np.fromiter(map(len, data), dtype=np.int64, count=len(data))
        return np.frombuffer(b"".join(data), dtype=np.uint8).astype(shard_dtype(self.vocab_size)), lengths

    def token_bytes(self):
        return [bytes([b]) for b in range(256)]


class BPETokenizer:
    """GPT-2 (encoder.json + vocab.bpe) or GPT-NeoX (tokenizer.json) byte-level BPE via `tokenizers`.
    self.tok is the whole tokenizer (token table, decoding); self.encoder encodes documents, with the special
    added tokens left out so that their literal text inside a document stays text."""

    def __init__(self, kind, path):
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers
        self.kind, self.path = kind, path
        if kind == "gpt2":
            encoder, merges = os.path.join(path, "encoder.json"), os.path.join(path, "vocab.bpe")
            for f in (encoder, merges):
                if not os.path.isfile(f):
                    raise TokenizerError(f"GPT-2 tokenizer file {f} not found (--tokenizer-path: the directory with "
                                         "encoder.json and vocab.bpe)")
            try:
                self.tok = Tokenizer(models.BPE.from_file(encoder, merges))
            except Exception as e:  # the library reports a bad file as a bare Exception
                raise TokenizerError(f"{encoder} / {merges}: not a GPT-2 BPE vocabulary and merges file ({e})") from None
            self.tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            self.tok.decoder = decoders.ByteLevel()
            self.encoder = self.tok
        else:
            f = os.path.join(path, "tokenizer.json") if os.path.isdir(path) else path
            if not os.path.isfile(f):
                raise TokenizerError(f"NeoX tokenizer file {f} not found (--tokenizer-path: tokenizer.json or its directory)")
            try:
                with open(f, "rb") as fp:
                    config = json.loads(fp.read())
                self.tok = Tokenizer.from_str(json.dumps(config))
                config["added_tokens"] = [t for t in config.get("added_tokens", []) if not t.get("special")]
                self.encoder = Tokenizer.from_str(json.dumps(config))
            except Exception as e:  # bad JSON, or a file the library refuses (it raises a bare Exception)
                raise TokenizerError(f"{f}: not a tokenizers tokenizer.json ({e})") from None
        self.vocab = self.tok.get_vocab(with_added_tokens=True)
        self.vocab_size = max(self.vocab.values()) + 1
        if EOT_TEXT not in self.vocab:
            raise TokenizerError(f"tokenizer at {path} has no {EOT_TEXT} token")
        self.eot = self.vocab[EOT_TEXT]

    def spec(self):
        return (self.kind, self.path)

    def encode_docs(self, texts):
        ids = [e.ids for e in self.encoder.encode_batch_fast(texts, add_special_tokens=False)]
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids)) + 1
        tokens = np.empty(int(lengths.sum()), dtype=shard_dtype(self.vocab_size))
        starts = np.cumsum(lengths) - lengths
        body = np.ones(tokens.size, dtype=bool)
        body[starts] = False
        tokens[starts] = self.eot
        tokens[body] = np.fromiter(itertools.chain.from_iterable(ids), dtype=tokens.dtype, count=tokens.size - len(ids))
        return tokens, lengths

    def encode_text(self, text):
        return self.encoder.encode(text, add_special_tokens=False).ids

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


EOS, UNK = "<eos>", "<unk>"


def doc_lines(text):
    """The lines of a document; a final line end does not start another line."""
    lines = text.split("\n")
    return lines[:-1] if lines[-1] == "" else lines


def new_words(text):
    """The words of a document in order of first appearance, with EOS where its first line ends (the word
    level vocabulary is built from these, in document order)."""
    seen = {}
    for line in doc_lines(text):
        for w in line.split():
            if w != EOS:
                seen.setdefault(w, None)
        seen.setdefault(EOS, None)
    return list(seen)


class WordTokenizer:
    """Whitespace-separated words; the vocabulary is the train split's words in order of first appearance,
    <eos> at every line end, <unk> for words outside the vocabulary (and for a literal <eos> word)."""
    kind = "word"

    def __init__(self, words):
        self.words = list(words)
        self.ids = {w: i for i, w in enumerate(self.words)}
        if UNK not in self.ids:
            self.ids[UNK] = len(self.words)
            self.words.append(UNK)
        self.vocab_size = len(self.words)
        self.eot = self.ids[EOS]
        self.unk = self.ids[UNK]

    def spec(self):
        return ("word", self.words)

    def encode_docs(self, texts):
        ids, lengths = [], []
        get, unk, eot = self.ids.get, self.unk, self.eot
        for text in texts:
            start = len(ids)
            for line in doc_lines(text):
                ids.extend(unk if w == EOS else get(w, unk) for w in line.split())
                ids.append(eot)
            lengths.append(len(ids) - start)
        return np.array(ids, dtype=shard_dtype(self.vocab_size)), np.array(lengths, dtype=np.int64)

    def token_bytes(self):
        return [b"\n" if w == EOS else (w + " ").encode("utf-8") for w in self.words]


def make_tokenizer(spec):
    """The tokenizer a spec() describes."""
    kind, arg = spec
    if kind == "bytes":
        return BytesTokenizer()
    if kind == "word":
        return WordTokenizer(arg)
    return BPETokenizer(kind, arg)


def write_tokenizer_bin(path, tokenizer):
    """tokenizer.bin: a header of 256 int32 [magic, 1, vocab_size, eot or -1, kind], then for each id a uint32
    byte count and the token's bytes. Written to a temporary name and renamed into place."""
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:5] = [TOKENIZER_MAGIC, 1, tokenizer.vocab_size, -1 if tokenizer.eot is None else tokenizer.eot,
                  TOKENIZER_KINDS[tokenizer.kind]]
    parts = [header.tobytes()]
    for b in tokenizer.token_bytes():
        parts.append(np.uint32(len(b)).tobytes())
        parts.append(b)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(b"".join(parts))
    os.replace(tmp, path)
