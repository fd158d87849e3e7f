#!/usr/bin/env python3
"""
Training-curve parity: ssd.c's trainers against transformers' Mamba2ForCausalLM trained with PyTorch, from
the same initial weights, on the same batches, with the same AdamW, for --steps steps of a small byte-level
model on WikiText-2.

- weights: the CPU trainer makes a fresh model from the config and saves it after one step at learning
  rate 0 (AdamW then moves nothing: every update is lr x something finite), model_00000001.bin; every
  trainer fine-tunes from that file (-e) and PyTorch loads its Hugging Face export (scripts/hf_mamba2.py).
- batches: one raw shard of exactly steps x B x T + 1 byte tokens, read unshuffled (-sh 0): step s is the
  tokens [s*B*T, (s+1)*B*T] laid out as B rows of T + 1 (data/dataloader.h), which batch_tokens() copies.
- optimiser: AdamW, betas (0.9, 0.95), eps 1e-8 (train/train_loop.h), weight decay only on in_proj,
  out_proj and conv weights (model/params.c param_has_weight_decay), the global gradient norm clipped to
  --clip as kernels/adamw.cuh does (scale clip / norm when norm > clip), the learning rate of
  train/schedule.c (linear warmup over --warmup steps, cosine to --final-lr-frac x the peak).
- PyTorch runs in fp32 (TF32 off) by default, or bf16 autocast (--torch-precision bf16).

Stages:
  data    (where the WikiText-2 text is) writes <data>/parity_train_000000.bin
  run     trains: train_ssdcu (bf16), train_ssd (fp32, CPU; --cpu-steps of them) and PyTorch; logs in --out
  report  parity.png and report.md from --out (also run at the end of `run`)

  python3 scripts/parity_torch.py data
  python3 scripts/parity_torch.py run --out runs/parity          # on the GPU machine
"""
import argparse
import json
import math
import os
import re
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hf_mamba2 import LAYER_TENSORS, export_checkpoint  # noqa: E402
from prepro_shards import read_shard, write_shard  # noqa: E402
from ssd_model_file import config_check, read_model_file  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RAW = os.path.join(os.path.dirname(REPO), "shared", "data", "wikitext-2", "train.txt")
SHARD_NAME = "parity_train_000000.bin"
CONFIG = {"name": "parity-bytes", "d_model": 128, "n_layer": 4, "vocab_size": 256, "pad_vocab_multiple": 16,
          "d_state": 64, "d_conv": 4, "expand": 2, "headdim": 32, "ngroups": 1, "chunk_size": 64,
          "a_structure": "scalar"}
