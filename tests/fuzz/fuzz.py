#!/usr/bin/env python3
"""
Hostile-input fuzzing of train_ssd, built with AddressSanitizer and UBSan (make fuzz builds
build/asan/train_ssd and runs this). Each case runs the trainer on a tiny model (well under a second) with
random and mutated flags, configs, token shards, model files, checkpoint directories (state files, markers),
tokenizers, task files, output directories, special files (named pipes, directories, devices) or signals,
and judges it:

  crash       killed by a signal it was not sent, or an exit status other than 0, 1, 3 (non-finite) or 75
              (stopped by a signal)
  sanitizer   AddressSanitizer or UBSan reported something (the build stops at the first report)
  hang        still running after --timeout seconds (then killed)
  nan_exit_0  exit 0 with a non-finite loss, gradient norm, val or test loss in the output (a step that
              says it was skipped is not a result)
  wrapped     exit 0 with another micro-batch, sequence length, step count or total batch than the flags
              asked for
  silent      exit 1 without an error message
  wrong       a case's own check failed (a signal-stopped run resumed to other losses than an
              uninterrupted one, or a refusal that was expected did not come)

Every finding keeps its case directory under --out (default fuzz_findings/) with repro.sh (the command, run
from that directory), finding.txt (what was seen) and the files the case used. Values that the trainer must
accept but that only make a run long or large (a billion steps, a vocabulary of 2^24) are left out of the
value lists: they are not hostile, and the time limit would report them as hangs.

The last line is "cases N crashes N hangs N sanitizer N nan_exit_0 N wrapped N silent N wrong N"; the exit
status is 1 if there was any finding.

  python3 tests/fuzz/fuzz.py --binary build/asan/train_ssd --seconds 600 --jobs 2
  python3 tests/fuzz/fuzz.py --binary build/asan/train_ssd --cases 200 --seed 1
"""
import argparse
import concurrent.futures
import json
import os
import random
import re
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib

KINDS = ("crash", "hang", "sanitizer", "nan_exit_0", "wrapped", "silent", "wrong")
EXPECTED_STATUS = (0, 1, 3, 75)
SANITIZER = re.compile(r"ERROR: AddressSanitizer|runtime error:|ERROR: LeakSanitizer|SUMMARY: UndefinedBehavior")
NONFINITE = re.compile(r"(?<![\w.])[-+]?(nan|inf)(?![\w])", re.IGNORECASE)
# the results of a run: a step's loss and gradient norm, a val loss, an eval line's loss (perplexities are
# exp(loss) and may overflow to inf for a finite loss)
RESULTS = re.compile(r"^step +\d+/\d+ \| loss (\S+) \| norm (\S+)|^val loss (\S+)|^eval \S+ loss (\S+)")
PLAN = re.compile(r"^B (\d+) T (\d+) ranks (\d+) \| grad accum (\d+) \| tokens per step (\d+) \| steps (\d+)$", re.M)
ERROR_TEXT = re.compile(r"error|bad value|unknown flag|needs a value|unexpected argument|needs an output dir|"
                        r"cannot resume|give one of them|tokens per micro-batch", re.IGNORECASE)

VOCAB = 32
BASE_CONFIG = {"name": "fuzz", "d_model": 8, "n_layer": 1, "vocab_size": VOCAB, "pad_vocab_multiple": 8,
               "d_state": 4, "d_conv": 4, "expand": 2, "headdim": 4, "ngroups": 1, "chunk_size": 4}
# the run every case starts from (paths relative to the case directory)
BASE_FLAGS = ["-e", "model.json", "-i", "train_*.bin", "-j", "val_*.bin", "-b", "2", "-t", "8", "-x", "2", "-v", "2",
              "-m", "1", "-g", "0", "-th", "1"]
# the run that wrote the base checkpoint (checkpoint cases resume it: the settings must match)
CKPT_FLAGS = ["-e", "model.json", "-i", "train_*.bin", "-j", "val_*.bin", "-b", "2", "-t", "8", "-x", "4", "-v", "0",
              "-g", "0", "-th", "1"]
# signal cases: long enough to be interrupted (compared with one uninterrupted reference run)
SIGNAL_FLAGS = ["-e", "model.json", "-i", "train_*.bin", "-j", "val_*.bin", "-b", "2", "-t", "32", "-x", "24",
                "-v", "0", "-g", "0", "-th", "1"]

BAD_INTS = ["-2", "-1", "0", "65537", "1048577", "16777217", "1000000001", "2147483647", "2147483648", "4294967296",
            "4294967297", "9223372036854775807", "9223372036854775808", "-2147483648", "-9223372036854775809",
            "1e3", "0x10", "1.5", "", "abc", "inf", "nan", "-", "+-1", "99999999999999999999999999"]
BAD_FLOATS = ["-1", "-1e-45", "1e309", "-1e309", "inf", "-inf", "nan", "-nan", "infinity", "1e38", "3.5e38", "",
              "x", "1e", "--1", "0x", "1,5", "1e-400"]
