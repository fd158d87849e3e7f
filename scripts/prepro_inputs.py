"""
Inputs of scripts/prepro.py: which files, how they are read as documents, and the work of one worker.

Files: --input takes files, directories (walked recursively, hidden entries left out) and globs; the
format comes from the name (after a .gz or .zst suffix): .txt .text .md .tokens are text, .jsonl .ndjson
JSON Lines, .parquet Parquet; --format names it for files whose names say nothing.

Documents:
  text     at blank lines (the separator stays with the document before it, so the documents join back
           to the file), or one per line, or one per file (--text-docs blank|line|file); "\r\n" reads as
           "\n"; the wikitext2 recipe cuts at article titles ("article").
  JSONL    one record per line, the document is its --text-field (a string); blank lines are skipped.
  Parquet  one row per document, the --text-field column (string); read with pyarrow, a batch of rows at
           a time.
Compressed .gz (stdlib gzip) and .zst (pyarrow) files are decompressed as they are read.

A bad record (JSON that does not parse, a missing or non-string field, bytes that are not UTF-8, a
document over MAX_DOC_BYTES) is reported with its file and line or row and skipped; a file that cannot be
read on (corrupt compression, not Parquet) is reported and the rest of it skipped. Nothing holds more
than one document beyond a task's CHUNK_BYTES, so memory does not depend on the corpus.

Positions: the reader cuts the input into tasks at document boundaries, each ending at a Position (file
index, and the lines or rows of that file consumed). Reading resumes at any such Position without
re-reading what came before it except to count lines.
"""
import codecs
import collections
import glob
import gzip
import json
import os
import re
import signal
import threading
import time
import zlib

import numpy as np

TEXT_SUFFIXES = {".txt": "text", ".text": "text", ".md": "text", ".tokens": "text",
                 ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
COMPRESSION_SUFFIXES = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}
CHUNK_BYTES = 1 << 20          # text per task
MAX_DOC_BYTES = 8 << 20        # a longer document (or JSONL line, or row) is a bad record
ARTICLE_TITLE = re.compile(rb"^ = [^=].* = \n?$")
READ_ERRORS = (OSError, EOFError, ValueError, zlib.error)  # gzip, zstd (pyarrow) and I/O failures

InputFile = collections.namedtuple("InputFile", "path fmt compression size split")
Position = collections.namedtuple("Position", "file record")  # record: lines (text, JSONL) or rows (Parquet)
# a unit of work: kind "lines" (payload: bytes of whole lines), "docs" (payload: [(file, line, bytes)]) or
# "rows" (payload: a pyarrow string array); file and first record locate it
Task = collections.namedtuple("Task", "kind file first payload")
# what the reader hands on: a task (or None), the Position after it, the input bytes read so far
# (compressed size for compressed files, for the progress line) and problems found while reading
ReadItem = collections.namedtuple("ReadItem", "task end done_bytes problems")


class InputError(Exception):
    """An --input that names nothing readable."""


def file_format(path, fmt):
    """(format, compression) of a file: fmt if given, else from its name; format None if the name says nothing."""
    stem, ext = os.path.splitext(path)
    compression = COMPRESSION_SUFFIXES.get(ext.lower())
    if compression:
        ext = os.path.splitext(stem)[1]
    return (fmt if fmt != "auto" else TEXT_SUFFIXES.get(ext.lower())), compression