ADAM_BETAS, ADAM_EPS = (0.9, 0.95), 1e-8
DECAYED_TENSORS = ("in_proj_w", "out_proj_w", "conv_w")  # model/params.c param_has_weight_decay
STEP_LINE = re.compile(r"^step\s+(\d+)/\d+ \| loss (\S+) \| norm (\S+) \|.*\| ([\d.]+) ms \|")
# Agreement required, in nats per byte. fp32 against fp32: both sum the same float operations in another
# order, so the first step agrees to rounding (1e-4) and 200 steps of AdamW drift by little more. bf16
# against fp32: bf16 keeps 8 significant bits (0.4% relative per rounding); the loss of one step averages
# B x T targets but every activation is rounded, so the first step may differ by ~0.01 and the curves by a
# few hundredths as the weights drift apart.
TOLERANCE = {"fp32": {"first": 1e-4, "max": 2e-3, "mean": 5e-4}, "bf16": {"first": 0.02, "max": 0.05, "mean": 0.02}}


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def schedule_lr(step, peak, warmup, max_steps, final_frac):
    """train/schedule.c schedule_lr."""
    if step < warmup:
        return peak * (step + 1) / warmup
    decay_steps = max_steps - warmup - 1
    if decay_steps <= 0:
        return peak
    progress = min(1.0, (step - warmup) / decay_steps)
    final = peak * final_frac
    return final + (peak - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


def batch_tokens(tokens, step, B, T):
    """The unshuffled loader's step `step` (one rank, no accumulation): inputs and targets, each B x T."""
    span = tokens[step * B * T: (step + 1) * B * T + 1]
    if span.size != B * T + 1:
        raise ValueError(f"step {step} needs tokens up to {(step + 1) * B * T + 1}, the shard has {tokens.size}")
    return span[:-1].reshape(B, T), span[1:].reshape(B, T)


def decayed_hf_names(n_layer):
    """The Hugging Face parameter names that get weight decay, as ssd.c decays its tensors."""
    return {f"backbone.layers.{layer}.{LAYER_TENSORS[t]}" for layer in range(n_layer) for t in DECAYED_TENSORS}


def parse_trainer_log(path):
    """{step index from 0: (loss, grad norm, ms)} from a trainer's stdout."""
    steps = {}
    with open(path, errors="replace") as f:
        for line in f:
            m = STEP_LINE.match(line.strip())
            if m:
                steps[int(m.group(1)) - 1] = (float(m.group(2)), float(m.group(3)), float(m.group(4)))
    return steps


def make_data(args):
    need = args.steps * args.batch * args.seq_len + 1
    try:
        data = open(args.raw, "rb").read(need)
    except OSError as e:
        fail(f"cannot read {args.raw}: {e.strerror}")
    if len(data) < need:
        fail(f"{args.raw}: {len(data)} bytes, {args.steps} steps of {args.batch} x {args.seq_len} need {need}")
    os.makedirs(args.data, exist_ok=True)
    write_shard(os.path.join(args.data, SHARD_NAME), np.frombuffer(data, dtype=np.uint8), 256)
    print(f"wrote {os.path.join(args.data, SHARD_NAME)}: the first {need:,} bytes of {args.raw}")


def run_trainer(trainer, args, init, name, steps, seconds=None):
    """Trains from init; stdout in <out>/<name>.log. With seconds, a run still going then is stopped and its
    steps so far are kept (the CPU trainer's pace depends on the machine)."""
    shard = os.path.join(args.data, SHARD_NAME)
    cmd = [trainer, "-e", init, "-i", shard, "-j", shard, "-sh", "0", "-b", str(args.batch), "-t", str(args.seq_len),
           "-d", str(args.batch * args.seq_len), "-x", str(steps), "-l", str(args.lr), "-u", str(args.warmup),
           "-q", str(args.final_lr_frac), "-c", str(args.weight_decay), "-C", str(args.clip), "-v", "0", "-g", "0",
           "-s", "0", "-o", os.path.join(args.out, name), "-ow", "1"]
    log = os.path.join(args.out, f"{name}.log")
    print(" ".join(cmd), flush=True)
    with open(log, "w") as f:
        try:
            code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=seconds).returncode
        except subprocess.TimeoutExpired:
            print(f"{name}: stopped after {seconds:g} s; its steps so far are compared", flush=True)
            return
    if code != 0:
        fail(f"{trainer} exited with status {code}: see {log}")


def make_init(args):
    config = os.path.join(args.out, "config.json")
    config_check(dict(CONFIG))
    with open(config, "w") as f:
        json.dump(CONFIG, f, indent=2)
    args_lr0 = argparse.Namespace(**{**vars(args), "lr": 0.0, "warmup": 0})
    run_trainer(args.cpu_trainer, args_lr0, config, "init", 1)
    return os.path.join(args.out, "init", "model_00000001.bin")


def train_torch(args, init):
    """PyTorch: Mamba2ForCausalLM from the exported init, the same batches and optimiser; losses.json."""
    import torch
    import torch.nn.functional as F
    import transformers
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    cfg, tensors = read_model_file(init)
    hf_dir = os.path.join(args.out, "hf_init")
    export_checkpoint(cfg, tensors, hf_dir)
    device = torch.device(args.device)
    model = transformers.Mamba2ForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.float32).to(device).train()
    decayed = decayed_hf_names(cfg["n_layer"])
    named = dict(model.named_parameters())  # the tied classifier appears once, as the embedding
    unknown = decayed - set(named)
    if unknown:
        fail(f"transformers {transformers.__version__} names no parameter {sorted(unknown)[0]}")
    groups = [{"params": [p for n, p in named.items() if n in decayed], "weight_decay": args.weight_decay},
              {"params": [p for n, p in named.items() if n not in decayed], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=args.lr, betas=ADAM_BETAS, eps=ADAM_EPS)
    tokens = read_shard(os.path.join(args.data, SHARD_NAME))
    params = list(named.values())
    losses = []
    start = time.time()
    for step in range(args.steps):
        x, y = (torch.from_numpy(a.astype(np.int64)).to(device) for a in batch_tokens(tokens, step, args.batch, args.seq_len))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.torch_precision == "bf16"):
            logits = model(input_ids=x, use_cache=False).logits
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.sqrt(sum((p.grad.float() ** 2).sum() for p in params if p.grad is not None))
        if args.clip > 0 and norm.item() > args.clip:
            for p in params:
                if p.grad is not None:
                    p.grad.mul_(args.clip / norm)
        lr = schedule_lr(step, args.lr, args.warmup, args.steps, args.final_lr_frac)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()
        losses.append([float(loss.item()), float(norm.item())])
        if step % 20 == 0 or step == args.steps - 1:
            print(f"torch step {step + 1}/{args.steps} | loss {losses[-1][0]:.6f} | norm {losses[-1][1]:.4f} | "
                  f"lr {lr:.3e} | {time.time() - start:.1f} s", flush=True)
    with open(os.path.join(args.out, "torch_losses.json"), "w") as f:
        json.dump({"precision": args.torch_precision, "device": str(device), "torch": torch.__version__,
                   "transformers": transformers.__version__, "loss_norm": losses}, f)