# per flag: values that must be accepted and keep a run short
GOOD = {
    "b": ["1", "2", "3", "4", "65536"], "t": ["1", "2", "5", "8", "16", "1048576", "+8", "08"],
    "d": ["-1", "16", "32", "48", "17", "1125899906842624", "16777216"], "x": ["-1", "0", "1", "2", "3"],
    "l": ["0", "1e-3", "3e-3", "10", "1e-45", "0x1p-3"], "u": ["0", "1", "5", "1000000000"],
    "q": ["0", "0.5", "1", "1e-30"], "c": ["0", "0.1", "100"], "C": ["0", "1", "1e6", "1e-30"],
    "nf": ["1", "2", "5", "1000000"], "v": ["0", "1", "2", "1000000000"], "m": ["-1", "1", "2", "1000000000"],
    "ec": ["0", "1"], "s": ["0", "1", "1000000000"], "g": ["0", "1", "4", "16"], "st": ["0", "1e-45", "0.7", "100"],
    "sk": ["0", "1", "5", "31", "32", "1000000000"], "n": ["0", "1", "2"], "y": ["0", "1"], "nk": ["0", "1", "2"],
    "nm": ["0", "1", "2", "1000000000"], "ow": ["0", "1"], "R": ["0", "1", "2147483647"], "sh": ["0", "1"],
    "th": ["0", "1", "2", "3"], "z": ["0", "1"], "to": ["1", "30", "86400"], "tc": ["1", "900", "604800"],
}
FLOAT_FLAGS = {"l", "q", "c", "C", "st", "to", "tc"}
# accepted values above these make a run long (steps, generated tokens, threads): left out
COSTLY_ABOVE = {"x": 3, "g": 64, "th": 8}
PATH_FLAGS = ["i", "j", "ti", "o", "e", "tk", "rd"]
# config values: (JSON text) per field kind
CONFIG_INTS = ["0", "-1", "1", "2", "3", "4", "7", "8", "16", "64", "65", "1024", "1025", "65536", "65537",
               "2147483583", "2147483647", "2147483648", "4294967296", "-2147483648", "1e300", "1e999", "-1e999",
               "2.5", "1.0", "-0", "1e-300", "\"8\"", "null", "true", "[]", "{}", "[8]"]
CONFIG_FLOATS = ["0", "-1e-3", "1e-46", "1e-45", "1e-38", "1e-6", "1e-12", "1e-13", "0.001", "1", "10", "10.000001",
                 "1e38", "3.5e38", "1e999", "\"0.1\"", "null", "false", "[]"]
# config fields whose in-range values are cheap (others get only out-of-range or small values)
EXPENSIVE = {"vocab_size": "16777216", "d_model": "65536", "n_layer": "1024"}


def crc32(data):
    return zlib.crc32(data) & 0xFFFFFFFF


def write(path, data, mode="wb"):
    with open(path, mode) as f:
        f.write(data)


def shard_bytes(tokens, version=1, ntok=None, magic=20240520):
    header = [0] * 256
    header[0], header[1], header[2] = magic, version, len(tokens) if ntok is None else ntok
    body = struct.pack("<256i", *[((h + 2**31) % 2**32) - 2**31 for h in header])
    fmt = "<%dH" if version == 1 else "<%dI"
    return body + struct.pack(fmt % len(tokens), *tokens)


def tokenizer_bytes(vocab=VOCAB, eot=-1, kind=0, magic=20251123, version=1, entries=None):
    """A tokenizer.bin whose header says vocab; the entries written are VOCAB letters (or `entries`)."""
    header = [0] * 256
    header[:5] = [magic, version, vocab, eot, kind]
    out = [struct.pack("<256i", *[((h + 2**31) % 2**32) - 2**31 for h in header])]
    for text in entries if entries is not None else [bytes([65 + i % 26]) for i in range(VOCAB)]:
        out.append(struct.pack("<I", len(text)) + text)
    return b"".join(out)


def task_bytes(rng, kind=0, vocab=VOCAB, tokenizer=b""):
    """A task file (data/task.h) of a few multiple-choice (kind 0) or last-word (kind 1) items."""
    body, items = [], rng.randint(1, 4)
    for _ in range(items):
        choices = 1 if kind == 1 else rng.randint(2, 4)
        context = [rng.randrange(vocab) for _ in range(rng.randint(1, 12))]
        body.append(struct.pack("<III", rng.randrange(choices), choices, len(context)))
        body.append(struct.pack("<%dI" % len(context), *context))
        for _ in range(choices):
            ending = [rng.randrange(vocab) for _ in range(rng.randint(1, 4))]
            body.append(struct.pack("<I%dI" % len(ending), len(ending), *ending))
    body = b"".join(body)
    header = (b"SSDTASK\0" + struct.pack("<IIIIQ", 1, kind, items, vocab, len(body)) + tokenizer.ljust(32, b"\0") +
              struct.pack("<I", crc32(body)))
    return header + struct.pack("<I", crc32(header)) + body


def task_fix_crcs(data):
    if len(data) < 72:
        return data
    data = bytearray(data)
    struct.pack_into("<I", data, 64, crc32(bytes(data[72:])))
    struct.pack_into("<I", data, 68, crc32(bytes(data[:68])))
    return bytes(data)


# ---- model and state files (formats in model/model_file.h and train/checkpoint.h), with checksums fixed ----

def model_fix_crcs(data):
    if len(data) < 128:
        return data
    data = bytearray(data)
    json_bytes = struct.unpack_from("<I", data, 112)[0]
    json_end = min(len(data), 128 + json_bytes)
    struct.pack_into("<I", data, 116, crc32(bytes(data[json_end:])))
    struct.pack_into("<I", data, 124, crc32(bytes(data[:124]) + bytes(data[128:json_end])))
    return bytes(data)


