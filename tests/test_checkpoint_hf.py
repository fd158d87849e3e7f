"""Tests of the Hugging Face import/export and of the python model file code (needs numpy and
safetensors only): synthetic checkpoints in the mamba_ssm and transformers namings (safetensors,
sharded, bf16) land tensor by tensor where they should; import -> export -> import is lossless;
files written by python are read by the C reader and the other way round (through
build/tests/test_checkpoint --rewrite); bad checkpoints are refused with the culprit named."""
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
from safetensors.numpy import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from hf_mamba2 import ConversionError, export_checkpoint, import_checkpoint  # noqa: E402
from ssd_model_file import (ModelFileError, bf16_to_f32, f32_to_bf16, param_shapes,  # noqa: E402
                            read_model_file, write_model_file)

C_TOOL = os.path.join(ROOT, "build", "tests", "test_checkpoint")
from report import exit_status, report  # noqa: E402


# ---- synthetic Hugging Face checkpoints ----

SIZES = dict(D=32, L=2, V=100, N=8, P=16, G=2, K=4, Q=8, expand=2)


def hf_tensors(s, layout, rng, padded_rows=None):
    """A full set of random tensors under Hugging Face names; every tensor has distinct values."""
    E = s["expand"] * s["D"]
    H, gn = E // s["P"], s["G"] * s["N"]
    conv_dim, dip = E + 2 * gn, 2 * E + 2 * gn + H
    emb = "backbone.embedding.weight" if layout == "mamba_ssm" else "backbone.embeddings.weight"
    t = {emb: rng.standard_normal((padded_rows or s["V"], s["D"])), "backbone.norm_f.weight": rng.random(s["D"])}
    for layer in range(s["L"]):
        p = f"backbone.layers.{layer}."
        t[p + "norm.weight"] = rng.random(s["D"])
        t[p + "mixer.in_proj.weight"] = rng.standard_normal((dip, s["D"]))
        t[p + "mixer.conv1d.weight"] = rng.standard_normal((conv_dim, 1, s["K"]))
        t[p + "mixer.conv1d.bias"] = rng.standard_normal(conv_dim)
        t[p + "mixer.dt_bias"] = rng.standard_normal(H)
        t[p + "mixer.A_log"] = rng.random(H)
        t[p + "mixer.D"] = rng.random(H)
        t[p + "mixer.norm.weight"] = rng.random(E)
        t[p + "mixer.out_proj.weight"] = rng.standard_normal((s["D"], E))
    return {k: v.astype(np.float32) for k, v in t.items()}


def transformers_config(s):
    return {"architectures": ["Mamba2ForCausalLM"], "model_type": "mamba2", "hidden_size": s["D"],
            "num_hidden_layers": s["L"], "vocab_size": s["V"], "state_size": s["N"], "expand": s["expand"],
            "head_dim": s["P"], "num_heads": s["expand"] * s["D"] // s["P"], "n_groups": s["G"],
            "conv_kernel": s["K"], "chunk_size": s["Q"], "layer_norm_epsilon": 1e-5, "use_bias": False,
            "use_conv_bias": True, "tie_word_embeddings": True, "time_step_limit": [0.0, {"__float__": "Infinity"}]}


def mamba_ssm_config(s):
    return {"d_model": s["D"], "d_intermediate": 0, "n_layer": s["L"], "vocab_size": s["V"],
            "ssm_cfg": {"layer": "Mamba2", "d_state": s["N"], "d_conv": s["K"], "expand": s["expand"],
                        "headdim": s["P"], "ngroups": s["G"], "chunk_size": s["Q"]},
            "attn_layer_idx": [], "attn_cfg": {}, "rms_norm": True, "residual_in_fp32": True,
            "fused_add_norm": True, "pad_vocab_size_multiple": 16, "tie_embeddings": True}