def discover(inputs, fmt):
    """InputFiles for --input arguments, in argument order, directories and globs sorted, duplicates once.
    Returns (files, names of directory entries left out because their names give no format)."""
    files, seen, skipped = [], set(), []

    def add(path, explicit):
        f, compression = file_format(path, fmt)
        if f is None:
            if explicit:
                raise InputError(f"--input {path}: cannot tell the format from the name (text: .txt .text .md "
                                 ".tokens, JSON Lines: .jsonl .ndjson, Parquet: .parquet, each optionally .gz or .zst): "
                                 "give --format text|jsonl|parquet")
            skipped.append(path)
            return
        if f == "parquet" and compression:
            raise InputError(f"--input {path}: a Parquet file compresses its own pages; it cannot be .gz or .zst")
        real = os.path.realpath(path)
        if real not in seen:
            seen.add(real)
            files.append(InputFile(path, f, compression, os.path.getsize(path), None))

    for arg in inputs:
        if os.path.isdir(arg):
            found = []
            for root, dirs, names in os.walk(arg):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                found += [os.path.join(root, n) for n in names if not n.startswith(".")]
            if not found:
                raise InputError(f"--input {arg}: the directory has no files")
            for path in sorted(found):
                add(path, False)
        elif os.path.isfile(arg):
            add(arg, True)
        elif os.path.exists(arg):
            raise InputError(f"--input {arg}: not a regular file or directory")
        else:
            matches = sorted(p for p in glob.glob(arg, recursive=True) if os.path.isfile(p))
            if not matches:
                raise InputError(f"--input {arg}: no such file or directory, and no file matches it as a glob")
            for path in matches:
                add(path, False)
    if not files:
        raise InputError(f"--input {' '.join(inputs)}: no text, JSONL or Parquet files among the "
                         f"{len(skipped)} file(s) found (give --format to read them anyway)")
    return files, skipped


# ---------------------------------------------------------------------------------------------------
# reading (main process)

class ByteStream:
    """The decompressed bytes of a file; raw_tell() is how far the file itself has been read."""

    def __init__(self, f):
        if f.compression == "zstd":
            import pyarrow as pa
            self.raw = pa.OSFile(f.path, "rb")
            self.stream = pa.CompressedInputStream(self.raw, "zstd")
        else:
            self.raw = open(f.path, "rb")
            self.stream = gzip.GzipFile(fileobj=self.raw, mode="rb") if f.compression == "gzip" else self.raw

    def read(self, n):
        return bytes(self.stream.read(n))

    def raw_tell(self):
        return self.raw.tell()

    def close(self):
        if self.stream is not self.raw:
            self.stream.close()
        self.raw.close()


def skip_lines(stream, n):
    """Reads past the first n lines of the stream; returns the bytes read after them."""
    while n > 0:
        chunk = stream.read(CHUNK_BYTES)
        if not chunk:
            raise EOFError(f"the file ends before line {n + 1} of the resume position: it changed since")
        count = chunk.count(b"\n")
        if count >= n:
            cut = -1
            for _ in range(n):
                cut = chunk.index(b"\n", cut + 1)
            return chunk[cut + 1:]
        n -= count
    return b""


def read_chunks(stream, pending, at_start):
    """(bytes, eof) pieces of a stream: first what skip_lines left over, then CHUNK_BYTES reads; a UTF-8
    byte order mark at the start of the file is dropped."""
    first = True
    while True:
        chunk = stream.read(CHUNK_BYTES)
        if first:
            chunk = pending + chunk
            if at_start and chunk.startswith(codecs.BOM_UTF8):
                chunk = chunk[len(codecs.BOM_UTF8):]
            first = False
        yield chunk, not chunk
        if not chunk:
            return


def crlf_chunks(chunks):
    """The same pieces with "\r\n" read as "\n" (a "\r" at the end of a piece waits for the next one)."""
    held = b""
    for chunk, eof in chunks:
        chunk = held + chunk
        held = b""
        if not eof and chunk.endswith(b"\r"):
            chunk, held = chunk[:-1], b"\r"
        yield chunk.replace(b"\r\n", b"\n"), eof


def blank_line_docs(chunks, line):
    """(first line, document bytes or None if longer than MAX_DOC_BYTES, lines it spans) for the pieces of the
    text split at "\n\n", each keeping its separator (so they join back to the text)."""
    rest, long_start, long_lines = b"", None, 0
    for chunk, eof in chunks:
        parts = (rest + chunk).split(b"\n\n")
        rest = b"" if eof else parts.pop()
        for i, part in enumerate(parts):
            doc = part if eof and i == len(parts) - 1 else part + b"\n\n"
            n = doc.count(b"\n")
            if long_start is not None:
                yield long_start, None, long_lines + n
                line, long_start = line + long_lines + n, None
            elif doc:
                yield line + 1, doc, n
                line += n
        if len(rest) > MAX_DOC_BYTES:
            # drop the document's text so far, keeping a final newline: it may be half of the separator
            keep = 1 if rest.endswith(b"\n") else 0
            if long_start is None:
                long_start, long_lines = line + 1, 0
            long_lines += rest.count(b"\n") - keep
            rest = rest[len(rest) - keep:]