def state_fix_crcs(data):
    if len(data) < 104:
        return data
    data = bytearray(data)
    config_bytes, settings_bytes = struct.unpack_from("<II", data, 80)
    end = min(len(data), 104 + config_bytes + settings_bytes)
    struct.pack_into("<I", data, 88, crc32(bytes(data[end:])))
    struct.pack_into("<I", data, 96, crc32(bytes(data[:96]) + bytes(data[104:end])))
    return bytes(data)


INTERESTING_U64 = [0, 1, 2, 3, 4, 7, 8, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x100000000, 2**62, 2**63 - 1, 2**63,
                   2**64 - 1]
FLOAT_BITS = [0x7FC00000, 0xFFC00000, 0x7F800000, 0xFF800000, 0x7F7FFFFF, 0x00000001, 0x80000000, 0x501502F9]


def mutate_floats(rng, data, start, count):
    """Sets a few fp32 values of data[start:start + 4 count] to NaN, infinities, huge or tiny values."""
    data = bytearray(data)
    for _ in range(rng.choice([1, 1, 2, 5, count])):
        if count <= 0:
            break
        i = rng.randrange(count)
        struct.pack_into("<I", data, start + 4 * i, rng.choice(FLOAT_BITS))
    return bytes(data)


def mutate_bytes(rng, data):
    """Random bit flips, byte sets, truncation, extension or an integer field set to an interesting value."""
    data = bytearray(data)
    op = rng.randrange(6)
    if op == 0 and data:
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif op == 1 and data:
        return bytes(data[:rng.randrange(len(data))])
    elif op == 2:
        data += bytes(rng.randrange(256) for _ in range(rng.choice([1, 7, 100])))
    elif op == 3 and len(data) >= 8:
        at = rng.randrange(0, min(len(data) - 8, 160) + 1)
        struct.pack_into("<Q", data, at, rng.choice(INTERESTING_U64))
    elif op == 4 and len(data) >= 4:
        at = rng.randrange(0, min(len(data) - 4, 160) + 1) & ~3
        struct.pack_into("<I", data, at, rng.choice(INTERESTING_U64) & 0xFFFFFFFF)
    elif data:
        data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data)


# ---- the fuzzing session ----