def write_bf16_safetensors(path, tensors):
    """A safetensors file with BF16 tensors, written by hand (numpy has no bfloat16)."""
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        blob = f32_to_bf16(t).tobytes()
        header[name] = {"dtype": "BF16", "shape": list(t.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def make_checkpoint(directory, config, tensors, shards=None):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f)
    if shards is None:
        save_file(tensors, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
        return
    names = sorted(tensors)
    half = len(names) // 2
    weight_map = {}
    for i, part in enumerate([names[:half], names[half:]]):
        fname = f"model-{i + 1:05d}-of-00002.safetensors"
        sub = {n: tensors[n] for n in part}
        if shards == "bf16" and i == 1:
            write_bf16_safetensors(os.path.join(directory, fname), sub)
        else:
            save_file(sub, os.path.join(directory, fname), metadata={"format": "pt"})
        weight_map.update({n: fname for n in part})
    with open(os.path.join(directory, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)


def check_placement(cfg, ours, hf, layout, exact_rows, bf16_names=()):
    """Every Hugging Face tensor must equal the slice of ours it maps to; padding rows must be zero."""
    emb = "backbone.embedding.weight" if layout == "mamba_ssm" else "backbone.embeddings.weight"
    pairs = [("wte", None, emb), ("norm_f", None, "backbone.norm_f.weight")]
    names = {"norm_w": "norm.weight", "in_proj_w": "mixer.in_proj.weight", "conv_w": "mixer.conv1d.weight",
             "conv_b": "mixer.conv1d.bias", "dt_bias": "mixer.dt_bias", "A_log": "mixer.A_log", "D": "mixer.D",
             "gnorm_w": "mixer.norm.weight", "out_proj_w": "mixer.out_proj.weight"}
    for key, suffix in names.items():
        pairs += [(key, layer, f"backbone.layers.{layer}.{suffix}") for layer in range(cfg["n_layer"])]
    bad = []
    for key, layer, hf_name in pairs:
        want = hf[hf_name]
        if hf_name in bf16_names:
            want = bf16_to_f32(f32_to_bf16(want))
        got = ours[key] if layer is None else ours[key][layer]
        if key == "wte":
            if np.any(got[exact_rows:] != 0):
                bad.append("wte padding rows not zero")
            got = got[:exact_rows]
        if key == "conv_w":
            want = want[:, 0, :]
        if got.shape != want.shape or not np.array_equal(got, want):
            bad.append(hf_name)
    return len(pairs), bad


def test_import_layouts(tmp):
    rng = np.random.default_rng(0)
    cases = [
        ("transformers", "single", dict(SIZES), None),
        ("transformers", "sharded", dict(SIZES, G=1, N=12, V=90), None),
        ("transformers", "bf16", dict(SIZES, L=3), None),
        ("mamba_ssm", "single", dict(SIZES), 112),
    ]
    results = {}
    for layout, storage, s, padded in cases:
        label = f"{layout}/{storage}"
        d = os.path.join(tmp, f"hf_{layout}_{storage}")
        hf = hf_tensors(s, layout, rng, padded)
        if layout == "mamba_ssm":
            hf["lm_head.weight"] = hf["backbone.embedding.weight"].copy()
        config = transformers_config(s) if layout == "transformers" else mamba_ssm_config(s)
        make_checkpoint(d, config, hf, None if storage == "single" else storage)
        if storage == "sharded":
            with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
                json.dump({"name_or_path": "EleutherAI/gpt-neox-20b"}, f)
        cfg, ours, notes = import_checkpoint(d, pad_vocab_multiple=16)
        bf16_names = set()
        if storage == "bf16":
            names = sorted(hf)
            bf16_names = set(names[len(names) // 2:])
        count, bad = check_placement(cfg, ours, hf, layout, padded or s["V"], bf16_names)
        sizes_ok = (cfg["d_model"], cfg["n_layer"], cfg["vocab_size"], cfg["d_state"], cfg["ngroups"],
                    cfg["headdim"], cfg["padded_vocab"]) == (s["D"], s["L"], s["V"], s["N"], s["G"], s["P"],
                                                             -(-s["V"] // 16) * 16)
        want_tokenizer = "gpt-neox-20b" if layout == "mamba_ssm" or storage == "sharded" else ""
        report(not bad and sizes_ok and cfg["tokenizer"] == want_tokenizer,
               "hf_import_placement", f"{label}: {count} tensors checked one by one, misplaced: {bad or 'none'}; "
               f"config sizes {'match' if sizes_ok else 'WRONG'}; tokenizer '{cfg['tokenizer']}'")
        results[label] = (d, cfg, ours)
    return results


def test_roundtrip(tmp, results):
    for label, (d, cfg, ours) in results.items():
        path = os.path.join(tmp, label.replace("/", "_") + ".bin")
        write_model_file(path, cfg, ours)
        cfg1, t1 = read_model_file(path)
        out = os.path.join(tmp, label.replace("/", "_") + "_export")
        export_checkpoint(cfg1, t1, out)
        cfg2, t2, _ = import_checkpoint(out, pad_vocab_multiple=cfg1["pad_vocab_multiple"], name=cfg1["name"])
        same_t = all(np.array_equal(t1[k], t2[k]) for k in t1)
        skip = {"pad_vocab_multiple", "padded_vocab"}
        same_c = all(cfg1[k] == cfg2[k] for k in cfg1 if k not in skip)
        # the mamba_ssm padding rows are trained values: export drops them, the rest is exact
        V = cfg1["vocab_size"]
        same_vocab = np.array_equal(t1["wte"][:V], t2["wte"][:V])
        lossless = same_c and (same_t or (label.startswith("mamba_ssm") and same_vocab and all(
            np.array_equal(t1[k], t2[k]) for k in t1 if k != "wte")))
        with open(os.path.join(out, "config.json")) as f:
            hf_cfg = json.load(f)
        report(lossless and hf_cfg["tie_word_embeddings"] and hf_cfg["num_heads"] == cfg1["nheads"],
               "hf_roundtrip", f"{label}: model file -> export -> import: tensors {'bit-exact' if same_t else 'exact except the dropped padding rows' if lossless else 'DIFFER'}, config {'equal' if same_c else 'DIFFERS'}")


def test_export_permissions(tmp, results):
    """The exported files get the mode of any new file (0666 less the umask), not safetensors' private 0600."""
    label, (d, cfg, ours) = next(iter(results.items()))
    out = os.path.join(tmp, "export_mode")
    old = os.umask(0o022)
    try:
        export_checkpoint(cfg, ours, out)
    finally:
        os.umask(old)
    modes = {name: os.stat(os.path.join(out, name)).st_mode & 0o777 for name in ("config.json", "model.safetensors")}
    report(modes == {"config.json": 0o644, "model.safetensors": 0o644}, "hf_export_permissions",
           f"umask 022: {', '.join(f'{n} {m:o}' for n, m in modes.items())} (0644: readable by everyone)")


def run(cmd):
    return subprocess.run(cmd, capture_output=True, text=True)


def test_c_interop(tmp, results):
    if not os.path.exists(C_TOOL):
        run(["make", "-s", "-C", ROOT, "build/tests/test_checkpoint"])
    d, cfg, ours = results["transformers/single"]
    for py_dtype in ("fp32", "bf16"):
        py_path = os.path.join(tmp, f"py_{py_dtype}.bin")
        crc = write_model_file(py_path, cfg, ours, bf16=py_dtype == "bf16")
        _, py_t = read_model_file(py_path)
        for c_dtype in ("fp32", "bf16"):
            c_path = os.path.join(tmp, f"c_from_{py_dtype}_{c_dtype}.bin")
            r = run([C_TOOL, "--rewrite", py_path, c_path, c_dtype])
            if r.returncode:
                report(False, "c_reads_python", f"{py_dtype} -> C {c_dtype}: {r.stderr.strip()}")
                continue
            c_cfg, c_t = read_model_file(c_path)
            want = {k: bf16_to_f32(f32_to_bf16(v)) if c_dtype == "bf16" else v for k, v in py_t.items()}
            same = all(np.array_equal(c_t[k], want[k]) for k in want)
            same_cfg = all(c_cfg.get(k, "") == cfg[k] or (isinstance(cfg[k], float) and np.float32(c_cfg[k]) ==
                                                  np.float32(cfg[k])) for k in cfg)
            with open(py_path, "rb") as f:
                py_bytes = f.read()
            with open(c_path, "rb") as f:
                c_bytes = f.read()
            py_json = struct.unpack_from("<I", py_bytes, 112)[0]
            c_json = struct.unpack_from("<I", c_bytes, 112)[0]
            same_data = py_dtype != c_dtype or (py_bytes[128 + py_json:] == c_bytes[128 + c_json:] and
                                                struct.unpack_from("<I", c_bytes, 116)[0] == crc)
            report(same and same_cfg and same_data, "c_python_interop",
                   f"python {py_dtype} -> C reader -> C writer {c_dtype} -> python reader: values "
                   f"{'exact' if same else 'DIFFER'}, config {'equal' if same_cfg else 'DIFFERS'}"
                   f"{', tensor bytes and data CRC identical' if py_dtype == c_dtype and same_data else ''}")


def expect_error(label, fn, must_contain):
    try:
        fn()
    except (ConversionError, ModelFileError) as e:
        report(must_contain in str(e), "refuses_bad_input", f"{label}: {e}")
        return
    except Exception as e:  # any other exception is a crash, not a clear refusal
        report(False, "refuses_bad_input", f"{label}: crashed with {type(e).__name__}: {e}")
        return
    report(False, "refuses_bad_input", f"{label}: accepted")


def test_bad_inputs(tmp):
    rng = np.random.default_rng(1)
    s = dict(SIZES)

    def variant(name, edit_config=None, edit_tensors=None, layout="transformers"):
        d = os.path.join(tmp, "bad_" + name)
        hf = hf_tensors(s, layout, rng, 112 if layout == "mamba_ssm" else None)
        config = transformers_config(s) if layout == "transformers" else mamba_ssm_config(s)
        if edit_config:
            edit_config(config)
        if edit_tensors:
            edit_tensors(hf)
        make_checkpoint(d, config, hf)
        return lambda: import_checkpoint(d)

    def drop(name):
        return lambda t: t.pop(name)

    def reshape(name):
        return lambda t: t.__setitem__(name, t[name][:-1])

    expect_error("wrong shape", variant("shape", edit_tensors=reshape("backbone.layers.1.mixer.in_proj.weight")),
                 "backbone.layers.1.mixer.in_proj.weight")
    expect_error("missing tensor", variant("missing", edit_tensors=drop("backbone.layers.0.mixer.dt_bias")),
                 "backbone.layers.0.mixer.dt_bias")
    expect_error("extra tensor", variant("extra", edit_tensors=lambda t: t.__setitem__(
        "backbone.layers.0.mixer.in_proj.bias", np.ones(3, np.float32))), "in_proj.bias")
    expect_error("untied lm_head", variant("untied", edit_tensors=lambda t: t.__setitem__(
        "lm_head.weight", t["backbone.embeddings.weight"] + 1)), "lm_head.weight differs")
    expect_error("Mamba1 layer", variant("mamba1", edit_config=lambda c: c["ssm_cfg"].pop("layer"),
                                         layout="mamba_ssm"), "only Mamba2")
    expect_error("in_proj bias", variant("bias", edit_config=lambda c: c.update(use_bias=True)), "use_bias")
    expect_error("dt limit", variant("limit", edit_config=lambda c: c.update(time_step_limit=[0.0, 1.0])), "dt limit")
    expect_error("heads mismatch", variant("heads", edit_config=lambda c: c.update(num_heads=3)), "num_heads")
    expect_error("embedding rows", variant("rows", edit_tensors=lambda t: t.__setitem__(
        "backbone.embeddings.weight", t["backbone.embeddings.weight"][:97])), "97 rows")

    # a bad safetensors header
    d = os.path.join(tmp, "bad_safetensors")
    os.makedirs(d)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(transformers_config(s), f)
    with open(os.path.join(d, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", 10 ** 9) + b"{}")
    expect_error("corrupt safetensors", lambda: import_checkpoint(d), "exceeds the file size")

    # python reader: truncations and bit flips are refused with ModelFileError, never another exception
    cfg, ours, _ = import_checkpoint(os.path.join(tmp, "hf_transformers_single"))
    path = os.path.join(tmp, "fuzz.bin")
    write_model_file(path, cfg, ours)
    with open(path, "rb") as f:
        orig = f.read()
    mutated_path = os.path.join(tmp, "fuzz_mut.bin")
    refused = crashed = accepted = 0
    for i in range(600):
        b = bytearray(orig)
        if i % 2:
            b = b[:int(rng.integers(0, len(b)))]
        else:
            pos = int(rng.integers(0, 400 if i % 4 else len(b)))
            b[pos] ^= 1 << int(rng.integers(0, 8))
        with open(mutated_path, "wb") as f:
            f.write(b)
        try:
            read_model_file(mutated_path)
            accepted += 1
        except ModelFileError as e:
            refused += mutated_path in str(e)
        except Exception:
            crashed += 1
    report(refused == 600 and not crashed, "python_reader_fuzz",
           f"600 truncated/bit-flipped files: {refused} refused naming the file, {accepted} accepted, {crashed} crashed")

    # the CLIs exit non-zero with the message
    r = run([sys.executable, os.path.join(ROOT, "scripts", "hf_export.py"), "--in", mutated_path, "--out",
             os.path.join(tmp, "never")])
    report(r.returncode != 0 and "error:" in r.stderr and mutated_path in r.stderr, "cli_errors",
           f"hf_export.py on a corrupt file: exit {r.returncode}, '{r.stderr.strip()}'")
    r = run([sys.executable, os.path.join(ROOT, "scripts", "hf_import.py"), "--in", os.path.join(tmp, "bad_shape"),
             "--out", os.path.join(tmp, "never.bin")])
    report(r.returncode != 0 and "in_proj.weight" in r.stderr and not os.path.exists(os.path.join(tmp, "never.bin")),
           "cli_errors", f"hf_import.py on a wrong shape: exit {r.returncode}, '{r.stderr.strip()}'")


def test_diagonal(tmp):
    cfg = {"name": "diag", "d_model": 16, "n_layer": 2, "vocab_size": 50, "pad_vocab_multiple": 8, "d_state": 4,
           "d_conv": 4, "expand": 2, "headdim": 8, "ngroups": 2, "chunk_size": 4, "a_structure": "diagonal"}
    rng = np.random.default_rng(2)
    tensors = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in param_shapes(cfg)}
    path = os.path.join(tmp, "diag.bin")
    write_model_file(path, cfg, tensors)
    c_path = os.path.join(tmp, "diag_c.bin")
    r = run([C_TOOL, "--rewrite", path, c_path, "fp32"])
    _, t_c = read_model_file(c_path) if r.returncode == 0 else (None, {})
    report(r.returncode == 0 and all(np.array_equal(t_c[k], tensors[k]) for k in tensors), "c_python_interop",
           f"diagonal A_log {tensors['A_log'].shape}: python -> C -> python exact")
    r = run([sys.executable, os.path.join(ROOT, "scripts", "hf_export.py"), "--in", path, "--out",
             os.path.join(tmp, "diag_refused")])
    report(r.returncode != 0 and "diagonal" in r.stderr, "hf_export_diagonal", f"refused without --allow-diagonal: "
           f"'{r.stderr.strip()[:120]}...'")
    out = os.path.join(tmp, "diag_export")
    r = run([sys.executable, os.path.join(ROOT, "scripts", "hf_export.py"), "--in", path, "--out", out,
             "--allow-diagonal"])
    cfg2, t2, _ = import_checkpoint(out, pad_vocab_multiple=8, name="diag")
    V = cfg["vocab_size"]
    same = all(np.array_equal(t2[k], tensors[k]) for k in tensors if k != "wte") and np.array_equal(
        t2["wte"][:V], tensors["wte"][:V])
    report(r.returncode == 0 and "cannot load" in r.stderr and cfg2["a_structure"] == "diagonal" and same,
           "hf_export_diagonal", f"with --allow-diagonal: A_log {t2['A_log'].shape} round trip exact, note printed")
    nested = os.path.join(tmp, "not", "made", "yet", "diag.bin")
    r = run([sys.executable, os.path.join(ROOT, "scripts", "hf_import.py"), "--in", out, "--out", nested])
    report(r.returncode == 0 and os.path.isfile(nested), "hf_import_makes_folder",
           f"--out into a folder that does not exist yet: exit {r.returncode} {r.stderr.strip()[:120]}")


def main():
    with tempfile.TemporaryDirectory(prefix="ssd_test_hf_") as tmp:
        results = test_import_layouts(tmp)
        test_roundtrip(tmp, results)
        test_export_permissions(tmp, results)
        test_c_interop(tmp, results)
        test_bad_inputs(tmp)
        test_diagonal(tmp)
    sys.exit(exit_status())


if __name__ == "__main__":
    main()