def article_docs(chunks, line):
    """The same for WikiText articles: a document starts at a top-level " = Title = " line that follows a
    non-blank line."""
    rest, current, size, start, has_text = b"", [], 0, line + 1, False
    for chunk, eof in chunks:
        data = rest + chunk
        cut = len(data) if eof else data.rfind(b"\n") + 1
        rest = data[cut:]
        for text in data[:cut].splitlines(keepends=True):
            if has_text and ARTICLE_TITLE.match(text):
                yield start, (b"".join(current) if size <= MAX_DOC_BYTES else None), line + 1 - start
                current, size, start, has_text = [], 0, line + 1, False
            if size <= MAX_DOC_BYTES:
                current.append(text)
            size += len(text)
            has_text = has_text or bool(text.strip())
            line += 1
    if current:
        yield start, (b"".join(current) if size <= MAX_DOC_BYTES else None), line + 1 - start


class Reader:
    """Cuts the input files into tasks (see the module comment); text_docs: blank, line, file or article."""

    def __init__(self, files, text_docs, text_field):
        self.files, self.text_docs, self.text_field = files, text_docs, text_field
        self.sizes_before = np.concatenate([[0], np.cumsum([f.size for f in files])]).tolist()

    def items(self, start):
        """ReadItems from Position start to the end of the input."""
        fi = start.file
        while fi < len(self.files):
            f = self.files[fi]
            if f.fmt == "text" and self.text_docs == "file":
                end = fi
                while end < len(self.files) and self.files[end].fmt == "text":
                    end += 1
                yield from self._whole_files(fi, end)
                fi = end
                continue
            skip = start.record if fi == start.file else 0
            yield from self._parquet(fi, f, skip) if f.fmt == "parquet" else self._stream(fi, f, skip)
            fi += 1

    def _done(self, fi):
        return ReadItem(None, Position(fi + 1, 0), self.sizes_before[fi + 1], [])

    # --- text and JSONL -------------------------------------------------------------------------------

    def _stream(self, fi, f, skip):
        stream, line = None, skip
        try:
            stream = ByteStream(f)
            chunks = read_chunks(stream, skip_lines(stream, skip), skip == 0)
            if f.fmt == "jsonl" or self.text_docs == "line":
                tasks = self._line_tasks(fi, f, chunks, skip)
            else:
                docs = (article_docs if self.text_docs == "article" else blank_line_docs)(crlf_chunks(chunks), skip)
                tasks = self._doc_tasks(fi, f, docs, skip)
            for task, line, problems in tasks:
                yield ReadItem(task, Position(fi, line), self.sizes_before[fi] + stream.raw_tell(), problems)
        except READ_ERRORS as e:
            yield ReadItem(None, Position(fi + 1, 0), self.sizes_before[fi + 1],
                           [f"{f.path}: unreadable after line {line} ({describe(e)}): the rest of the file is skipped"])
            return
        finally:
            if stream is not None:
                stream.close()
        yield self._done(fi)

    @staticmethod
    def _line_tasks(fi, f, chunks, line):
        """Whole lines, about CHUNK_BYTES a task; a line over MAX_DOC_BYTES is skipped here."""
        rest, long_start = b"", None
        for chunk, eof in chunks:
            data = rest + chunk
            if long_start is not None:
                end = data.find(b"\n")
                if end < 0 and not eof:
                    rest = b""
                    continue
                data = data[end + 1:] if end >= 0 else b""
                yield None, line + 1, [f"{f.path}:{long_start}: a line longer than {MAX_DOC_BYTES >> 20} MiB: skipped"]
                line, long_start = line + 1, None
            cut = len(data) if eof else data.rfind(b"\n") + 1
            rest = data[cut:]
            if cut > 0:
                piece = data[:cut]
                n = piece.count(b"\n") + (0 if piece.endswith(b"\n") else 1)
                yield Task("lines", fi, line, piece), line + n, []
                line += n
            if len(rest) > MAX_DOC_BYTES:
                long_start, rest = line + 1, b""

    @staticmethod
    def _doc_tasks(fi, f, docs, line):
        """Documents grouped into tasks of about CHUNK_BYTES; one over MAX_DOC_BYTES is reported and skipped."""
        batch, size, problems = [], 0, []
        for first, data, n in docs:
            line += n
            if data is None:
                problems.append(f"{f.path}:{first}: a document longer than {MAX_DOC_BYTES >> 20} MiB: skipped "
                                "(--text-docs line cuts documents at every line)")
            else:
                batch.append((fi, first, data))
                size += len(data)
            if size >= CHUNK_BYTES or problems:
                yield (Task("docs", fi, batch[0][1], batch) if batch else None), line, problems
                batch, size, problems = [], 0, []
        if batch:
            yield Task("docs", fi, batch[0][1], batch), line, []

    def _whole_files(self, fi, end):
        """--text-docs file: text files fi..end-1, one document each, grouped into tasks."""
        batch, size, problems = [], 0, []
        for i in range(fi, end):
            f = self.files[i]
            try:
                stream = ByteStream(f)
                try:
                    data = stream.read(MAX_DOC_BYTES + 1)
                finally:
                    stream.close()
                if len(data) > MAX_DOC_BYTES:
                    problems.append(f"{f.path}: longer than {MAX_DOC_BYTES >> 20} MiB, too long for one document: "
                                    "skipped (--text-docs blank or line cut it)")
                else:
                    data = data[len(codecs.BOM_UTF8):] if data.startswith(codecs.BOM_UTF8) else data
                    batch.append((i, 1, data.replace(b"\r\n", b"\n")))
                    size += len(data)
            except READ_ERRORS as e:
                problems.append(f"{f.path}: unreadable ({describe(e)}): skipped")
            if size >= CHUNK_BYTES or problems or i == end - 1:
                task = Task("docs", batch[0][0], 1, batch) if batch else None
                yield ReadItem(task, Position(i + 1, 0), self.sizes_before[i + 1], problems)
                batch, size, problems = [], 0, []

    # --- Parquet --------------------------------------------------------------------------------------

    def _parquet(self, fi, f, skip):
        import pyarrow as pa
        import pyarrow.parquet as pq
        row = skip
        try:
            pf = pq.ParquetFile(f.path)
            names = pf.schema_arrow.names
            if self.text_field not in names:
                yield ReadItem(None, Position(fi + 1, 0), self.sizes_before[fi + 1],
                               [f"{f.path}: no column '{self.text_field}' (columns: {', '.join(names)}; --text-field "
                                "names it): the file is skipped"])
                return
            kind = pf.schema_arrow.field(self.text_field).type
            if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
                yield ReadItem(None, Position(fi + 1, 0), self.sizes_before[fi + 1],
                               [f"{f.path}: column '{self.text_field}' holds {kind}, not strings: the file is skipped"])
                return
            meta, column_index = pf.metadata, names.index(self.text_field)
            groups, first = [], 0
            for g in range(meta.num_row_groups):
                n = meta.row_group(g).num_rows
                if first + n > skip:
                    groups.append(g)
                else:
                    first += n
            text_bytes = sum(meta.row_group(g).column(column_index).total_uncompressed_size
                             for g in range(meta.num_row_groups))
            batch_rows = max(1, int(CHUNK_BYTES * meta.num_rows / max(text_bytes, 1)))
            row = first
            for batch in pf.iter_batches(batch_size=batch_rows, row_groups=groups, columns=[self.text_field]):
                column = batch.column(0)
                if row < skip:
                    drop = min(skip - row, len(column))
                    column, row = column.slice(drop), row + drop
                if len(column) == 0:
                    continue
                end = row + len(column)
                done = self.sizes_before[fi] + f.size * end // max(meta.num_rows, 1)
                yield ReadItem(Task("rows", fi, row, column), Position(fi, end), done, [])
                row = end
        except READ_ERRORS + (pa.ArrowException,) as e:
            yield ReadItem(None, Position(fi + 1, 0), self.sizes_before[fi + 1],
                           [f"{f.path}: not a readable Parquet file after row {row} ({describe(e)}): the rest of "
                            "the file is skipped"])
            return
        yield self._done(fi)


