"""
Shards of scripts/prepro.py, written as the tokens come, and the val reservoir of --val-docs / --val-tokens.

A shard is a header of 256 int32 [20240520, version, ntok] then ntok tokens (uint16 for version 1, uint32
for version 2). A split's tokens are appended to a hidden temporary file (.<name>_<split>_<index>.bin.tmp,
header ntok 0) until it holds shard_size tokens; then its header gets the count and it is "filled". A
filled shard becomes <name>_<split>_<index>.bin (renamed; --zstd: compressed to a temporary name by the
zstd tool, then renamed) only after the run's state records it as complete, so that the loader, whose
globs never match the hidden names, sees only whole shards, and an interrupted run can resume from the
state: it cuts the temporary file back to the recorded count and goes on.
"""
import heapq
import os
import subprocess

import numpy as np

SHARD_MAGIC = 20240520
HEADER_INTS = 256
HEADER_BYTES = 4 * HEADER_INTS


def shard_header(ntok, dtype):
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = [SHARD_MAGIC, 1 if dtype.itemsize == 2 else 2, ntok]
    return header.tobytes()


def write_shard(path, tokens, vocab_size):
    """One whole raw shard (tests, and tools that have all tokens at hand); tokens must be < vocab_size."""
    from prepro_tokenizers import shard_dtype
    tokens = np.asarray(tokens)
    if tokens.size == 0:
        raise ValueError(f"{path}: a shard needs at least one token")
    if tokens.max() >= vocab_size:
        raise ValueError(f"{path}: token {tokens.max()} >= vocab_size {vocab_size}")
    dtype = shard_dtype(vocab_size)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(shard_header(tokens.size, dtype))
        f.write(tokens.astype(dtype).tobytes())
    os.replace(tmp, path)


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ShardWriter:
    """One split's shards (see the module comment). shards: filled shards so far; count: tokens in the
    temporary file of shard number `shards`."""

    def __init__(self, out_dir, name, split, dtype, shard_size, zstd, shards=0, count=0, tokens=0):
        self.out_dir, self.name, self.split = out_dir, name, split
        self.dtype, self.shard_size, self.zstd = dtype, shard_size, zstd
        self.shards, self.count, self.tokens = shards, count, tokens
        self.fp = None
        self.compressing = None  # (process, index) of the zstd run in progress

    def tmp_path(self, i):
        return os.path.join(self.out_dir, f".{self.name}_{self.split}_{i:06d}.bin.tmp")

    def final_path(self, i):
        return os.path.join(self.out_dir, f"{self.name}_{self.split}_{i:06d}.bin" + (".zst" if self.zstd else ""))

    def reopen(self):
        """On a resume: the temporary file of the shard in progress back to `count` tokens."""
        path = self.tmp_path(self.shards)
        if self.count == 0:
            if os.path.exists(path):
                os.remove(path)
            return
        if not os.path.isfile(path) or os.path.getsize(path) < HEADER_BYTES + self.count * self.dtype.itemsize:
            raise FileNotFoundError(f"{path}: the shard in progress is missing or shorter than the state says")
        self.fp = open(path, "r+b")
        self.fp.truncate(HEADER_BYTES + self.count * self.dtype.itemsize)
        self.fp.seek(0, os.SEEK_END)

    def add(self, tokens):
        tokens = np.asarray(tokens, dtype=self.dtype)
        while tokens.size:
            if self.fp is None:
                self.fp = open(self.tmp_path(self.shards), "wb")
                self.fp.write(shard_header(0, self.dtype))
            take = min(self.shard_size - self.count, tokens.size)
            self.fp.write(tokens[:take].tobytes())
            self.count += take
            self.tokens += take
            tokens = tokens[take:]
            if self.count == self.shard_size:
                self._fill()

    def _fill(self):
        """The shard in progress gets its token count and stays a temporary file until finalize()."""
        self.fp.seek(0)
        self.fp.write(shard_header(self.count, self.dtype))
        self.fp.flush()
        os.fsync(self.fp.fileno())
        self.fp.close()
        self.fp = None
        self.shards += 1
        self.count = 0

    def close(self):
        """The last, partial shard counts as filled."""
        if self.count > 0:
            self._fill()

    def sync(self):
        if self.fp is not None:
            self.fp.flush()
            os.fsync(self.fp.fileno())

    def finalize(self):
        """Filled shards that are still temporary files get their final names (--zstd: compressed first, one
        zstd process at a time in the background; wait() collects the last)."""
        for i in range(self.shards):
            tmp = self.tmp_path(i)
            if not os.path.exists(tmp) or (self.compressing and self.compressing[1] == i):
                continue
            if not self.zstd:
                os.replace(tmp, self.final_path(i))
                continue
            self.wait()
            self.compressing = (subprocess.Popen(["zstd", "-q", "-f", "-o", tmp + ".zst", tmp],
                                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), i)

    def wait(self):
        if self.compressing is None:
            return
        process, i = self.compressing
        self.compressing = None
        _, err = process.communicate()
        tmp = self.tmp_path(i)
        if process.returncode != 0:
            raise OSError(f"zstd failed on {tmp}: {err.decode(errors='replace').strip()}")
        os.replace(tmp + ".zst", self.final_path(i))
        os.remove(tmp)


