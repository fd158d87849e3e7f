"""Task scores of an imported Hugging Face checkpoint against transformers (needs torch and transformers).

A randomly initialised Mamba2ForCausalLM (no download, parameters moved off their defaults as in
tests/hf_parity.py) is saved, imported with scripts/hf_import.py, and scored on a multiple-choice and
a last-word task by train_ssd (CPU, float) and the FP32 train_ssdcu (-x 0 -ta -tp). Each row's
log-likelihood must match transformers' fp32 log-likelihood of the same ending given the same
context within the logit parity tolerance of tests/hf_parity.py: max |diff| / max |ref| <= 1e-4
(relative to the largest |ll| of the task), the greedy flags agreeing except on near-ties.
"""
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from hf_parity import build_model, use_reference_gated_norm  # noqa: E402
from prepare_task import task_bytes  # noqa: E402

TOLERANCE = 1e-4
KWARGS = dict(hidden_size=64, num_hidden_layers=2, vocab_size=500, state_size=32, head_dim=16, n_groups=2,
              chunk_size=16)


def report(ok, name, detail):
    print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)
    return ok


def reference_rows(torch, model, items):
    """(ll, greedy) per row from transformers, one sequence at a time, fp32."""
    out = []
    for context, endings, _ in items:
        for ending in endings:
            seq = torch.tensor([context + ending])
            with torch.no_grad():
                logits = model(seq).logits[0, :-1].double()
            logp = torch.log_softmax(logits, dim=-1)
            targets = seq[0, 1:]
            first = len(context) - 1
            rows = logp[first:, :].gather(1, targets[first:, None])[:, 0]
            greedy = bool((logits[first:].max(dim=1).values <= logits[first:].gather(1, targets[first:, None])[:, 0]).all())
            out.append((float(rows.sum()), greedy))
    return out


def main():
    try:
        import torch
        import transformers
    except ImportError as e:
        sys.exit(f"error: tests/gpu/test_task_hf.py needs torch and transformers ({e})")
    ok = True
    rng = np.random.default_rng(5)
    V = KWARGS["vocab_size"]
    choice = [(rng.integers(0, V, int(rng.integers(5, 60))).tolist(),
               [rng.integers(0, V, int(rng.integers(1, 8))).tolist() for _ in range(4)], int(rng.integers(0, 4)))
              for _ in range(40)]
    last = [(c, [e[0]], 0) for c, e, _ in choice]
    with tempfile.TemporaryDirectory(prefix="ssd_task_hf_") as tmp:
        model = build_model(torch, transformers, KWARGS, seed=3)
        use_reference_gated_norm(transformers, model)
        hf_dir, model_path = os.path.join(tmp, "hf"), os.path.join(tmp, "model.bin")
        model.save_pretrained(hf_dir)
        subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "hf_import.py"), "--in", hf_dir, "--out",
                        model_path], check=True, capture_output=True)
        for kind, name, items in ((0, "mc", choice), (1, "lastword", last)):
            task_path = os.path.join(tmp, name + ".bin")
            with open(task_path, "wb") as f:
                f.write(task_bytes(kind, "", V, items))
            ref = reference_rows(torch, model, items)
            ref_ll = np.array([r[0] for r in ref])
            for label, binary in (("cpu", "./train_ssd"), ("gpu_fp32", "build/gpu/FP32/train_ssdcu")):
                rows_path = os.path.join(tmp, f"{name}_{label}.tsv")
                r = subprocess.run([binary, "-e", model_path, "-x", "0", "-v", "0", "-g", "0", "-b", "4", "-t", "64",
                                    "-ta", task_path, "-tp", rows_path], cwd=ROOT, capture_output=True, text=True)
                if r.returncode != 0:
                    ok &= report(False, f"task_hf_{name}_{label}", f"{binary} failed: {r.stderr[-300:]}")
                    continue
                table = np.genfromtxt(rows_path, names=True, delimiter="\t")
                ll, greedy = table["ll"], table["greedy"].astype(bool)
                err = float(np.max(np.abs(ll - ref_ll)) / np.max(np.abs(ref_ll))) if len(ll) == len(ref_ll) else np.inf
                flips = int(np.sum(greedy != np.array([r[1] for r in ref]))) if len(ll) == len(ref_ll) else len(ref)
                ok &= report(err <= TOLERANCE and not np.isnan(err) and flips <= 1, f"task_hf_{name}_{label}",
                             f"{len(ref)} rows: max |ll - transformers| / max |ll| {err:.2e} (<= {TOLERANCE:g}), "
                             f"greedy flags differ in {flips} (<= 1, near-ties)")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