def describe(e):
    return (e.strerror if isinstance(e, OSError) and e.strerror else str(e)) or type(e).__name__

# ---------------------------------------------------------------------------------------------------
# the worker: a task's documents, then their tokens (or their words, for the word level vocabulary)

_worker = {}


def worker_init(files, text_field, tokenizer_spec):
    """Pool initializer: Ctrl-C is the main process's to handle, and a worker whose main process is gone (killed)
    exits; one tokenizer per worker (None: words only)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread per worker: the pool is the parallelism
    from prepro_tokenizers import make_tokenizer
    _worker["files"] = files
    _worker["field"] = text_field
    _worker["tokenizer"] = make_tokenizer(tokenizer_spec) if tokenizer_spec else None


def _exit_with_parent(parent):
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)


# tokens (shard dtype) and lengths of the documents, or words (for each document its new_words()); the
# input file and characters of each document; bad records as "where: problem"; empty documents skipped
Result = collections.namedtuple("Result", "tokens lengths words files chars bad empty")


def worker_task(task):
    texts, files, bad, empty = task_documents(task, _worker["files"], _worker["field"])
    chars = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    tokenizer = _worker["tokenizer"]
    if tokenizer is None:
        from prepro_tokenizers import new_words
        return Result(None, None, [new_words(t) for t in texts], np.array(files, dtype=np.int64), chars, bad, empty)
    tokens, lengths = tokenizer.encode_docs(texts)
    return Result(tokens, lengths, None, np.array(files, dtype=np.int64), chars, bad, empty)


def task_documents(task, files, field):
    """(texts, file index of each, bad records, number of empty documents) of a task."""
    texts, where, bad, empty = [], [], [], 0
    if task.kind == "rows":
        path = files[task.file].path
        for i, value in enumerate(task.payload.to_pylist()):
            if value is None:
                bad.append(f"{path}: row {task.first + i}: '{field}' is null")
            elif len(value) > MAX_DOC_BYTES:
                bad.append(f"{path}: row {task.first + i}: longer than {MAX_DOC_BYTES >> 20} MiB")
            elif value:
                texts.append(value)
                where.append(task.file)
            else:
                empty += 1
        return texts, where, bad, empty
    if task.kind == "lines":
        lines = task.payload.split(b"\n")
        if task.payload.endswith(b"\n"):
            lines.pop()
        docs = [(task.file, task.first + 1 + i, line) for i, line in enumerate(lines)]
    else:
        docs = task.payload
    for fi, line, data in docs:
        path = files[fi].path
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            bad.append(f"{path}:{line}: not UTF-8 (byte 0x{data[e.start]:02x} at byte {e.start + 1} of the "
                       f"{'line' if task.kind == 'lines' else 'document'})")
            continue
        if files[fi].fmt == "jsonl":
            if not text.strip():
                continue
            text, problem = json_text(text, field)
            if problem:
                bad.append(f"{path}:{line}: {problem}")
                continue
        elif task.kind == "lines":
            text = text.rstrip("\r")
            if not text.strip():
                text = ""
        if text:
            texts.append(text)
            where.append(fi)
        else:
            empty += 1
    return texts, where, bad, empty


def json_text(line, field):
    """(text, None) of a JSONL record, or (None, problem)."""
    try:
        record = json.loads(line)
    except ValueError as e:
        return None, f"not JSON ({getattr(e, 'msg', e)}, column {getattr(e, 'colno', '?')})"
    if not isinstance(record, dict):
        return None, f"a JSON {type(record).__name__}, not an object"
    if field not in record:
        return None, f"no '{field}' field (fields: {', '.join(list(record)[:8])}; --text-field names it)"
    text = record[field]
    if not isinstance(text, str):
        return None, f"'{field}' is a JSON {type(text).__name__}, not a string"
    return text, None
