#!/usr/bin/env python3
"""
WikiText-2 comparison of SSD-Mamba (diagonal A) against Mamba-2 (scalar A): trains both variants for
several seeds with the same data order per seed, evaluates every target of the val and test splits
(fresh state per window, and state carried across windows), and writes a report: report.md (a table of
perplexities, mean and spread over seeds, parameter counts, tokens/s, wall time) and val_loss.png.

A sweep resumes where it stopped: a run with result.json is skipped, any other run restarts from its
newest checkpoint (the trainer's -y 1). docs/compare.md gives the presets, settings and conventions.
The default output dir is runs/compare/<preset> (runs/ is not tracked by git); the committed sweeps are
in results/wikitext2/<preset> (--out results/wikitext2/<preset> to remake one).

Examples:
  python3 scripts/compare.py --preset quick                       # CPU trainer, 3 seeds, a few minutes
  python3 scripts/compare.py --preset gpt2-medium --trainer ./train_ssdcu
  python3 scripts/compare.py --preset paper --report-only         # rebuild the report from finished runs
"""
import argparse
import concurrent.futures
import glob
import json
import math
import os
import queue
import re
import signal
import statistics
import subprocess
import sys
import threading
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared")
RAW_WIKITEXT = os.path.join(SHARED, "data", "wikitext-2")
SHARD_MAGIC = 20240520
TOKENIZER_MAGIC = 20251123
TOKENIZER_KINDS = {0: "bytes", 1: "gpt2", 2: "neox", 3: "word"}
RAW_SPLIT_FILES = {"val": "valid.txt", "test": "test.txt"}
VARIANT_NAMES = {"scalar": "mamba2", "diagonal": "ssd-mamba"}

# Training settings per preset; every one can be overridden on the command line.
PRESETS = {
    # a first try on the CPU trainer: the paper's small models, 100 steps of 1,024 tokens (5% of an epoch),
    # the first 10,000 targets of val and test; a few minutes for the 6 runs on 2 cores
    "quick": dict(configs=["configs/wikitext2-word-small-mamba2.json", "configs/wikitext2-word-small-ssd.json"],
                  tokenizer="word", data="datasets/wikitext2_word", batch=8, seq_len=128, lr=3e-3, warmup=10,
                  final_lr_frac=0.1, weight_decay=0.01, steps=100, val_every=25, eval_tokens=10000, seeds=3),
    # the paper's small experiment: word level, d_model 64, d_state 16, 2 layers, T 128, B 64, AdamW 1e-3,
    # 10 epochs; a constant learning rate (-q 1) as the paper names no schedule
    "paper": dict(configs=["configs/wikitext2-word-small-mamba2.json", "configs/wikitext2-word-small-ssd.json"],
                  tokenizer="word", data="datasets/wikitext2_word", batch=64, seq_len=128, lr=1e-3, warmup=0,
                  final_lr_frac=1.0, weight_decay=0.01, epochs=10, seeds=5),
    # realistic settings: ~30M (word) and ~39M (GPT-2 BPE) parameters, T 512, warmup + cosine, on the GPU
    "word-medium": dict(configs=["configs/wikitext2-word-medium-mamba2.json", "configs/wikitext2-word-medium-ssd.json"],
                        tokenizer="word", data="datasets/wikitext2_word", batch=16, seq_len=512, lr=6e-4, warmup=100,
                        final_lr_frac=0.1, weight_decay=0.1, epochs=4, seeds=3),
    "gpt2-medium": dict(configs=["configs/wikitext2-gpt2-medium-mamba2.json", "configs/wikitext2-gpt2-medium-ssd.json"],
                        tokenizer="gpt2", data="datasets/wikitext2_gpt2", batch=16, seq_len=512, lr=6e-4, warmup=100,
                        final_lr_frac=0.1, weight_decay=0.1, epochs=4, seeds=3),
    # scaling: d_state x width on GPT-2 tokens, small models and short runs sized so that the 72 runs fit
    # about 6 minutes of one H200 running 8 at a time (--jobs 8); the configs are the gpt2-medium ones with
    # n_layer, d_model and d_state replaced (written to <out>/configs); val and test: their first 50,000 targets
    "gpt2-scaling": dict(configs=["configs/wikitext2-gpt2-medium-mamba2.json", "configs/wikitext2-gpt2-medium-ssd.json"],
                         tokenizer="gpt2", data="datasets/wikitext2_gpt2", batch=16, seq_len=256, lr=3e-3, warmup=30,
                         final_lr_frac=0.1, weight_decay=0.1, steps=300, val_every=100, eval_tokens=50000, seeds=3,
                         sweep_width=[128, 256, 512], sweep_d_state=[16, 32, 64, 128, 256], sweep_layers=4, carried=False,
                         timing_steps=40),
}

STEP_LINE = re.compile(r"^step\s+(\d+)/(\d+) \| loss (\S+) .*\| ([\d.]+) ms \| \d+ tok/s$")
EVAL_LINE = re.compile(r"^eval (val|test) loss (\S+) tokens (\d+) carry ([01])( ppl \S+)?$")
VAL_SECONDS_LINE = re.compile(r"^val loss \S+ \| ppl \S+ \| ([\d.]+) s$")
EVAL_PROGRESS_LINE = re.compile(r"^evaluating (val|test): (\d+)% \((\d+)/(\d+) targets\) \| ([\d.]+) s \| "
                                r"about ([\d.]+) s left$")
PARAMS_LINE = re.compile(r"^parameters: (\d+) \((\d+) with the padded vocab rows\)$")
DEVICE_LINE = re.compile(r"^device: ([^,]+),")
VAL_LOG_LINE = re.compile(r"^s:(\d+) tel:(\S+)$")


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


# ---------------------------------------------------------------------------------------------------
# data and configs

def read_header_ints(path, count):
    """The first `count` int32 of a file, reading through zstd for a .zst shard."""
    nbytes = 4 * count
    if path.endswith(".zst"):
        result = subprocess.run(["zstd", "-dc", path], capture_output=True)
        if result.returncode != 0:
            fail(f"{path}: zstd cannot decompress it: {result.stderr.decode(errors='replace').strip()}")
        data = result.stdout[:nbytes]
    else:
        with open(path, "rb") as f:
            data = f.read(nbytes)
    if len(data) < nbytes:
        fail(f"{path}: truncated header ({len(data)} of {nbytes} bytes)")
    return np.frombuffer(data, dtype="<i4")


def shard_tokens(path):
    header = read_header_ints(path, 3)
    if header[0] != SHARD_MAGIC or header[1] not in (1, 2) or header[2] < 1:
        fail(f"{path}: not a token shard (magic {header[0]}, version {header[1]}, ntok {header[2]})")
    return int(header[2])


def split_shards(data_dir, split):
    pattern = os.path.join(data_dir, f"*_{split}_*.bin*")
    return pattern, sorted(glob.glob(pattern))


def read_tokenizer_info(data_dir):
    path = os.path.join(data_dir, "tokenizer.bin")
    if not os.path.isfile(path):
        fail(f"{path} not found (prepare the data with scripts/prepro.py)")
    header = read_header_ints(path, 5)
    if header[0] != TOKENIZER_MAGIC or int(header[4]) not in TOKENIZER_KINDS:
        fail(f"{path}: not a tokenizer.bin (magic {header[0]}, kind {header[4]})")
    return {"vocab_size": int(header[2]), "kind": TOKENIZER_KINDS[int(header[4])]}


