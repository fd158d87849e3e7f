"""Logit parity between transformers' Mamba2ForCausalLM and the ssd.c CPU forward (needs torch and
transformers; not part of `make test`). For several configs (n_groups > 1, state_size != 128, odd
sequence lengths, padded vocabularies) it builds a randomly initialised model (no download),
save_pretrained()s it, imports it with scripts/hf_import.py, runs tests/logits_main and compares the
logits (max |diff| / max |ref| <= 1e-4 in fp32). It also checks the way back (hf_export.py output
loads with from_pretrained and gives the same logits) and the pytorch_model.bin / mamba_ssm path.

    python3 tests/hf_parity.py [--logits-main build/logits_main]
"""
import argparse
import inspect
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from ssd_model_file import read_model_file  # noqa: E402

CONFIGS = [  # (label, Mamba2Config kwargs, B, T)
    ("groups1_state16", dict(hidden_size=64, num_hidden_layers=2, vocab_size=1000, state_size=16, head_dim=16,
                             n_groups=1, chunk_size=16), 2, 37),
    ("groups2_state32_padvocab", dict(hidden_size=128, num_hidden_layers=2, vocab_size=517, state_size=32,
                                      head_dim=32, n_groups=2, chunk_size=32), 2, 53),
    ("groups4_state64_3layers", dict(hidden_size=96, num_hidden_layers=3, vocab_size=300, state_size=64,
                                     head_dim=24, n_groups=4, chunk_size=32, conv_kernel=3), 1, 129),
    ("state128_t1", dict(hidden_size=64, num_hidden_layers=1, vocab_size=256, state_size=128, head_dim=32,
                         n_groups=1, chunk_size=64), 3, 1),
]
TOLERANCE = 1e-4
from report import exit_status, report  # noqa: E402


def rel_error(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stdout}{r.stderr}")
    return r