def run(args):
    if not os.path.isfile(os.path.join(args.data, SHARD_NAME)):
        fail(f"{os.path.join(args.data, SHARD_NAME)} not found: run `python3 scripts/parity_torch.py data` where "
             "the WikiText-2 text is and carry --data")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "command.txt"), "w") as f:
        f.write(" ".join(["python3", os.path.relpath(os.path.abspath(sys.argv[0]), os.getcwd())] + sys.argv[1:]) + "\n")
    with open(os.path.join(args.out, "settings.json"), "w") as f:
        json.dump({k: v for k, v in vars(args).items() if k != "func"}, f, indent=1)
    init = make_init(args)
    if args.cuda_trainer:
        run_trainer(args.cuda_trainer, args, init, "train_ssdcu", args.steps)
    if args.cpu_steps:
        run_trainer(args.cpu_trainer, args, init, "train_ssd", min(args.cpu_steps, args.steps), args.cpu_seconds)
    if not args.skip_torch:
        train_torch(args, init)
    report(args)


def compare(curve, reference, tolerance):
    steps = sorted(set(curve) & set(reference))
    diffs = np.array([curve[s] - reference[s] for s in steps])
    result = {"steps": len(steps), "first": float(abs(diffs[0])), "max": float(np.abs(diffs).max()),
              "mean": float(np.abs(diffs).mean()), "last": float(diffs[-1])}
    result["pass"] = all(result[k] <= tolerance[k] for k in ("first", "max", "mean"))
    return result