def prepare_data(args):
    """Runs scripts/prepro.py when the data dir has no shards yet."""
    if all(split_shards(args.data, s)[1] for s in ("train", "val", "test")):
        return
    if args.tokenizer is None:
        fail(f"{args.data} has no train/val/test shards; prepare them with scripts/prepro.py or give --tokenizer")
    cmd = [sys.executable, os.path.join(REPO, "scripts", "prepro.py"), "--recipe", "wikitext2", "--tokenizer",
           args.tokenizer, "--input", args.raw, "--out", args.data]
    print("preparing data:", " ".join(cmd), flush=True)
    if subprocess.run(cmd).returncode != 0:
        fail("data preparation failed (see above)")


def count_words(path):
    """WikiText's word count: whitespace-separated tokens plus one <eos> per line (every line, blank
    ones included), which is what the word-level tokenizer of scripts/prepro.py emits."""
    with open(path, "r", encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return sum(len(line.split()) + 1 for line in lines)


def load_variant_configs(paths, vocab_size):
    """{variant: (path, config)}: two configs identical except 'a_structure' (and 'name')."""
    if len(paths) != 2:
        fail("--configs needs exactly two model configs (scalar and diagonal A)")
    configs = {}
    for path in paths:
        try:
            with open(path) as f:
                config = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            fail(f"{path}: cannot read the model config: {e}")
        structure = config.get("a_structure", "scalar")
        if structure not in VARIANT_NAMES:
            fail(f"{path}: field 'a_structure' must be \"scalar\" or \"diagonal\"")
        if config.get("vocab_size") != vocab_size:
            fail(f"{path}: field 'vocab_size' is {config.get('vocab_size')} but the data's tokenizer.bin has "
                 f"{vocab_size} tokens")
        configs[VARIANT_NAMES[structure]] = (path, config)
    if len(configs) != 2:
        fail(f"--configs {paths[0]} {paths[1]}: need one scalar and one diagonal config")
    (pa, a), (pb, b) = configs.values()
    ignored = {"a_structure", "name"}
    differ = sorted(k for k in set(a) | set(b) if k not in ignored and a.get(k) != b.get(k))
    if differ:
        fail(f"{pa} and {pb} must be identical except 'a_structure'; they differ in {', '.join(differ)}")
    return configs


# ---------------------------------------------------------------------------------------------------
# runs

def steps_per_epoch(train_shards, batch, seq_len):
    """Batches per epoch exactly as the loader counts them (data/dataloader.h, one process)."""
    return sum(((shard_tokens(p) - 1) // seq_len) // batch for p in train_shards)


def duration(seconds):
    """A time for progress lines: seconds, minutes or hours."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


TRAINERS = set()  # the trainer processes of this sweep that are running
TRAINERS_LOCK = threading.Lock()
STOP_SIGNALS = []  # the signals this sweep received


def stop_trainers_on_signal():
    """On SIGINT or SIGTERM the trainers this sweep started get SIGTERM: each finishes its step, writes a
    checkpoint and exits (a later sweep resumes it); once they have, the sweep exits with 128 + the signal's
    number. A second signal kills them at once. The trainers run in their own session (run_logged), so a
    Ctrl-C in the terminal reaches them only through here, once, and no trainer starts after the signal."""
    def handler(signum, frame):
        with TRAINERS_LOCK:
            STOP_SIGNALS.append(signum)
            trainers = list(TRAINERS)
        if len(STOP_SIGNALS) > 1:
            for process in trainers:
                process.kill()
            os._exit(128 + signum)
        print(f"{signal.Signals(signum).name}: stopping {len(trainers)} trainer(s) after their current step "
              f"(they checkpoint; run the same command to resume)", file=sys.stderr, flush=True)
        for process in trainers:
            process.send_signal(signal.SIGTERM)
        for process in trainers:
            process.wait()
        os._exit(128 + signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, handler)


class RunPlan:
    """What one run will do, for its time estimates: steps, evaluations and the sizes of the eval splits."""

    def __init__(self, max_steps, val_every, eval_tokens, sweep):
        self.max_steps, self.val_every, self.eval_tokens, self.sweep = max_steps, val_every, eval_tokens, sweep

    def evals_after(self, step):
        """Val evaluations still due after `step` steps (the trainer's -v: every val_every steps and the last)."""
        return sum(1 for s in range(step + 1, self.max_steps + 1) if s % self.val_every == 0 or s == self.max_steps)


def read_log_state(log_path):
    """What a trainer log shows so far: its step lines, the seconds of its val evaluations and the newest
    progress line of an evaluation under way (None once a later line follows it)."""
    steps, val_seconds, progress = [], [], None
    with open(log_path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            m = STEP_LINE.match(line)
            if m:
                steps.append((int(m.group(1)), int(m.group(2)), float(m.group(3)), float(m.group(4))))
                progress = None
                continue
            m = VAL_SECONDS_LINE.match(line)
            if m:
                val_seconds.append(float(m.group(1)))
                progress = None
                continue
            m = EVAL_PROGRESS_LINE.match(line)
            if m:
                progress = m
            elif EVAL_LINE.match(line):
                progress = None
    return steps, val_seconds, progress


def training_status(log_path, plan):
    """A progress line for a training process: its step and loss, and the time left in the run, training
    (mean step time) plus evaluation (the val evaluations still due at the measured time of one, the test
    split and the carried-state evaluation afterwards)."""
    steps, val_seconds, progress = read_log_state(log_path)
    parts = []
    if steps:
        step, total, loss, _ = steps[-1]
        parts.append(f"step {step}/{total}, loss {loss:.4f}")
    if progress:
        parts.append(f"evaluating {progress.group(1)} {progress.group(2)}%")
    if not parts:
        return None
    step = steps[-1][0] if steps else 0
    timed = [ms for _, _, _, ms in steps[1:]] or [ms for _, _, _, ms in steps]  # the first step warms up
    train_left = (plan.max_steps - step) * (sum(timed) / len(timed) / 1000) if timed else None
    eval_left = None
    if val_seconds or progress:
        val_s = statistics.mean(val_seconds) if val_seconds else float(progress.group(5)) + float(progress.group(6))
        test_s = val_s * plan.eval_tokens["test"] / plan.eval_tokens["val"]
        carried = plan.sweep.carried_seconds() or val_s + test_s
        eval_left = plan.evals_after(step) * val_s + test_s + carried + (float(progress.group(6)) if progress else 0.0)
    if train_left is not None and eval_left is not None:
        parts.append(f"about {duration(train_left + eval_left)} left in this run (training {duration(train_left)}, "
                     f"evaluation {duration(eval_left)})")
    elif train_left is not None:
        parts.append(f"about {duration(train_left)} of training left, plus evaluation")
    return ", ".join(parts)


def evaluation_status(log_path, plan):
    """A progress line for the carried-state evaluation process (val, then test)."""
    _, _, progress = read_log_state(log_path)
    if progress is None:
        return None
    split, left = progress.group(1), float(progress.group(6))
    if split == "val":
        rate = float(progress.group(5)) / max(1, int(progress.group(3)))
        left += rate * plan.eval_tokens["test"]
    return f"evaluating {split} {progress.group(2)}%, about {duration(left)} left in this run"


def run_logged(cmd, log_path, attempts_path, label, progress_every, env=None, status=None):
    """Runs cmd with its output in log_path; records the start time for the wall-time total. Every
    progress_every seconds prints status(log_path) (the run's progress and the time left), if any.
    Returns the seconds it ran."""
    attempts = json.load(open(attempts_path)) if os.path.exists(attempts_path) else []
    attempts.append({"log": os.path.basename(log_path), "start": time.time()})
    with open(attempts_path, "w") as f:
        json.dump(attempts, f)
    start = time.time()
    with open(log_path, "w") as log:
        log.write("# " + " ".join(cmd) + "\n")
        log.flush()
        with TRAINERS_LOCK:
            if STOP_SIGNALS:
                fail("stopped by a signal")
            process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            TRAINERS.add(process)
        while True:
            try:
                code = process.wait(timeout=progress_every)
                break
            except subprocess.TimeoutExpired:
                line = status(log_path) if status else None
                if line:
                    print(f"  {label}: {line} ({duration(time.time() - start)} so far)", flush=True)
    with TRAINERS_LOCK:
        TRAINERS.discard(process)
    if code != 0:
        with open(log_path) as f:
            tail = "".join(f.readlines()[-15:])
        fail(f"{cmd[0]} exited with status {code}; {log_path} ends with:\n{tail}")
    return time.time() - start


class Sweep:
    """The sweep's progress over its runs, for the time-left lines."""

    def __init__(self, total_runs, jobs):
        self.total, self.jobs, self.done, self.run_seconds, self.carried = total_runs, jobs, 0, [], []
        self.start = time.time()
        self.lock = threading.Lock()

    def carried_seconds(self):
        with self.lock:
            return statistics.mean(self.carried) if self.carried else None

    def finished(self, seconds=None, carried=None):
        """Records a run (seconds None: skipped, already done) and prints where the sweep stands."""
        with self.lock:
            self.done += 1
            if seconds is not None:
                self.run_seconds.append(seconds)
            if carried is not None:  # runs without the carried-state evaluation (--no-carried) have none
                self.carried.append(carried)
            left = ""
            if self.run_seconds and self.done < self.total:
                runs_left = self.total - self.done
                left = (f", about {duration(statistics.mean(self.run_seconds) * runs_left / min(self.jobs, runs_left))}"
                        f" left")
            print(f"sweep: {self.done} of {self.total} runs done ({duration(time.time() - self.start)}){left}",
                  flush=True)


def parse_evals(log_path):
    """{(split, carry): (mean loss, tokens)} from the eval lines of a trainer log (the last of each)."""
    evals = {}
    with open(log_path) as f:
        for line in f:
            m = EVAL_LINE.match(line.rstrip("\n"))
            if m:
                evals[(m.group(1), int(m.group(4)))] = (float(m.group(2)), int(m.group(3)))
    return evals


def summarise_run(run_dir, tokens_per_step, final_step, carried=True):
    """result.json contents from a finished run's logs (carried: whether the carried-state evaluation ran)."""
    attempts = json.load(open(os.path.join(run_dir, "attempts.json")))
    steps, params, evals, wall, device = {}, None, {}, 0.0, "CPU"

    for attempt in attempts:
        log_path = os.path.join(run_dir, attempt["log"])
        wall += os.path.getmtime(log_path) - attempt["start"]
        with open(log_path) as f:
            for line in f:
                line = line.rstrip("\n")
                m = STEP_LINE.match(line)
                if m:
                    steps[int(m.group(1))] = (float(m.group(3)), float(m.group(4)))  # a resumed step: the last
                m = PARAMS_LINE.match(line)
                if m:
                    params = int(m.group(1))
                m = DEVICE_LINE.match(line)
                if m:
                    device = m.group(1)
        evals.update(parse_evals(log_path))
    missing = [k for k in (("val", 0), ("test", 0), ("val", 1), ("test", 1)) if k not in evals and (carried or k[1] == 0)]
    if missing or params is None:
        fail(f"{run_dir}: the logs lack {'the parameter count' if params is None else ''} "
             f"{', '.join(f'eval {s} carry {c}' for s, c in missing)}")
    curve = {}
    with open(os.path.join(run_dir, "main.log")) as f:
        for line in f:
            m = VAL_LOG_LINE.match(line.strip())
            if m:
                curve[int(m.group(1))] = float(m.group(2))
    step_ms = sum(ms for _, ms in steps.values())
    return {
        "params": params,
        "device": device,
        "final_step": final_step,
        "train_tokens": final_step * tokens_per_step,
        "step_ms": statistics.median(ms for _, ms in steps.values()) if steps else None,
        "tokens_per_s": len(steps) * tokens_per_step / (step_ms / 1000) if step_ms > 0 else None,
        "wall_s": wall,
        "final_train_loss": steps[max(steps)][0] if steps else None,
        "eval": {f"{s}_carry{c}": {"loss": v[0], "tokens": v[1]} for (s, c), v in sorted(evals.items())},
        "val_curve": [[s * tokens_per_step, loss] for s, loss in sorted(curve.items())],
    }


def run_one(args, variant, config_path, seed, splits, max_steps, sweep, eval_tokens, gpu=None, cell=None):
    """Trains and evaluates one run (skipped if finished); gpu: its CUDA_VISIBLE_DEVICES, or None; cell: the
    (width, d_state) cell of a scaling sweep, whose runs go to runs/<cell>/."""
    run_dir = os.path.join(args.out, "runs", *([cell] if cell else []), f"{variant}-seed{seed}")
    result_path = os.path.join(run_dir, "result.json")
    if os.path.exists(result_path):
        with open(result_path) as f:
            done_steps = json.load(f).get("final_step")
        if done_steps != max_steps:
            fail(f"{result_path}: a finished run of {done_steps} steps, but these settings make {max_steps}: "
                 f"{args.out} holds another sweep; give another --out or remove it")
        print(f"{cell + ' ' if cell else ''}{variant} seed {seed}: done, skipped", flush=True)
        sweep.finished()
        return
    os.makedirs(run_dir, exist_ok=True)
    attempts_path = os.path.join(run_dir, "attempts.json")
    attempt = len(glob.glob(os.path.join(run_dir, "train_*.log")))
    tokens_per_step = args.batch * args.seq_len
    common = ["-i", splits["train"], "-j", splits["val"], "-ti", splits["test"], "-b", str(args.batch),
              "-t", str(args.seq_len), "-g", "0", "-m", "-1"]
    if args.threads:
        common += ["-th", str(args.threads)]
    train_cmd = [args.trainer, "-e", config_path, "-o", run_dir, "-R", str(seed), "-d", str(tokens_per_step),
                 "-x", str(max_steps), "-l", str(args.lr), "-u", str(args.warmup), "-q", str(args.final_lr_frac),
                 "-c", str(args.weight_decay), "-n", str(args.checkpoint_every), "-nk", "2", "-y", "1",
                 "-v", str(args.val_every), "-ec", "0"] + common + args.extra.split()
    env = None
    if gpu is not None:
        env = dict(os.environ, CUDA_VISIBLE_DEVICES=gpu)
    on_gpu = f" on GPU {gpu}" if gpu is not None else ""
    label = f"{cell + ' ' if cell else ''}{variant} seed {seed}"
    print(f"{label}: training {max_steps} steps{on_gpu} -> {run_dir}", flush=True)
    plan = RunPlan(max_steps, args.val_every, eval_tokens, sweep)
    run_logged(train_cmd, os.path.join(run_dir, f"train_{attempt}.log"), attempts_path, label, args.progress_every,
               env, lambda log: training_status(log, plan))
    model_path = os.path.join(run_dir, f"model_{max_steps:08d}.bin")
    if not os.path.isfile(model_path):
        fail(f"{model_path} missing after training: the trainer must checkpoint the last step (-n)")
    carried_s = None
    if args.carried:
        eval_cmd = [args.trainer, "-e", model_path, "-x", "0", "-v", "1", "-ec", "1"] + common
        carried_s = run_logged(eval_cmd, os.path.join(run_dir, f"eval_carry_{attempt}.log"), attempts_path,
                               f"{label} (carried-state evaluation)", args.progress_every, env,
                               lambda log: evaluation_status(log, plan))
    result = summarise_run(run_dir, tokens_per_step, max_steps, args.carried)
    result.update(variant=variant, seed=seed, config=shown(config_path))
    if cell:
        with open(config_path) as f:
            config = json.load(f)
        pad = config["pad_vocab_multiple"]
        embedding = -(-config["vocab_size"] // pad) * pad * config["d_model"]
        result.update(cell=cell, d_model=config["d_model"], d_state=config["d_state"], n_layer=config["n_layer"],
                      non_embedding_params=result["params"] - embedding)
    with open(result_path + ".tmp", "w") as f:
        json.dump(result, f, indent=1)
    os.replace(result_path + ".tmp", result_path)
    step_s, wall = training_seconds(result), result["wall_s"]  # over every attempt of a resumed run
    print(f"{label}: done in {duration(wall)}: training steps {duration(step_s)}, evaluation and the rest "
          f"{duration(max(0.0, wall - step_s))}", flush=True)
    sweep.finished(wall, carried_s)


def run_all(args, runs, configs, splits, max_steps, eval_tokens):
    """Runs (seed, variant, cell) in order, args.jobs at a time; configs[cell][variant] = (path, config), cell
    None outside a scaling sweep; with --gpus each job slot has its GPU.
    After a failed run the runs already going finish (each is resumable), then the sweep stops."""
    free_slots = queue.Queue()
    for slot in range(args.jobs):
        free_slots.put(slot)
    sweep = Sweep(len(runs), args.jobs)

    def job(seed, variant, cell):
        slot = free_slots.get()
        try:
            run_one(args, variant, configs[cell][variant][0], seed, splits, max_steps, sweep, eval_tokens,
                    args.gpus[slot] if args.gpus else None, cell)
        finally:
            free_slots.put(slot)

    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(job, seed, variant, cell) for seed, variant, cell in runs]
        for future in futures:
            try:
                future.result()
            except SystemExit:  # fail() in a job: its message is printed; stop starting new runs
                for other in futures:
                    other.cancel()
                if args.jobs > 1:
                    print("error: a run failed; waiting for the runs already going, then stopping", file=sys.stderr)
                pool.shutdown(wait=True)
                sys.exit(1)


# ---------------------------------------------------------------------------------------------------
# scaling sweep: d_state x width

def sweep_configs(args, configs, vocab_size):
    """{cell: {variant: (path, config)}}: the base configs with d_model, d_state (and n_layer) of each cell of
    --sweep-width x --sweep-d-state, written to <out>/configs/<cell>-<variant>.json."""
    directory = os.path.join(args.out, "configs")
    os.makedirs(directory, exist_ok=True)
    cells = {}
    for width in args.sweep_width:
        for d_state in args.sweep_d_state:
            cell = f"w{width}-n{d_state}"
            paths = []
            for variant, (_, base) in configs.items():
                config = dict(base, d_model=width, d_state=d_state, name=f"{base.get('name', 'model')}-{cell}")
                if args.sweep_layers:
                    config["n_layer"] = args.sweep_layers
                if (config.get("expand", 2) * width) % config.get("headdim", 64):
                    fail(f"--sweep-width {width}: expand x d_model must be a multiple of headdim {config.get('headdim')}")
                path = os.path.join(directory, f"{cell}-{variant}.json")
                with open(path + ".tmp", "w") as f:
                    json.dump(config, f, indent=2)
                os.replace(path + ".tmp", path)
                paths.append(path)
            cells[cell] = load_variant_configs(paths, vocab_size)
    return cells


def timing_path(args):
    return os.path.join(args.out, "timing", "timing.json")


def read_timing(args):
    path = timing_path(args)
    return json.load(open(path)) if os.path.isfile(path) else {}


def run_timing(args, cells, splits):
    """Each config alone on the device, one process at a time, for --timing-steps steps without evaluation:
    the median step time after the first 5 steps (the sweep's own step times are measured while --jobs runs
    share the device). Resumable: timing.json keeps the finished ones."""
    timing = read_timing(args)
    os.makedirs(os.path.dirname(timing_path(args)), exist_ok=True)
    for cell, configs in cells.items():
        for variant, (path, _) in configs.items():
            key = f"{cell}/{variant}"
            if key in timing:
                continue
            cmd = [args.trainer, "-e", path, "-i", splits["train"], "-j", splits["val"], "-b", str(args.batch),
                   "-t", str(args.seq_len), "-x", str(args.timing_steps), "-v", "0", "-g", "0", "-s", "0", "-R", "1",
                   "-l", str(args.lr), "-u", str(args.warmup)] + (["-th", str(args.threads)] if args.threads else [])
            log = os.path.join(os.path.dirname(timing_path(args)), f"{cell}-{variant}.log")
            with open(log, "w") as f:
                code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode
            if code != 0:
                fail(f"timing run {key} exited with status {code}: see {log}")
            with open(log) as f:
                ms = [float(m.group(4)) for m in map(STEP_LINE.match, f.read().splitlines()) if m]
            timing[key] = statistics.median(ms[5:] or ms)
            print(f"timing {key}: {timing[key]:.2f} ms per step alone", flush=True)
            with open(timing_path(args) + ".tmp", "w") as f:
                json.dump(timing, f, indent=1)
            os.replace(timing_path(args) + ".tmp", timing_path(args))


def scaling_cells(results):
    """{(d_model, d_state): {variant: [results by seed]}}"""
    cells = {}
    for r in results:
        cells.setdefault((r["d_model"], r["d_state"]), {}).setdefault(r["variant"], []).append(r)
    for by_variant in cells.values():
        for rs in by_variant.values():
            rs.sort(key=lambda r: r["seed"])
    return dict(sorted(cells.items()))


def val_loss(r):
    return r["eval"]["val_carry0"]["loss"]


def write_scaling_report(args, results, meta):
    cells = scaling_cells(results)
    timing = meta["timing"]
    any_r = results[0]
    lines = ["# WikiText-2, GPT-2 tokens: SSD-Mamba (diagonal A) vs Mamba-2 (scalar A) over d_state and width", ""]
    if meta.get("command"):
        lines += ["Made with (from the repository root):", "", "```", meta["command"], "```", ""]
    lines += [f"- data: `{os.path.relpath(args.data, REPO)}` ({meta['tokenizer']}, vocab {meta['vocab_size']:,}); "
              f"every run reads the same tokens in the same order per seed",
              f"- models: `{shown(args.configs[0])}` / `{shown(args.configs[1])}` with n_layer {any_r['n_layer']}, "
              f"d_model in {args.sweep_width}, d_state in {args.sweep_d_state} (configs in `configs/` here)",
              f"- training: `{trainer_shown(args.trainer)}` on {any_r.get('device', '?')}, {args.jobs} runs at a time; B "
              f"{args.batch}, T {args.seq_len}, {meta['max_steps']} steps ({meta['epochs']:.2f} epochs, "
              f"{meta['max_steps'] * args.batch * args.seq_len:,} tokens), AdamW lr {args.lr:g}, warmup {args.warmup}, "
              f"cosine to {args.final_lr_frac:g} x, weight decay {args.weight_decay:g}; seeds "
              f"{', '.join(str(s) for s in meta['seeds'])}",
              f"- val loss: the final model on the first {meta['eval_tokens']['val']:,} val targets, fresh state per "
              f"window of {args.seq_len} (nats per GPT-2 token)",
              "- step time: alone = one process on the device, median of the steps after the first 5 "
              f"({args.timing_steps} steps); shared = median step time during the sweep, with {args.jobs} processes "
              "sharing the device (slower, and noisier)", "",
              "| d_model | d_state | params scalar | params diagonal | without embedding | val loss scalar | val loss diagonal | "
              "diagonal - scalar (paired) | diagonal better | step ms alone scalar / diagonal | "
              "step ms shared scalar / diagonal |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (width, d_state), by_variant in cells.items():
        a, b = by_variant.get("mamba2", []), by_variant.get("ssd-mamba", [])
        pairs = [(x, y) for x in a for y in b if x["seed"] == y["seed"]]
        diffs = [val_loss(y) - val_loss(x) for x, y in pairs]
        cell = f"w{width}-n{d_state}"
        alone = " / ".join(f"{timing[f'{cell}/{v}']:.2f}" if f"{cell}/{v}" in timing else "-" for v in ("mamba2", "ssd-mamba"))
        shared = " / ".join(f"{statistics.median(r['step_ms'] for r in rs):.2f}" if rs else "-" for rs in (a, b))
        lines.append(f"| {width} | {d_state} | {a[0]['params'] if a else 0:,} | {b[0]['params'] if b else 0:,} | "
                     f"{(a or b)[0]['non_embedding_params']:,} | "
                     f"{mean_spread([val_loss(r) for r in a], '{:.4f}')} | {mean_spread([val_loss(r) for r in b], '{:.4f}')} | "
                     f"{mean_spread(diffs, '{:.4f}', signed=True)} | {sum(d < 0 for d in diffs)} of {len(diffs)} | "
                     f"{alone} | {shared} |")
    lines += ["", "![val loss against d_state and parameters, step time](scaling.png)", "",
              "Parameters include the tied embedding (50,304 x d_model). The diagonal variant has n_layer x nheads x "
              "(d_state - 1) more parameters (its extra decay rates). Paired: the same seed gives both variants the "
              "same data order. See docs/compare.md.", ""]
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write("\n".join(lines))


def plot_scaling(args, results, timing):
    """scaling.png: val loss against d_state (one line per width and variant, mean and std over seeds), val
    loss against parameters, and step time (alone when measured, else shared) against d_state."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cells = scaling_cells(results)
    widths = sorted({w for w, _ in cells})
    shades = {v: plt.get_cmap(c)(np.linspace(0.45, 0.95, len(widths))) for v, c in
              (("mamba2", "Blues"), ("ssd-mamba", "Reds"))}
    styles = {"mamba2": "-o", "ssd-mamba": "--s"}
    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    for variant in ("mamba2", "ssd-mamba"):
        for i, width in enumerate(widths):
            row = [(n, by[variant]) for (w, n), by in cells.items() if w == width and variant in by]
            if not row:
                continue
            ns = [n for n, _ in row]
            means = [statistics.mean(val_loss(r) for r in rs) for _, rs in row]
            stds = [statistics.stdev([val_loss(r) for r in rs]) if len(rs) > 1 else 0.0 for _, rs in row]
            label = f"{variant}, d_model {width}"
            axes[0].errorbar(ns, means, yerr=stds, fmt=styles[variant], color=shades[variant][i], capsize=3, label=label)
            axes[1].errorbar([rs[0]["non_embedding_params"] for _, rs in row], means, yerr=stds, fmt=styles[variant],
                             color=shades[variant][i], capsize=3, label=label)
            ms = [timing.get(f"w{width}-n{n}/{variant}") or statistics.median(r["step_ms"] for r in rs) for n, rs in row]
            axes[2].plot(ns, ms, styles[variant], color=shades[variant][i], label=label)
    axes[0].set_xlabel("d_state")
    axes[0].set_ylabel("val loss (nats per token)")
    axes[1].set_xlabel("parameters without the (tied) embedding")
    axes[1].set_ylabel("val loss (nats per token)")
    axes[2].set_xlabel("d_state")
    axes[2].set_ylabel("ms per step (" + ("alone on the device" if timing else "shared device") + ")")
    for ax in axes:
        ax.set_xscale("log", base=2 if ax is not axes[1] else 10)
        ax.grid(alpha=0.3)
    axes[2].legend(fontsize=7)
    fig.suptitle("WikiText-2 (GPT-2 tokens): diagonal (red, dashed) vs scalar A (blue), mean ± std over seeds")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "scaling.png"), dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------
# report

def mean_spread(values, fmt, signed=False):
    """'mean ± sample std [min, max]' of the seeds' values; signed puts a sign on all but the std."""
    if not values:
        return "-"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    f = fmt.replace("{:", "{:+") if signed else fmt
    return f"{f.format(statistics.mean(values))} ± {fmt.format(std)} [{f.format(min(values))}, {f.format(max(values))}]"


def training_seconds(result):
    """Seconds of a run's training steps (from the step times; evaluation excluded)."""
    return result["train_tokens"] / result["tokens_per_s"] if result.get("tokens_per_s") else 0.0


def trainer_shown(path):
    rel = shown(path)
    return rel if os.path.isabs(rel) else "./" + rel


def ppl(result, split, carry):
    """Perplexity per target: exp(mean cross-entropy)."""
    return math.exp(result["eval"][f"{split}_carry{carry}"]["loss"])


def per_word_ppl(result, split, carry, words):
    """exp(total cross-entropy over the split's targets / words in the split)."""
    e = result["eval"][f"{split}_carry{carry}"]
    return math.exp(e["loss"] * e["tokens"] / words)


def write_report(args, results, meta):
    variants = [v for v in ("mamba2", "ssd-mamba") if any(r["variant"] == v for r in results)]
    by_variant = {v: sorted((r for r in results if r["variant"] == v), key=lambda r: r["seed"]) for v in variants}
    word_level = meta["tokenizer"] == "word"
    words = meta.get("words")
    lines = [f"# WikiText-2: SSD-Mamba (diagonal A) vs Mamba-2 (scalar A) — preset `{args.preset}`", ""]
    if meta.get("command"):
        lines += ["Made with (from the repository root):", "", "```", meta["command"], "```", ""]
    schedule = (f"constant after {args.warmup} warmup steps" if args.final_lr_frac == 1 else
                f"warmup {args.warmup}, cosine to {args.final_lr_frac:g} x lr")
    devices = sorted({r.get("device", "?") for r in results})
    lines += [f"- data: `{os.path.relpath(args.data, REPO)}` ({meta['tokenizer']} tokenizer, vocab {meta['vocab_size']:,}); "
              f"train {meta['train_tokens']:,} tokens",
              f"- models: {', '.join(f'{v} `{p}`' for v, p in meta['configs'].items())}",
              f"- trainer: `{trainer_shown(args.trainer)}` on {', '.join(devices)}; B {args.batch}, T {args.seq_len}, {meta['max_steps']} steps "
              f"({meta['epochs']:.2f} epochs, {meta['max_steps'] * args.batch * args.seq_len:,} tokens), AdamW lr "
              f"{args.lr:g} ({schedule}), weight decay {args.weight_decay:g}",
              f"- seeds: {', '.join(str(s) for s in meta['seeds'])} (a seed fixes the data order, identical for "
              f"both variants, and the initialisation)",
              f"- evaluation: {'the first ' if args.eval_tokens else 'every '}"
              f"{'targets' if args.eval_tokens else 'target'} of the val ({meta['eval_tokens']['val']:,}) and test "
              f"({meta['eval_tokens']['test']:,}) splits"
              f"{' (--eval-tokens: a quick estimate, not comparable with whole-split numbers)' if args.eval_tokens else ''}"
              f" in windows of T = {args.seq_len}; \"fresh\": each window "
              f"starts from a zero state, \"carried\": the state flows from window to window"]
    if words:
        lines.append(f"- words (whitespace tokens + one <eos> per line of the raw text): val {words['val']:,}, "
                     f"test {words['test']:,}")
    lines.append("")
    unit = "per word" if word_level else "per token"
    header = ["variant", "runs", "parameters", f"val ppl {unit}", f"test ppl {unit}",
              f"test ppl {unit} (carried)"]
    if not word_level and words:
        header += ["test ppl per word", "test ppl per word (carried)"]
    header += ["best val loss", "at tokens", "train tokens/s", "wall time per run", "of it training steps"]
    lines += ["## Mean ± std over seeds [min, max]", "", "| " + " | ".join(header) + " |",
              "|" + "---|" * len(header)]
    for v in variants:
        rs = by_variant[v]
        row = [v, str(len(rs)), f"{rs[0]['params']:,}",
               mean_spread([ppl(r, "val", 0) for r in rs], "{:.2f}"),
               mean_spread([ppl(r, "test", 0) for r in rs], "{:.2f}"),
               mean_spread([ppl(r, "test", 1) for r in rs], "{:.2f}")]
        if not word_level and words:
            row += [mean_spread([per_word_ppl(r, "test", c, words["test"]) for r in rs], "{:.2f}") for c in (0, 1)]
        best = [min(r["val_curve"], key=lambda point: point[1]) for r in rs if r["val_curve"]]
        row += [mean_spread([loss for _, loss in best], "{:.4f}"), mean_spread([tokens / 1e6 for tokens, _ in best], "{:.1f}M"),
                mean_spread([r["tokens_per_s"] for r in rs if r["tokens_per_s"]], "{:,.0f}"),
                mean_spread([r["wall_s"] for r in rs], "{:.1f}") + " s",
                mean_spread([100 * training_seconds(r) / r["wall_s"] for r in rs if r["wall_s"]], "{:.0f}") + " %"]
        lines.append("| " + " | ".join(row) + " |")
    paired = [(a, b) for a in by_variant.get("mamba2", []) for b in by_variant.get("ssd-mamba", [])
              if a["seed"] == b["seed"]]
    if paired:
        lines += ["", "## Paired by seed: SSD-Mamba minus Mamba-2 (negative: SSD-Mamba is better)", "",
                  "| metric | mean ± std [min, max] | seeds where SSD-Mamba is better |", "|---|---|---|"]
        for label, split, carry in (("val loss (fresh)", "val", 0), ("test loss (fresh)", "test", 0),
                                    ("test loss (carried)", "test", 1)):
            diffs = [b["eval"][f"{split}_carry{carry}"]["loss"] - a["eval"][f"{split}_carry{carry}"]["loss"]
                     for a, b in paired]
            lines.append(f"| {label} | {mean_spread(diffs, '{:.4f}', signed=True)} | {sum(d < 0 for d in diffs)} of {len(diffs)} |")
    lines += ["", "## Runs", "", "| variant | seed | val loss | val ppl | test loss | test ppl | test ppl (carried) | "
              "final train loss | tokens/s | wall |", "|---|---|---|---|---|---|---|---|---|---|"]
    for v in variants:
        for r in by_variant[v]:
            lines.append(f"| {v} | {r['seed']} | {r['eval']['val_carry0']['loss']:.4f} | {ppl(r, 'val', 0):.2f} | "
                         f"{r['eval']['test_carry0']['loss']:.4f} | {ppl(r, 'test', 0):.2f} | {ppl(r, 'test', 1):.2f} | "
                         f"{r['final_train_loss']:.4f} | {r['tokens_per_s'] or 0:,.0f} | {r['wall_s']:.1f} s |")
    lines += ["", "![validation loss against training tokens](val_loss.png)", "",
              "Perplexity is exp(mean cross-entropy over the split's targets). " +
              ("Word level: one target per word and per line's <eos>; the split's first token (the <eos> of its "
               "blank first line) is context only. " if word_level else
               "Per word: exp(total cross-entropy over the split's BPE targets / number of words). ") +
              "Tokens/s counts training steps only; wall time includes evaluation, and \"of it training steps\" is "
              "the share of the wall time spent in training steps (the rest: evaluations, checkpoints, start-up). "
              "\"Best val loss\" is the lowest "
              "full-split val loss seen during training (fresh state), \"at tokens\" where it was. See "
              "docs/compare.md.", ""]
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write("\n".join(lines))


def plot_curves(args, results):
    """val_loss.png: left, every run's validation loss against training tokens (the y axis cut to the
    part after the first tenth of training, where the variants could differ); right, per seed, the
    difference SSD-Mamba minus Mamba-2 at the same steps."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    colors = {"mamba2": "tab:blue", "ssd-mamba": "tab:red"}
    fig, (ax, ax_diff) = plt.subplots(1, 2, figsize=(13, 5))
    labelled = set()
    late = []
    for r in sorted(results, key=lambda r: (r["variant"], r["seed"])):
        if not r["val_curve"]:
            continue
        x, y = zip(*r["val_curve"])
        late += [loss for tokens, loss in r["val_curve"] if tokens >= 0.1 * x[-1]]
        label = r["variant"] if r["variant"] not in labelled else None
        labelled.add(r["variant"])
        ax.plot(x, y, color=colors.get(r["variant"], "black"), alpha=0.7, linewidth=1.2, label=label)
    if late:
        span = max(late) - min(late)
        ax.set_ylim(min(late) - 0.05 * span, max(late) + 0.05 * span)
    ax.set_xlabel("training tokens")
    ax.set_ylabel("validation loss (nats per token, fresh state)")
    ax.set_title(f"WikiText-2 ({args.preset}): every seed, both variants")
    ax.grid(alpha=0.3)
    ax.legend()
    by_seed = {}
    for r in results:
        by_seed.setdefault(r["seed"], {})[r["variant"]] = dict(r["val_curve"]) if r["val_curve"] else {}
    for seed, curves in sorted(by_seed.items()):
        if "mamba2" in curves and "ssd-mamba" in curves:
            common = sorted(set(curves["mamba2"]) & set(curves["ssd-mamba"]))
            ax_diff.plot(common, [curves["ssd-mamba"][t] - curves["mamba2"][t] for t in common], linewidth=1.2,
                         label=f"seed {seed}")
    ax_diff.axhline(0.0, color="black", linewidth=0.8)
    ax_diff.set_xlabel("training tokens")
    ax_diff.set_ylabel("val loss: SSD-Mamba minus Mamba-2 (below 0: SSD-Mamba better)")
    ax_diff.set_title("paired by seed (same data order)")
    ax_diff.grid(alpha=0.3)
    if by_seed:
        ax_diff.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "val_loss.png"), dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(description="Compare SSD-Mamba (diagonal A) with Mamba-2 (scalar A) on WikiText-2.")
    p.add_argument("--preset", choices=list(PRESETS), default="paper",
                   help="quick (CPU, minutes), paper, word-medium, gpt2-medium (default paper)")
    p.add_argument("--trainer", default=os.path.join(REPO, "train_ssd"),
                   help="./train_ssd (CPU, the default) or ./train_ssdcu (CUDA)")
    p.add_argument("--out", help="sweep directory (default runs/compare/<preset>; the committed sweeps are in "
                                 "results/wikitext2/<preset>)")
    p.add_argument("--seeds", type=int, help="seeds per variant, at least 3 (default: the preset's, 5 for paper, "
                                             "else 3)")
    p.add_argument("--first-seed", type=int, default=1)
    p.add_argument("--configs", nargs=2, metavar=("A.json", "B.json"), help="the scalar and the diagonal config")
    p.add_argument("--data", help="prepared dataset dir (*_{train,val,test}_*.bin and tokenizer.bin)")
    p.add_argument("--tokenizer", choices=["word", "gpt2"], help="for preparing the data when it is missing")
    p.add_argument("--raw", default=RAW_WIKITEXT, help="dir with WikiText-2's train/valid/test.txt (default %(default)s)")
    p.add_argument("--batch", type=int)
    p.add_argument("--seq-len", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--warmup", type=int)
    p.add_argument("--final-lr-frac", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--epochs", type=float, help="training length in epochs of the train split")
    p.add_argument("--steps", type=int, help="training length in steps (instead of --epochs)")
    p.add_argument("--val-every", type=int, help="steps between val evaluations (default: 20 per run)")
    p.add_argument("--eval-tokens", type=int, help="evaluate only the first N targets of the val and test splits "
                                                   "(default: all of them; quick: 10000)")
    p.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default: 10 per run)")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads per run (-th; default all cores, divided among --jobs)")
    p.add_argument("--jobs", type=int, help="runs at the same time (default 1, or one per --gpus entry)")
    p.add_argument("--gpus", help="comma-separated GPU ids for train_ssdcu: job slot i runs on the i-th "
                                  "(CUDA_VISIBLE_DEVICES)")
    p.add_argument("--progress-every", type=float, default=60.0, help="seconds between progress lines (default 60)")
    p.add_argument("--extra", default="", help="more trainer flags, e.g. \"-C 0.5\"")
    p.add_argument("--sweep-width", type=int_list, help="scaling sweep: d_model values, e.g. 128,256,512 (with "
                                                        "--sweep-d-state; gpt2-scaling: 128,256,512)")
    p.add_argument("--sweep-d-state", type=int_list, help="scaling sweep: d_state values (gpt2-scaling: 16,32,64,128,256)")
    p.add_argument("--sweep-layers", type=int, help="scaling sweep: n_layer of every cell (gpt2-scaling: 4)")
    p.add_argument("--no-carried", dest="carried", action="store_false", default=None,
                   help="skip the carried-state evaluation after training (gpt2-scaling skips it)")
    p.add_argument("--timing-steps", type=int, help="scaling sweep: afterwards time this many steps of each "
                                                    "config alone, one process at a time (gpt2-scaling: 40; 0: none)")
    p.add_argument("--report-only", action="store_true", help="only rebuild the report from finished runs")
    args = p.parse_args(argv)
    preset = PRESETS[args.preset]
    # the preset's files are the repository's; paths given here are taken from the current directory
    args.configs = [os.path.abspath(c) for c in args.configs] if args.configs else \
        [os.path.join(REPO, c) for c in preset["configs"]]
    if args.data is None:
        args.data = os.path.join(REPO, preset["data"])
        args.tokenizer = args.tokenizer or preset["tokenizer"]
    else:
        args.data = os.path.abspath(args.data)
    for key in ("batch", "seq_len", "lr", "warmup", "final_lr_frac", "weight_decay", "seeds"):
        if getattr(args, key) is None:
            setattr(args, key, preset[key])
    if args.epochs is None and args.steps is None:
        args.epochs, args.steps = preset.get("epochs"), preset.get("steps")
    if args.val_every is None:
        args.val_every = preset.get("val_every")
    if args.eval_tokens is None:
        args.eval_tokens = preset.get("eval_tokens")
    for key, default in (("sweep_width", None), ("sweep_d_state", None), ("sweep_layers", None), ("carried", True),
                         ("timing_steps", 0)):
        if getattr(args, key) is None:
            setattr(args, key, preset.get(key, default))
    if (args.sweep_width is None) != (args.sweep_d_state is None):
        p.error("a scaling sweep needs both --sweep-width and --sweep-d-state")
    args.out = os.path.abspath(args.out) if args.out else os.path.join(REPO, "runs", "compare", args.preset)
    if args.eval_tokens is not None and args.eval_tokens < 1:
        p.error("--eval-tokens must be positive")
    if args.seeds < 3:
        p.error("--seeds must be at least 3: the report gives a spread over seeds")
    if args.batch < 1 or args.seq_len < 1 or (args.steps is not None and args.steps < 1):
        p.error("--batch, --seq-len and --steps must be positive")
    if args.progress_every <= 0:
        p.error("--progress-every must be positive")
    if args.gpus is not None:
        args.gpus = [g.strip() for g in args.gpus.split(",")]
        if not all(g.isdigit() for g in args.gpus):
            p.error("--gpus takes comma-separated GPU ids, e.g. 0,1,2,3")
    args.jobs = args.jobs or (len(args.gpus) if args.gpus else 1)
    if args.jobs < 1:
        p.error("--jobs must be at least 1")
    if args.gpus and args.jobs > len(args.gpus):
        p.error(f"--jobs {args.jobs} needs as many --gpus ids; {len(args.gpus)} given")
    if args.threads == 0 and args.jobs > 1:
        args.threads = max(1, (os.cpu_count() or 1) // args.jobs)
    if not args.report_only and not (os.path.isfile(args.trainer) and os.access(args.trainer, os.X_OK)):
        p.error(f"--trainer {args.trainer}: not an executable file (build it with make)")
    args.trainer = os.path.abspath(args.trainer)
    return args


def int_list(text):
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}': comma-separated integers, e.g. 16,64,128")
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"'{text}': every value must be positive")
    return values


def shown(path):
    """A path as the report and results.json show it: relative to the repository when inside it."""
    rel = os.path.relpath(path, REPO)
    return path if rel.startswith("..") else rel


def limit_eval_splits(args, splits, eval_tokens):
    """--eval-tokens N: the val and test splits cut to their first N targets (N + 1 tokens, from the sorted
    shards, as one raw shard) in <out>/runs/eval_data, for quick sweeps."""
    directory = os.path.join(args.out, "runs", "eval_data")
    os.makedirs(directory, exist_ok=True)
    for split in ("val", "test"):
        tokens, need = [], args.eval_tokens + 1
        for path in sorted(glob.glob(splits[split])):
            if path.endswith(".zst"):
                data = subprocess.run(["zstd", "-dc", path], capture_output=True, check=True).stdout
            else:
                with open(path, "rb") as f:
                    data = f.read()
            header = np.frombuffer(data[:1024], dtype="<i4")
            tokens.append(np.frombuffer(data[1024:], dtype="<u2" if header[1] == 1 else "<u4")[:need])
            need -= len(tokens[-1])
            if need <= 0:
                break
        tokens = np.concatenate(tokens)
        header = np.zeros(256, dtype="<i4")
        header[:3] = [SHARD_MAGIC, 2, len(tokens)]
        out = os.path.join(directory, f"first{args.eval_tokens}_{split}_000000.bin")
        with open(out + ".tmp", "wb") as f:
            f.write(header.tobytes() + tokens.astype("<u4").tobytes())
        os.replace(out + ".tmp", out)
        splits[split] = os.path.join(directory, f"first{args.eval_tokens}_{split}_*.bin")
        eval_tokens[split] = len(tokens) - 1
    with open(os.path.join(args.data, "tokenizer.bin"), "rb") as f:  # beside the shards, as prepro.py leaves it
        tokenizer = f.read()
    with open(os.path.join(directory, "tokenizer.bin"), "wb") as f:
        f.write(tokenizer)


def main(argv=None):
    args = parse_args(argv)
    prepare_data(args)
    info = read_tokenizer_info(args.data)
    configs = load_variant_configs(args.configs, info["vocab_size"])
    cells = sweep_configs(args, configs, info["vocab_size"]) if args.sweep_width else {None: configs}
    splits, eval_tokens = {}, {}
    for split in ("train", "val", "test"):
        pattern, shards = split_shards(args.data, split)
        if not shards:
            fail(f"no {split} shards match {pattern}")
        splits[split] = pattern
        if split != "train":
            eval_tokens[split] = sum(shard_tokens(s) - 1 for s in shards)
    per_epoch = steps_per_epoch(glob.glob(splits["train"]), args.batch, args.seq_len)
    if per_epoch < 1:
        fail(f"the train split of {args.data} has less than one batch of B={args.batch} x T={args.seq_len}")
    max_steps = args.steps if args.steps is not None else max(1, round(args.epochs * per_epoch))
    args.val_every = args.val_every or max(1, max_steps // 20)
    args.checkpoint_every = args.checkpoint_every or max(1, max_steps // 10)
    if args.eval_tokens:
        limit_eval_splits(args, splits, eval_tokens)
    words = None
    if args.eval_tokens:
        pass  # the raw text's word counts are those of the whole splits
    elif all(os.path.isfile(os.path.join(args.raw, f)) for f in RAW_SPLIT_FILES.values()):
        words = {s: count_words(os.path.join(args.raw, f)) for s, f in RAW_SPLIT_FILES.items()}
        if info["kind"] == "word":
            for s in RAW_SPLIT_FILES:  # a word-level split predicts every word but its first
                if eval_tokens[s] + 1 != words[s]:
                    print(f"warning: {s}: {words[s]:,} words in {args.raw} but {eval_tokens[s] + 1:,} tokens in "
                          f"{args.data}: was the data prepared from another text?", file=sys.stderr)
    else:
        print(f"warning: {args.raw} lacks {' or '.join(RAW_SPLIT_FILES.values())}: no word counts, so no perplexity "
              f"per word for BPE data (--raw, or --report-only later where the raw text is)", file=sys.stderr)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))

    command_path = os.path.join(args.out, "command.txt")
    if not args.report_only:
        os.makedirs(args.out, exist_ok=True)
        with open(command_path, "w") as f:
            f.write(" ".join(["python3", os.path.relpath(os.path.abspath(sys.argv[0]), os.getcwd())] + sys.argv[1:]) + "\n")
        # seed-major: a stopped sweep has both variants of its finished seeds
        runs = [(seed, variant, cell) for seed in seeds for cell in cells for variant in ("mamba2", "ssd-mamba")]
        stop_trainers_on_signal()
        run_all(args, runs, cells, splits, max_steps, eval_tokens)
        if args.sweep_width and args.timing_steps:
            run_timing(args, cells, splits)

    results = []
    for path in sorted(glob.glob(os.path.join(args.out, "runs", *(["*"] if args.sweep_width else []), "*", "result.json"))):
        with open(path) as f:
            r = json.load(f)
        if r["seed"] in seeds and r["final_step"] == max_steps:
            results.append(r)
    if not results:
        fail(f"no finished runs in {args.out}/runs for these settings")
    meta = {"tokenizer": info["kind"], "vocab_size": info["vocab_size"], "max_steps": max_steps,
            "epochs": max_steps / per_epoch, "seeds": sorted({r["seed"] for r in results}),
            "eval_tokens": eval_tokens, "words": words, "configs": {v: shown(c[0]) for v, c in configs.items()},
            "train_tokens": sum(shard_tokens(s) for s in glob.glob(splits["train"]))}
    if os.path.isfile(command_path):
        with open(command_path) as f:
            meta["command"] = f.read().strip()
    if args.sweep_width:
        meta["timing"] = read_timing(args)
        write_scaling_report(args, results, meta)
        plot_scaling(args, results, meta["timing"])
    else:
        write_report(args, results, meta)
        plot_curves(args, results)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        settings = {k: os.path.relpath(v, REPO) if isinstance(v, str) and os.path.isabs(v) else v
                    for k, v in vars(args).items()}  # paths relative to the repository: the file is committed
        json.dump({"settings": settings, "meta": meta, "runs": results}, f, indent=1)
    print(f"report: {os.path.join(args.out, 'report.md')} ({len(results)} runs), plot: "
          f"{os.path.join(args.out, 'scaling.png' if args.sweep_width else 'val_loss.png')}")


if __name__ == "__main__":
    main()
