#!/usr/bin/env python3
"""
The parts of scripts/parity_torch.py that need no torch: its batches equal the C loader's unshuffled ones
(build/tests/test_data_loader dump, -sh 0 layout); the parameters it decays are exactly the exported
in_proj, out_proj and conv1d weights of every layer (model/params.c param_has_weight_decay); its learning
rate matches train/schedule.c at the warmup, peak and end; the trainer's step lines parse.
"""
import os
import subprocess
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))
from hf_mamba2 import export_checkpoint  # noqa: E402
from parity_torch import CONFIG, batch_tokens, decayed_hf_names, parse_trainer_log, schedule_lr  # noqa: E402
from prepro_shards import write_shard  # noqa: E402
from ssd_model_file import config_check, param_shapes  # noqa: E402

DRIVER = os.path.join(REPO, "build", "tests", "test_data_loader")
from report import exit_status, report  # noqa: E402


def test_batches(tmp):
    B, T, steps = 3, 5, 4
    tokens = np.random.default_rng(1).integers(0, 256, steps * B * T + 1)
    shard = os.path.join(tmp, "p_train_000000.bin")
    write_shard(shard, tokens, 256)
    out = subprocess.run([DRIVER, "dump", shard, *map(str, (B, T, 0, 1, 0, 1, 256, steps))], capture_output=True, check=True)
    ints = np.frombuffer(out.stdout, dtype=np.int32).reshape(steps, 2, B, T)
    same = all(np.array_equal(ints[s, 0], batch_tokens(tokens, s, B, T)[0]) and
               np.array_equal(ints[s, 1], batch_tokens(tokens, s, B, T)[1]) for s in range(steps))
    report(same, "parity_batches", f"{steps} steps of B={B} x T={T}: the C loader's unshuffled batches")


def test_decay_names(tmp):
    cfg = config_check(dict(CONFIG))
    tensors = {name: np.zeros(shape, dtype=np.float32) for name, shape in param_shapes(cfg)}
    export_checkpoint(cfg, tensors, os.path.join(tmp, "hf"))
    from safetensors.numpy import load_file
    names = set(load_file(os.path.join(tmp, "hf", "model.safetensors")))
    decayed = decayed_hf_names(cfg["n_layer"])
    expected = {n for n in names if n.endswith(("in_proj.weight", "out_proj.weight", "conv1d.weight"))}
    report(decayed == expected and len(decayed) == 3 * cfg["n_layer"], "parity_decay_groups",
           f"{len(decayed)} decayed tensors, all exported; not decayed: {len(names - decayed)} (embedding, norms, "
           "conv bias, dt_bias, A_log, D)")


def test_schedule():
    lr = [schedule_lr(s, 1e-3, 20, 200, 0.1) for s in range(200)]
    ok = abs(lr[0] - 5e-5) < 1e-12 and abs(lr[19] - 1e-3) < 1e-12 and abs(lr[20] - 1e-3) < 1e-12 and \
        abs(lr[199] - 1e-4) < 1e-12 and all(a >= b for a, b in zip(lr[20:], lr[21:]))
    report(ok, "parity_schedule", f"warmup {lr[0]:.2e}..{lr[19]:.2e}, peak {lr[20]:.2e}, end {lr[199]:.2e}, non-increasing")


def test_parse(tmp):
    log = os.path.join(tmp, "t.log")
    with open(log, "w") as f:
        f.write("step     1/6 | loss 5.571950 | norm 1.8811 | lr 5.00e-05 | 14100.7 ms | 145 tok/s\nnoise\n"
                "step     2/6 | loss 5.558801 | norm 2.0496 | lr 1.00e-04 | 13535.6 ms | 151 tok/s\n")
    steps = parse_trainer_log(log)
    report(steps == {0: (5.57195, 1.8811, 14100.7), 1: (5.558801, 2.0496, 13535.6)}, "parity_parse_log", str(steps))


def main():
    if not os.path.isfile(DRIVER):
        report(False, "parity_driver", f"{DRIVER} is missing: run `make test`")
        sys.exit(1)
    with tempfile.TemporaryDirectory() as tmp:
        test_batches(tmp)
        test_decay_names(tmp)
        test_schedule()
        test_parse(tmp)
    sys.exit(exit_status())


if __name__ == "__main__":
    main()