class Session:
    def __init__(self, args):
        self.args = args
        self.binary = os.path.abspath(args.binary)
        self.root = tempfile.mkdtemp(prefix="ssd_fuzz_")
        self.base = os.path.join(self.root, "base")
        self.out = os.path.abspath(args.out)
        self.counts = {k: 0 for k in KINDS}
        self.statuses = {}  # exit status -> cases
        self.cases = 0
        self.lock = threading.Lock()
        self.env = dict(os.environ, OMP_NUM_THREADS="1",
                        ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:allocator_may_return_null=1:"
                                     "max_allocation_size_mb=8192",
                        UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
        for name in ("RANK", "WORLD_SIZE", "SLURM_STEP_NUM_TASKS", "OMPI_COMM_WORLD_SIZE"):
            self.env.pop(name, None)

    def setup(self):
        os.makedirs(self.base)
        rng = random.Random(12345)
        tokens = lambda n: [rng.randrange(VOCAB) for _ in range(n)]
        write(os.path.join(self.base, "train_000000.bin"), shard_bytes(tokens(600)))
        write(os.path.join(self.base, "train_000001.bin"), shard_bytes(tokens(400), version=2))
        write(os.path.join(self.base, "val_000000.bin"), shard_bytes(tokens(200)))
        write(os.path.join(self.base, "test_000000.bin"), shard_bytes(tokens(150)))
        write(os.path.join(self.base, "tokenizer.bin"), tokenizer_bytes())
        write(os.path.join(self.base, "model.json"), json.dumps(BASE_CONFIG).encode())
        self.zstd = shutil.which("zstd")
        if self.zstd:
            subprocess.run([self.zstd, "-q", "-f", "-o", os.path.join(self.base, "ztrain_000000.bin.zst"),
                            os.path.join(self.base, "train_000000.bin")], check=True)
        status, out, err, _ = self.run_trainer(self.base, CKPT_FLAGS + ["-n", "2", "-o", "ckpt"], 120)
        if status != 0:
            sys.exit(f"fuzz: the base checkpoint run failed ({status}): {err[-2000:]}")
        shutil.copy(os.path.join(self.base, "ckpt", "model_00000004.bin"), os.path.join(self.base, "model.bin"))
        status, out, err, _ = self.run_trainer(self.base, SIGNAL_FLAGS, 120)
        if status != 0:
            sys.exit(f"fuzz: the signal reference run failed ({status}): {err[-2000:]}")
        self.signal_reference = final_steps(out)

    def run_trainer(self, cwd, argv, timeout, send=None):
        """Runs the trainer; send: [(delay s, signal)] sent while it runs. Returns (status, out, err, timed_out)."""
        process = subprocess.Popen([self.binary] + argv, cwd=cwd, env=self.env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True)
        timers = [threading.Timer(delay, lambda s=sig: process.poll() is None and process.send_signal(s))
                  for delay, sig in (send or [])]
        for t in timers:
            t.start()
        try:
            out, err = process.communicate(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            out, err = process.communicate()
            timed_out = True
        for t in timers:
            t.cancel()
        return process.returncode, out.decode(errors="replace"), err.decode(errors="replace"), timed_out

    def new_case_dir(self, index):
        d = os.path.join(self.root, "case_%07d" % index)
        os.makedirs(d)
        for name in os.listdir(self.base):
            src = os.path.join(self.base, name)
            if os.path.isfile(src):
                shutil.copy(src, d)
        return d

    def run_case(self, index):
        rng = random.Random(self.args.seed * 1000003 + index)
        d = self.new_case_dir(index)
        case = Case(self, rng, d)
        try:
            kinds = [k for k in GENERATOR_WEIGHTS if not self.args.only or k in self.args.only.split(",")]
            GENERATORS[rng.choice(kinds)](case)
            status, out, err, timed_out = self.run_trainer(d, case.argv, self.args.timeout, case.send)
            kind, why = judge(case, status, out, err, timed_out)
            if kind is None and case.after is not None:
                kind, why = case.after(status, out, err)
        except Exception as e:  # a bug of the harness itself is reported, not hidden
            status, out, err, kind, why = -999, "", "", "crash", f"harness error: {e!r}"
        with self.lock:
            self.cases += 1
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if kind:
                self.counts[kind] += 1
        if kind:
            self.keep(case, index, kind, why, status, out, err)
        shutil.rmtree(d, ignore_errors=True)
        return kind

    def keep(self, case, index, kind, why, status, out, err):
        dest = os.path.join(self.out, "%s_seed%d_case%07d" % (kind, self.args.seed, index))
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(case.dir, dest, symlinks=True, ignore_dangling_symlinks=True,
                        ignore=lambda d, names: [n for n in names if is_special(os.path.join(d, n))])
        setup = "".join(line + "\n" for line in case.setup)
        write(os.path.join(dest, "repro.sh"),
              ("#!/usr/bin/env bash\n# %s: %s\ncd \"$(dirname \"$0\")\"\n%s%s %s\n" %
               (kind, why, setup, shlex.quote(self.binary), " ".join(shlex.quote(a) for a in case.argv))).encode())
        write(os.path.join(dest, "finding.txt"),
              ("%s: %s\nexit status %s\nsignals sent: %s\n--- stdout (end) ---\n%s\n--- stderr (end) ---\n%s\n" %
               (kind, why, status, case.send, out[-4000:], err[-8000:])).encode())
        print("finding: %s (%s): %s" % (kind, why, dest), flush=True)


def is_special(path):
    return os.path.exists(path) and not os.path.isfile(path) and not os.path.isdir(path)


def final_steps(out):
    """The step lines without their timing, for comparing runs."""
    return [re.sub(r" \| [0-9.]+ ms.*", "", l) for l in out.splitlines() if l.startswith("step ")]


class Case:
    def __init__(self, session, rng, d):
        self.session, self.rng, self.dir = session, rng, d
        self.argv = list(BASE_FLAGS)
        self.send = []            # [(delay, signal)]
        self.setup = []           # shell lines that recreate special files for repro.sh
        self.after = None         # extra check: (status, out, err) -> (kind, why)
        self.expect_refusal = False

    def path(self, name):
        return os.path.join(self.dir, name)

    def set_flag(self, flag, value):
        """Replaces the flag's value (or adds it)."""
        if "-" + flag in self.argv:
            i = self.argv.index("-" + flag)
            self.argv[i + 1] = value
        else:
            self.argv += ["-" + flag, value]

    def special(self, name):
        """Makes a special file: a named pipe, a directory, a link to a device or to a pipe, or an empty file."""
        kind = self.rng.choice(["fifo", "dir", "null", "zero", "fifolink", "empty", "dangling"])
        p = self.path(name)
        if kind == "fifo":
            os.mkfifo(p)
            self.setup.append("mkfifo %s" % shlex.quote(name))
        elif kind == "dir":
            os.mkdir(p)
            self.setup.append("mkdir -p %s" % shlex.quote(name))
        elif kind in ("null", "zero"):
            os.symlink("/dev/" + kind, p)
            self.setup.append("ln -sf /dev/%s %s" % (kind, shlex.quote(name)))
        elif kind == "fifolink":
            os.mkfifo(p + ".pipe")
            os.symlink(os.path.basename(p) + ".pipe", p)
            self.setup.append("mkfifo %s.pipe; ln -sf %s.pipe %s" % (shlex.quote(name),
                                                                     shlex.quote(os.path.basename(name)),
                                                                     shlex.quote(name)))
        elif kind == "dangling":
            os.symlink("does-not-exist", p)
            self.setup.append("ln -sf does-not-exist %s" % shlex.quote(name))
        else:
            write(p, b"")
        return kind


# ---- case generators ----

def gen_flags(case):
    """One to four flags set to good, bad or extreme values."""
    rng = case.rng
    for _ in range(rng.randint(1, 4)):
        flag = rng.choice(list(GOOD))
        value = rng.choice(GOOD[flag])
        if rng.random() < 0.55:
            value = rng.choice(BAD_FLOATS if flag in FLOAT_FLAGS else BAD_INTS)
            if flag in COSTLY_ABOVE and as_int(value) is not None and COSTLY_ABOVE[flag] < as_int(value) <= 10**9:
                value = str(10**9 + 1)
        case.set_flag(flag, value)
    if "-o" in case.argv or rng.random() < 0.3:
        case.set_flag("o", "out")
    if "-y" in case.argv and case.argv[case.argv.index("-y") + 1] == "1" and rng.random() < 0.5:
        shutil.copytree(os.path.join(case.session.base, "ckpt"), case.path("out"))


def gen_chaos(case):
    """A random argument list of flag names, values and stray words."""
    rng = case.rng
    words = ["-" + f for f in list(GOOD) + PATH_FLAGS] + ["-", "--", "-h0", "-zz", "x", "", "-b", "--help=1"]
    values = sum(GOOD.values(), []) + BAD_INTS + BAD_FLOATS + ["model.json", "train_*.bin", "out"]
    values = [v for v in values if not (as_int(v) is not None and 3 < as_int(v) <= 10**9)]  # a -x of that is long
    case.argv = [rng.choice(words + values) for _ in range(rng.randint(0, 7))]
    if rng.random() < 0.7:
        case.argv = list(BASE_FLAGS) + case.argv
    if "-h" in case.argv or "--help" in case.argv:
        case.argv = [a for a in case.argv if a not in ("-h", "--help")]


def config_text(rng):
    cfg = {k: json.dumps(v) for k, v in BASE_CONFIG.items()}
    if rng.random() < 0.3:
        cfg["a_structure"] = rng.choice(['"diagonal"', '"scalar"', '"dense"', "1", "null"])
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(10)
        field = rng.choice([k for k in BASE_CONFIG if k != "name"])
        if op < 5:
            values = [v for v in CONFIG_INTS if v != EXPENSIVE.get(field)]
            cfg[field] = rng.choice(values)
        elif op == 5:
            cfg[rng.choice(["dt_min", "dt_max", "dt_init_floor", "norm_eps"])] = rng.choice(CONFIG_FLOATS)
        elif op == 6:
            cfg.pop(field, None)
        elif op == 7:
            cfg[rng.choice(["d_modle", "bias", "", "name"])] = rng.choice(["1", '"x"', "null"])
        elif op == 8:
            cfg["name"] = rng.choice(['"%s"' % ("n" * 200), "1", '"\\u0000"', '"\\ud800"'])
        else:
            cfg["tokenizer"] = rng.choice(['"gpt2"', '"%s"' % ("t" * 64), "[]"])
    text = "{" + ",".join('"%s":%s' % (k, v) for k, v in cfg.items()) + "}"
    form = rng.randrange(12)
    if form == 0:
        text = text[:rng.randrange(len(text))]
    elif form == 1:
        text = text[:-1] + ',"d_model":%s}' % rng.choice(CONFIG_INTS)  # a duplicate key
    elif form == 2:
        text = "[" * 2000 + "]" * 2000
    elif form == 3:
        text = rng.choice(["", "null", "1", '"x"', "{}", "\x00\xff", "{" * 100000])
    return text.encode("utf-8", errors="surrogateescape")


def gen_config(case):
    """A config with mutated fields, types or syntax (a fresh init from it)."""
    write(case.path("model.json"), config_text(case.rng))
    if case.rng.random() < 0.3:
        case.set_flag("g", "4")
    if case.rng.random() < 0.2:
        case.set_flag("x", "0")


def gen_shard(case):
    """A mutated token shard (raw or zstd) among the train, val or test shards."""
    rng = case.rng
    which = rng.choice(["train", "val", "test"])
    name = {"train": "train_000000.bin", "val": "val_000000.bin", "test": "test_000000.bin"}[which]
    data = open(case.path(name), "rb").read()
    op = rng.randrange(5)
    if op == 0:
        data = shard_bytes([rng.choice([0, VOCAB - 1, VOCAB, 65535]) for _ in range(rng.choice([0, 1, 2, 17, 300]))],
                           version=rng.choice([1, 2]), ntok=rng.choice([None, 0, -1, 1, 2**31 - 1, 301]))
    elif op == 1:
        data = shard_bytes([1] * 50, magic=rng.choice([0, 20240521, -1]), version=rng.choice([0, 1, 3]))
    else:
        data = mutate_bytes(rng, data)
    if case.session.zstd and rng.random() < 0.3:
        raw = case.path("raw.tmp")
        write(raw, data)
        zname = name + ".zst"
        subprocess.run([case.session.zstd, "-q", "-f", "-o", case.path(zname), raw], check=True)
        os.remove(raw)
        os.remove(case.path(name))
        if rng.random() < 0.5:
            write(case.path(zname), mutate_bytes(rng, open(case.path(zname), "rb").read()))
    else:
        write(case.path(name), data)
    if which == "test":
        case.set_flag("ti", "test_*.bin*")
    case.set_flag("i", "train_*.bin*")
    case.set_flag("j", "val_*.bin*")
    if rng.random() < 0.3:
        case.set_flag("m", "-1")
    if rng.random() < 0.3:
        case.set_flag("x", "-1")


def gen_model_file(case):
    """A model file (-e) with mutated header fields, config JSON, tensor values or size; checksums fixed or not."""
    rng = case.rng
    data = open(case.path("model.bin"), "rb").read()
    json_bytes = struct.unpack_from("<I", data, 112)[0]
    start = 128 + json_bytes
    op = rng.randrange(4)
    if op == 0:
        data = mutate_floats(rng, data, start, (len(data) - start) // 4)
    elif op == 1:
        text = config_text(rng)
        data = data[:112] + struct.pack("<I", len(text)) + data[116:128] + text + data[start:]
    else:
        data = mutate_bytes(rng, data)
    if rng.random() < 0.8:
        data = model_fix_crcs(data)
    write(case.path("model.bin"), data)
    case.set_flag("e", "model.bin")
    case.set_flag("x", rng.choice(["0", "1", "2"]))
    if rng.random() < 0.3:
        case.set_flag("g", "4")


def gen_checkpoint(case):
    """A copy of the base checkpoint directory with a mutated state file, marker or model file, resumed."""
    rng = case.rng
    shutil.copytree(os.path.join(case.session.base, "ckpt"), case.path("out"))
    case.argv = CKPT_FLAGS + ["-n", "2", "-o", "out", "-y", "1"]
    step = rng.choice(["00000004", "00000004", "00000002"])
    if step == "00000002":
        for name in os.listdir(case.path("out")):
            if "00000004" in name:
                os.remove(os.path.join(case.path("out"), name))
    target = rng.choice(["state", "state", "state", "done", "model"])
    if target == "state":
        path = case.path("out/state_%s_00000.bin" % step)
        data = open(path, "rb").read()
        config_bytes, settings_bytes = struct.unpack_from("<II", data, 80)
        start = 104 + config_bytes + settings_bytes
        count = struct.unpack_from("<Q", data, 64)[0]
        op = rng.randrange(4)
        if op == 0:
            data = mutate_floats(rng, data, start, min(2 * count, (len(data) - start) // 4))
        elif op == 1:
            settings = json.loads(data[104 + config_bytes:start])
            settings[rng.choice(list(settings))] = rng.choice([1e300, -1e300, 2**31, 2**63, -1, 0.5, "x", None])
            text = json.dumps(settings).encode()
            data = data[:84] + struct.pack("<I", len(text)) + data[88:104 + config_bytes] + text + data[start:]
        elif op == 2 and len(data) > start + 8 * count:  # the data loader's state
            data = data[:start + 8 * count] + mutate_bytes(rng, data[start + 8 * count:])
        else:
            data = mutate_bytes(rng, data)
        if rng.random() < 0.85:
            data = state_fix_crcs(data)
        write(path, data)
    elif target == "done":
        path = case.path("out/DONE_%s" % step)
        text = open(path).read().split()
        if rng.random() < 0.5 and len(text) == 8:
            text[rng.choice([1, 3, 5, 7])] = rng.choice(["0", "-1", "2", "1048576", "1048577", "4294967296",
                                                         "18446744073709551616", "x", ""])
            write(path, (" ".join(text) + "\n").encode())
        elif rng.random() < 0.5:
            os.remove(path)
            case.special("out/DONE_%s" % step)
        else:
            write(path, mutate_bytes(rng, open(path, "rb").read()))
    else:
        path = case.path("out/model_%s.bin" % step)
        data = open(path, "rb").read()
        start = 128 + struct.unpack_from("<I", data, 112)[0]
        data = model_fix_crcs(mutate_floats(rng, data, start, (len(data) - start) // 4) if rng.random() < 0.6
                              else mutate_bytes(rng, data))
        write(path, data)
        # the marker names the model's checksum: follow it, so the file is read to its values
        done = case.path("out/DONE_%s" % step)
        fields = open(done).read().split()
        if len(fields) == 8:
            fields[7] = str(struct.unpack_from("<I", data, 116)[0]) if len(data) >= 120 else "0"
            write(done, (" ".join(fields) + "\n").encode())


def gen_tokenizer(case):
    """A mutated tokenizer file for the samples (-tk)."""
    rng = case.rng
    op = rng.randrange(3)
    if op == 0:
        data = tokenizer_bytes(vocab=rng.choice([0, -1, 1, VOCAB, 2**31 - 1, 65536]), eot=rng.choice([-2, -1, 0, 31, 32]),
                               kind=rng.choice([-1, 0, 3, 4]), magic=rng.choice([20251123, 0]),
                               version=rng.choice([1, 2]))
    elif op == 1:
        data = tokenizer_bytes(entries=[b"x" * rng.choice([0, 1, 65536]) for _ in range(VOCAB)])
        data = data[:256 * 4 + 4] + struct.pack("<I", rng.choice([65537, 2**32 - 1])) + data[256 * 4 + 8:]
    else:
        data = mutate_bytes(rng, open(case.path("tokenizer.bin"), "rb").read())
    write(case.path("tok.bin"), data)
    case.set_flag("tk", "tok.bin")
    case.set_flag("g", rng.choice(["1", "4"]))


def gen_task(case):
    """A downstream task file (-ta), valid or with mutated header fields, items or tokens (checksums fixed or not),
    scored after training or alone (-x 0), with the rows written (-tp) or not."""
    rng = case.rng
    data = task_bytes(rng, kind=rng.choice([0, 0, 1]), vocab=rng.choice([VOCAB, VOCAB, 16, VOCAB + 1]),
                      tokenizer=rng.choice([b"", b"", b"gpt2", b"bytes"]))
    if rng.random() < 0.7:
        data = mutate_bytes(rng, data)
        if rng.random() < 0.8:
            data = task_fix_crcs(data)
    write(case.path("task.bin"), data)
    case.set_flag("ta", "task.bin")
    case.set_flag("x", rng.choice(["0", "1", "2"]))
    if rng.random() < 0.4:
        case.set_flag("tv", rng.choice(["1", "2"]))
    if rng.random() < 0.4:
        case.set_flag("tp", "rows.tsv")
    case.set_flag("t", rng.choice(["8", "16", "4"]))


def gen_special(case):
    """A named pipe, directory, device or dangling link where a file or directory is expected."""
    rng = case.rng
    flag = rng.choice(["e", "tk", "i", "j", "ti", "o", "ta", "tp", "state", "model", "outfile"])
    if flag == "outfile":  # a file the run writes (or reads back) in its output dir
        shutil.copytree(os.path.join(case.session.base, "ckpt"), case.path("out"))
        case.argv = CKPT_FLAGS + ["-n", "2", "-o", "out"] + rng.choice([["-y", "1"], ["-ow", "1"], []])
        name = "out/" + rng.choice(["main.log", "main.log.tmp", "model_00000002.bin.tmp", "state_00000002_00000.bin.tmp",
                                    "DONE_00000004.tmp", "tokenizer.bin", "tokenizer.bin.tmp"])
        if os.path.exists(case.path(name)):
            os.remove(case.path(name))
        case.special(name)
        return
    if flag in ("state", "model"):
        shutil.copytree(os.path.join(case.session.base, "ckpt"), case.path("out"))
        case.argv = CKPT_FLAGS + ["-n", "2", "-o", "out", "-y", "1"]
        name = "out/state_00000004_00000.bin" if flag == "state" else "out/model_00000004.bin"
        os.remove(case.path(name))
        case.special(name)
        return
    name = {"e": "x.json", "tk": "x.tok", "i": "sp_train.bin", "j": "sp_val.bin", "ti": "sp_test.bin", "o": "xo",
            "ta": "x.task", "tp": "rows.tsv"}[flag]
    kind = case.special(name)
    if flag in ("i", "j", "ti"):
        case.set_flag(flag, "sp_%s*.bin" % {"i": "train", "j": "val", "ti": "test"}[flag])
    else:
        case.set_flag(flag, name)
    if flag == "tk":
        case.set_flag("g", "4")
    if flag == "tp":
        write(case.path("task.bin"), task_bytes(rng))
        case.set_flag("ta", "task.bin")
    if flag == "o" and kind == "dir":
        case.set_flag("n", "1")


def gen_output_dir(case):
    """An output directory that already holds a run, with or without -y 1 or -ow 1."""
    rng = case.rng
    shutil.copytree(os.path.join(case.session.base, "ckpt"), case.path("out"))
    if rng.random() < 0.3:  # only one file of the old run left, or none
        keep = rng.choice(["main.log", "DONE_00000004", "model_00000002.bin", "state_00000004_00000.bin", None])
        for name in os.listdir(case.path("out")):
            if name != keep:
                os.remove(os.path.join(case.path("out"), name))
    case.argv = CKPT_FLAGS + ["-n", "2", "-o", "out"] + rng.choice([[], [], ["-y", "1"], ["-ow", "1"],
                                                                     ["-ow", "1", "-y", "1"], ["-x", "0"]])
    before = sorted(os.listdir(case.path("out")))
    flags = case.argv

    holds = any(n == "main.log" or re.match(r"(model|state|DONE)_\d", n) for n in before)

    def check(status, out, err):
        fresh = "-y" not in flags and "-ow" not in flags and holds
        if fresh and status == 0:
            return "wrong", "a fresh run into a directory that holds a run was not refused"
        if fresh and sorted(os.listdir(case.path("out"))) != before:
            return "wrong", "a refused run changed the old run's directory"
        return None, None
    case.after = check


def gen_signal(case):
    """A run stopped by SIGINT, SIGTERM or SIGUSR1 at a random moment; a stop must checkpoint, and resuming
    must end with the losses of an uninterrupted run."""
    rng = case.rng
    case.argv = SIGNAL_FLAGS + ["-o", "out"] + rng.choice([[], ["-n", "5"]])
    sig = rng.choice([signal.SIGINT, signal.SIGTERM, signal.SIGUSR1])
    case.send = [(rng.uniform(0.0, 1.0), sig)]
    if rng.random() < 0.2:
        case.send.append((case.send[0][0] + rng.uniform(0.0, 0.05), rng.choice([signal.SIGTERM, signal.SIGUSR1])))
    session = case.session

    def check(status, out, err):
        if -status in {s for _, s in case.send} and not out:
            return None, None  # it came before main() installed the handlers: nothing had started
        if status not in (0, 75):
            return "wrong", "a signal-stopped run exited %s, not 0 or 75" % status
        if status == 0:
            return None, None
        if "stopped by a signal" not in out:
            return "wrong", "exit 75 without saying it stopped"
        s2, out2, err2, t2 = session.run_trainer(case.dir, SIGNAL_FLAGS + ["-o", "out", "-y", "1"] +
                                                 case.argv[len(SIGNAL_FLAGS) + 2:], session.args.timeout)
        if t2 or s2 != 0 or SANITIZER.search(err2):
            return "wrong", "the resumed run exited %s%s: %s" % (s2, " (timed out)" if t2 else "", err2[-500:])
        got = final_steps(out) + final_steps(out2)
        if got != session.signal_reference:
            return "wrong", "interrupted + resumed steps differ from an uninterrupted run"
        return None, None
    case.after = check


def gen_nonfinite(case):
    """Settings that may drive the loss to inf or NaN: steps are skipped, the run stops with 3 or ends finite."""
    rng = case.rng
    case.set_flag("l", rng.choice(["10", "5", "1"]))
    case.set_flag("c", rng.choice(["0", "100", "50"]))
    case.set_flag("C", rng.choice(["0", "1e6"]))
    case.set_flag("x", rng.choice(["3", "8", "12"]))
    case.set_flag("nf", rng.choice(["1", "2", "5"]))
    case.set_flag("v", rng.choice(["0", "1", "4"]))
    if rng.random() < 0.5:
        case.set_flag("o", "out")
        case.set_flag("n", rng.choice(["1", "2"]))


GENERATORS = {"flags": gen_flags, "chaos": gen_chaos, "config": gen_config, "shard": gen_shard,
              "model_file": gen_model_file, "checkpoint": gen_checkpoint, "tokenizer": gen_tokenizer,
              "special": gen_special, "output_dir": gen_output_dir, "signal": gen_signal, "nonfinite": gen_nonfinite,
              "task": gen_task}
GENERATOR_WEIGHTS = (["flags"] * 5 + ["chaos"] * 2 + ["config"] * 5 + ["shard"] * 3 + ["model_file"] * 3 +
                     ["checkpoint"] * 4 + ["tokenizer"] * 2 + ["special"] * 2 + ["output_dir"] * 1 + ["signal"] * 1 +
                     ["nonfinite"] * 2 + ["task"] * 2)


def last_flag(argv, flag):
    """The value the trainer takes for a flag (the last occurrence wins), or None."""
    value = None
    for i, a in enumerate(argv[:-1]):
        if a == "-" + flag:
            value = argv[i + 1]
    return value


def as_int(text):
    try:
        return int(text.strip())
    except (AttributeError, ValueError):
        return None


def judge(case, status, out, err, timed_out):
    """(kind, why) of a finding, or (None, None)."""
    if timed_out:
        return "hang", "still running after %g s" % case.session.args.timeout
    if SANITIZER.search(err):
        return "sanitizer", SANITIZER.search(err).group(0)
    sent = {s for _, s in case.send}
    if status < 0 and -status not in sent:
        return "crash", "killed by signal %d" % -status
    if status >= 0 and status not in EXPECTED_STATUS:
        return "crash", "exit status %d" % status
    if status == 75 and not sent:
        return "crash", "exit status 75 (stopped by a signal) but no signal was sent"
    if status == 1 and not ERROR_TEXT.search(err):
        return "silent", "exit 1 without an error message"
    if status != 0:
        return None, None
    for line in out.splitlines():
        m = RESULTS.match(line)
        if m and "skipped" not in line and any(v is not None and NONFINITE.fullmatch(v) for v in m.groups()):
            return "nan_exit_0", line
    plan = PLAN.search(out)
    if plan and "-y" not in case.argv:
        B, T, ranks, accum, tokens, steps = (int(g) for g in plan.groups())
        want = {"b": B, "t": T, "d": tokens, "x": steps}
        for flag, got in want.items():
            asked = as_int(last_flag(case.argv, flag))
            if asked is None or (flag == "d" and asked == -1) or (flag == "x" and asked == -1):
                continue
            if asked != got:
                return "wrapped", "-%s %s but the run has %d" % (flag, last_flag(case.argv, flag), got)
        if accum < 1 or accum * B * T * ranks != tokens:
            return "wrapped", "grad accum %d x B %d x T %d != tokens per step %d" % (accum, B, T, tokens)
    return None, None


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--binary", default="build/asan/train_ssd", help="the sanitizer build (make fuzz builds it)")
    p.add_argument("--cases", type=int, help="stop after this many cases")
    p.add_argument("--seconds", type=float, help="stop starting cases after this long")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--jobs", type=int, default=2, help="cases run at the same time")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds after which a case counts as a hang")
    p.add_argument("--out", default="fuzz_findings", help="where findings and their reproducers go")
    p.add_argument("--only", help="comma-separated case kinds to run (default all): " + ", ".join(GENERATORS))
    args = p.parse_args()
    if args.only:
        unknown = set(args.only.split(",")) - set(GENERATORS)
        if unknown:
            p.error("--only: unknown case kinds %s" % ", ".join(sorted(unknown)))
    if args.cases is None and args.seconds is None:
        p.error("give --cases or --seconds (or both)")
    if not (os.path.isfile(args.binary) and os.access(args.binary, os.X_OK)):
        p.error("--binary %s: not an executable (make build/asan/train_ssd)" % args.binary)
    session = Session(args)
    try:
        session.setup()
        start, index, next_report = time.time(), 0, 500
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
            pending = set()
            while True:
                more = (args.cases is None or index < args.cases) and \
                       (args.seconds is None or time.time() - start < args.seconds)
                while more and len(pending) < 2 * args.jobs:
                    pending.add(pool.submit(session.run_case, index))
                    index += 1
                    more = (args.cases is None or index < args.cases) and \
                           (args.seconds is None or time.time() - start < args.seconds)
                if not pending:
                    break
                done, pending = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in done:
                    future.result()
                if session.cases >= next_report:
                    next_report += 500
                    print("%d cases, %.0f s, %d findings" % (session.cases, time.time() - start,
                                                            sum(session.counts.values())), flush=True)
    finally:
        shutil.rmtree(session.root, ignore_errors=True)
    c = session.counts
    print("exit statuses: " + ", ".join("%s: %d" % kv for kv in sorted(session.statuses.items())))
    print("cases %d crashes %d hangs %d sanitizer %d nan_exit_0 %d wrapped %d silent %d wrong %d (%.0f s, seed %d)" %
          (session.cases, c["crash"], c["hang"], c["sanitizer"], c["nan_exit_0"], c["wrapped"], c["silent"],
           c["wrong"], time.time() - start, args.seed))
    return 1 if sum(c.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