def build_model(torch, transformers, kwargs, seed):
    torch.manual_seed(seed)
    D, P = kwargs["hidden_size"], kwargs["head_dim"]
    config = transformers.Mamba2Config(expand=2, num_heads=2 * D // P, tie_word_embeddings=True, **kwargs)
    model = transformers.Mamba2ForCausalLM(config).float().eval()
    with torch.no_grad():  # move every parameter off its default so that each one matters
        for name, p in model.named_parameters():
            if name.endswith(("norm.weight", "norm_f.weight", ".D")):
                p.copy_(1 + 0.3 * torch.randn_like(p))
            elif name.endswith("A_log"):
                p.copy_(torch.log(torch.rand_like(p) * 8 + 0.5))
            elif name.endswith("dt_bias"):
                p.copy_(torch.randn_like(p) * 0.5 - 2)
            elif name.endswith("conv1d.bias"):
                p.copy_(torch.randn_like(p) * 0.2)
    return model


def grouped_gated_norm_forward(self, hidden_states, gate=None):
    """The reference (mamba_ssm) gated RMSNorm: normalised over each group of d_inner / n_groups."""
    import torch
    dtype = hidden_states.dtype
    h = hidden_states.float()
    if gate is not None:
        h = h * torch.nn.functional.silu(gate.float())
    groups = h.view(*h.shape[:-1], -1, self.group_size)
    groups = groups * torch.rsqrt(groups.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
    return self.weight * groups.view(h.shape).to(dtype)


def use_reference_gated_norm(transformers, model):
    """Older transformers releases (seen: 5.17) normalise Mamba2's gated RMSNorm over all of d_inner,
    ignoring n_groups, unlike mamba_ssm (and ssd.c, and later transformers releases). With such a
    release, the layers' norms are switched to the reference's per-group norm so that n_groups > 1
    is compared against the reference definition. Returns True if it had to switch."""
    cls = transformers.models.mamba2.modeling_mamba2.MambaRMSNormGated
    if "group_size" in inspect.signature(cls.__init__).parameters:
        return False
    cls.forward = grouped_gated_norm_forward
    for layer in model.backbone.layers:
        layer.mixer.norm.group_size = layer.mixer.intermediate_size // layer.mixer.n_groups
    return True


def ssd_logits(logits_main, model_path, tokens, tmp):
    B, T = tokens.shape
    tok_path, out_path = os.path.join(tmp, "tokens.i32"), os.path.join(tmp, "logits.f32")
    tokens.astype("<i4").tofile(tok_path)
    run([logits_main, model_path, tok_path, str(B), str(T), out_path])
    return np.fromfile(out_path, dtype="<f4").reshape(B, T, -1)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logits-main", default=os.path.join(ROOT, "build", "logits_main"))
    args = parser.parse_args()
    try:
        import torch
        import transformers
    except ImportError as e:
        sys.exit(f"error: tests/hf_parity.py needs torch and transformers ({e})")
    if not os.path.exists(args.logits_main):
        sys.exit(f"error: {args.logits_main} not found; build it first (make build/logits_main)")
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="ssd_hf_parity_") as tmp:
        for i, (label, kwargs, B, T) in enumerate(CONFIGS):
            model = build_model(torch, transformers, kwargs, seed=i)
            if use_reference_gated_norm(transformers, model) and i == 0:
                print(f"note: transformers {transformers.__version__} ignores n_groups in the gated RMSNorm; "
                      "comparing with the reference mamba_ssm per-group norm")
            hf_dir, model_path = os.path.join(tmp, label), os.path.join(tmp, label + ".bin")
            model.save_pretrained(hf_dir)
            run([py, os.path.join(ROOT, "scripts", "hf_import.py"), "--in", hf_dir, "--out", model_path])
            rng = np.random.default_rng(i)
            tokens = rng.integers(0, kwargs["vocab_size"], size=(B, T))
            with torch.no_grad():
                ref = model(torch.from_numpy(tokens)).logits.float().numpy()
            ours = ssd_logits(args.logits_main, model_path, tokens, tmp)
            err = rel_error(ours, ref) if ours.shape == ref.shape else float("inf")
            report(err <= TOLERANCE, "hf_parity_logits", f"{label} (B={B}, T={T}, vocab {kwargs['vocab_size']}): "
                   f"ssd.c vs transformers logits rel err {err:.2e} (<= {TOLERANCE:g})")

            # the way back: export, load with from_pretrained, same logits as the original model
            out_dir = os.path.join(tmp, label + "_export")
            run([py, os.path.join(ROOT, "scripts", "hf_export.py"), "--in", model_path, "--out", out_dir])
            back = transformers.Mamba2ForCausalLM.from_pretrained(out_dir).float().eval()
            use_reference_gated_norm(transformers, back)
            with torch.no_grad():
                ref_back = back(torch.from_numpy(tokens)).logits.float().numpy()
            err_back = rel_error(ref_back, ref)
            report(err_back == 0.0, "hf_export_loads", f"{label}: from_pretrained(hf_export.py output) logits rel "
                   f"err {err_back:.2e} vs the original model (want exactly 0)")

        # pytorch_model.bin in the mamba_ssm naming imports to the same model file as the safetensors
        label, kwargs, _, _ = CONFIGS[1]
        model = build_model(torch, transformers, kwargs, seed=1)
        state = {k.replace("backbone.embeddings.", "backbone.embedding."): v for k, v in model.state_dict().items()}
        ssm_dir = os.path.join(tmp, "mamba_ssm_bin")
        os.makedirs(ssm_dir)
        torch.save(state, os.path.join(ssm_dir, "pytorch_model.bin"))
        c = model.config
        with open(os.path.join(ssm_dir, "config.json"), "w") as f:
            json.dump({"d_model": c.hidden_size, "d_intermediate": 0, "n_layer": c.num_hidden_layers,
                       "vocab_size": c.vocab_size, "pad_vocab_size_multiple": 16, "tie_embeddings": True,
                       "rms_norm": True, "ssm_cfg": {"layer": "Mamba2", "d_state": c.state_size,
                                                     "d_conv": c.conv_kernel, "expand": c.expand,
                                                     "headdim": c.head_dim, "ngroups": c.n_groups,
                                                     "chunk_size": c.chunk_size}}, f)
        bin_path = os.path.join(tmp, "from_bin.bin")
        run([py, os.path.join(ROOT, "scripts", "hf_import.py"), "--in", ssm_dir, "--out", bin_path])
        _, t_bin = read_model_file(bin_path)
        _, t_st = read_model_file(os.path.join(tmp, label + ".bin"))
        same = all(np.array_equal(t_bin[k], t_st[k]) for k in t_st)
        report(same, "hf_import_pytorch_bin", f"{label}: mamba_ssm pytorch_model.bin and transformers safetensors "
               f"import to {'identical' if same else 'DIFFERENT'} tensors")
    sys.exit(exit_status())


if __name__ == "__main__":
    main()