def report(args):
    settings = json.load(open(os.path.join(args.out, "settings.json")))
    curves = {}
    for name in ("train_ssdcu", "train_ssd"):
        path = os.path.join(args.out, f"{name}.log")
        if os.path.isfile(path):
            curves[name] = {s: v[0] for s, v in parse_trainer_log(path).items()}
    torch_path = os.path.join(args.out, "torch_losses.json")
    torch_info = json.load(open(torch_path)) if os.path.isfile(torch_path) else None
    if torch_info:
        curves["pytorch"] = {s: v[0] for s, v in enumerate(torch_info["loss_norm"])}
    if not curves:
        fail(f"{args.out}: no loss curves (train_ssdcu.log, train_ssd.log, torch_losses.json)")
    precision = {"train_ssdcu": "bf16", "train_ssd": "fp32", "pytorch": torch_info["precision"] if torch_info else "-"}
    results = {}
    if "pytorch" in curves:
        for name in ("train_ssdcu", "train_ssd"):
            if name in curves:
                worst = "bf16" if "bf16" in (precision[name], precision["pytorch"]) else "fp32"
                results[name] = dict(compare(curves[name], curves["pytorch"], TOLERANCE[worst]), tolerance=worst)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax, ax_diff) = plt.subplots(2, 1, figsize=(9, 8), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    colors = {"pytorch": "black", "train_ssdcu": "tab:red", "train_ssd": "tab:blue"}
    for name, curve in curves.items():
        steps = sorted(curve)
        ax.plot([s + 1 for s in steps], [curve[s] for s in steps], color=colors[name], linewidth=1.2,
                linestyle="--" if name == "pytorch" else "-", label=f"{name} ({precision[name]})")
        if name != "pytorch" and "pytorch" in curves:
            common = [s for s in steps if s in curves["pytorch"]]
            ax_diff.plot([s + 1 for s in common], [curve[s] - curves["pytorch"][s] for s in common], color=colors[name],
                         linewidth=1, label=f"{name} - pytorch")
    ax.set_ylabel("train loss (nats per byte)")
    ax.set_title(f"Mamba-2, {CONFIG['d_model']} wide, {CONFIG['n_layer']} layers, d_state {CONFIG['d_state']}: "
                 f"same init, batches, AdamW")
    ax.legend()
    ax.grid(alpha=0.3)
    ax_diff.axhline(0, color="black", linewidth=0.8)
    ax_diff.set_xlabel("step")
    ax_diff.set_ylabel("loss difference")
    ax_diff.grid(alpha=0.3)
    if len(curves) > 1:
        ax_diff.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "parity.png"), dpi=110)
    plt.close(fig)
    lines = ["# Training-curve parity: ssd.c against PyTorch (transformers Mamba2ForCausalLM)", "",
             f"Config `{json.dumps(CONFIG)}`; byte-level WikiText-2 (the first bytes of train.txt, one shard read in "
             f"order); B {settings['batch']}, T {settings['seq_len']}, {settings['steps']} steps; AdamW lr "
             f"{settings['lr']:g}, warmup {settings['warmup']}, cosine to {settings['final_lr_frac']:g} x, weight decay "
             f"{settings['weight_decay']:g} on in_proj/out_proj/conv weights, betas {ADAM_BETAS}, eps {ADAM_EPS:g}, "
             f"gradient norm clipped to {settings['clip']:g}. All start from `init/model_00000001.bin`.", ""]
    if torch_info:
        lines.append(f"PyTorch {torch_info['torch']}, transformers {torch_info['transformers']}, on "
                     f"{torch_info['device']} in {torch_info['precision']}"
                     f"{' (TF32 off)' if torch_info['precision'] == 'fp32' else ' autocast'}.")
    lines += ["", "| trainer | precision | steps compared | step 1 abs diff | max abs diff | mean abs diff | last diff | "
              "tolerance (first / max / mean) | within |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        t = TOLERANCE[r["tolerance"]]
        lines.append(f"| {name} | {precision[name]} | {r['steps']} | {r['first']:.2e} | {r['max']:.2e} | {r['mean']:.2e} | "
                     f"{r['last']:+.2e} | {t['first']:g} / {t['max']:g} / {t['mean']:g} ({r['tolerance']}) | "
                     f"{'yes' if r['pass'] else 'NO'} |")
    lines += ["", "![loss curves and their differences](parity.png)", "",
              "Tolerances (scripts/parity_torch.py TOLERANCE): fp32 against fp32, the same operations summed in "
              "another order: 1e-4 at step 1, 2e-3 at most and 5e-4 on average over the steps, as AdamW amplifies "
              "rounding in coordinates with tiny second moments. bf16 against fp32: bf16 keeps 8 significant bits, "
              "so 0.02 at step 1, 0.05 at most and 0.02 on average. Commands: `command.txt`; logs beside.", ""]
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write("\n".join(lines))
    with open(os.path.join(args.out, "parity.json"), "w") as f:
        json.dump({"results": results, "tolerance": TOLERANCE, "curves": curves}, f)
    for name, r in results.items():
        print(f"{name} vs pytorch: first {r['first']:.2e}, max {r['max']:.2e}, mean {r['mean']:.2e} -> "
              f"{'within' if r['pass'] else 'OUTSIDE'} the {r['tolerance']} tolerance")
    print(f"report: {os.path.join(args.out, 'report.md')}")


def main(argv=None):
    p = argparse.ArgumentParser(description="Loss-curve parity of ssd.c's trainers with PyTorch.")
    sub = p.add_subparsers(dest="stage", required=True)
    stages = {name: sub.add_parser(name) for name in ("data", "run", "report")}
    for s in stages.values():
        s.add_argument("--data", default=os.path.join(REPO, "datasets", "parity_bytes"))
        s.add_argument("--steps", type=int, default=200)
        s.add_argument("--batch", type=int, default=8)
        s.add_argument("--seq-len", type=int, default=256)
    stages["data"].add_argument("--raw", default=RAW, help="text whose first bytes are the tokens")
    for name in ("run", "report"):
        stages[name].add_argument("--out", required=True)
    r = stages["run"]
    r.add_argument("--cuda-trainer", default=os.path.join(REPO, "train_ssdcu"), help="'' to skip it")
    r.add_argument("--cpu-trainer", default=os.path.join(REPO, "train_ssd"))
    r.add_argument("--cpu-steps", type=int, default=200, help="steps of the CPU trainer (0: only the init)")
    r.add_argument("--cpu-seconds", type=float, default=120.0, help="stop the CPU trainer after this long")
    r.add_argument("--skip-torch", action="store_true")
    r.add_argument("--device", default="cuda")
    r.add_argument("--torch-precision", choices=["fp32", "bf16"], default="fp32")
    r.add_argument("--lr", type=float, default=1e-3)
    r.add_argument("--warmup", type=int, default=20)
    r.add_argument("--final-lr-frac", type=float, default=0.1)
    r.add_argument("--weight-decay", type=float, default=0.1)
    r.add_argument("--clip", type=float, default=1.0)
    args = p.parse_args(argv)
    args.data = os.path.abspath(args.data)
    if args.stage == "data":
        make_data(args)
    elif args.stage == "run":
        args.out = os.path.abspath(args.out)
        run(args)
    else:
        args.out = os.path.abspath(args.out)
        report(args)


if __name__ == "__main__":
    main()