class ValReservoir:
    """--val-docs N / --val-tokens N: val is the documents of smallest key (a seeded hash of the document's
    index) that together make N documents, or at least N tokens. Streaming: a document whose key is below
    the current bound `tau` is a candidate; its tokens go to a spill file, and the bound falls as candidates
    come. At the end the candidates under the bound are val, the others go to train after everything else,
    both in document order. Memory: one entry per candidate (about N (1 + ln(documents / N)) of them)."""

    ENTRY = np.dtype([("key", "<f8"), ("doc", "<i8"), ("offset", "<i8"), ("length", "<i8")])

    def __init__(self, spill_path, unit, limit, dtype, entries=None, spill_tokens=0):
        self.spill_path, self.unit, self.limit, self.dtype = spill_path, unit, limit, dtype
        self.entries = [] if entries is None else [tuple(e) for e in entries.tolist()]
        self.spill_tokens = spill_tokens
        self.heap, self.total, self.tau = [], 0, 1.0  # max-heap of (-key, entry index) of the live candidates
        for i in range(len(self.entries)):
            self._admit(i)
        mode = "r+b" if spill_tokens else "wb"
        self.fp = open(spill_path, mode)
        self.fp.truncate(spill_tokens * dtype.itemsize)
        self.fp.seek(0, os.SEEK_END)

    def _size(self, i):
        return 1 if self.unit == "docs" else self.entries[i][3]

    def _admit(self, i):
        heapq.heappush(self.heap, (-self.entries[i][0], i))
        self.total += self._size(i)
        while self.total - self._size(self.heap[0][1]) >= self.limit:
            self.total -= self._size(heapq.heappop(self.heap)[1])
        if self.total >= self.limit:
            self.tau = -self.heap[0][0]

    def offer(self, doc, key, tokens):
        """True if the document is a candidate (its tokens are kept here), False if it belongs to train."""
        if key >= self.tau:
            return False
        self.entries.append((key, doc, self.spill_tokens, tokens.size))
        self.fp.write(np.asarray(tokens, dtype=self.dtype).tobytes())
        self.spill_tokens += tokens.size
        self._admit(len(self.entries) - 1)
        return True

    def sync(self):
        self.fp.flush()
        os.fsync(self.fp.fileno())

    def entries_array(self):
        return np.array(self.entries, dtype=self.ENTRY)

    def split(self):
        """(val, train): the entries of each, in document order."""
        live = {i for _, i in self.heap}
        val = sorted((self.entries[i] for i in live), key=lambda e: e[1])
        train = sorted((e for i, e in enumerate(self.entries) if i not in live), key=lambda e: e[1])
        return val, train

    def tokens(self, entries):
        """The tokens of each entry, read back from the spill file."""
        self.fp.flush()
        with open(self.spill_path, "rb") as f:
            for _, _, offset, length in entries:
                f.seek(offset * self.dtype.itemsize)
                yield np.frombuffer(f.read(length * self.dtype.itemsize), dtype=self.dtype)

    def close(self):
        self.fp.close()
