"""Conversion between Hugging Face Mamba-2 checkpoints and ssd.c model files (numpy only; torch is
imported only to read a pytorch_model.bin).

Two Hugging Face layouts are read:
  mamba_ssm     (as published for state-spaces/mamba2-*): config keys d_model, n_layer, vocab_size,
                pad_vocab_size_multiple, ssm_cfg{layer: "Mamba2", d_state, ...}; tensors
                backbone.embedding.weight, backbone.layers.N.{norm, mixer.*}, backbone.norm_f, lm_head
  transformers  (Mamba2ForCausalLM): config keys hidden_size, num_hidden_layers, state_size, expand,
                head_dim, num_heads, n_groups, conv_kernel, chunk_size, layer_norm_epsilon, ...;
                tensors backbone.embeddings.weight, ... (same per-layer names)
Export writes the transformers layout. The embedding of an ssd.c model has padded_vocab rows (rows
>= vocab_size are padding that the classifier masks); transformers' has vocab_size rows, so export
drops the padding rows and import pads with zero rows.
"""
import json
import os
import struct
import sys

import numpy as np

from ssd_model_file import ModelFileError, config_check, param_shapes

SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "BF16": np.uint16}
LAYER_TENSORS = {  # our tensor -> Hugging Face name inside backbone.layers.N.
    "norm_w": "norm.weight", "in_proj_w": "mixer.in_proj.weight", "conv_w": "mixer.conv1d.weight",
    "conv_b": "mixer.conv1d.bias", "dt_bias": "mixer.dt_bias", "A_log": "mixer.A_log", "D": "mixer.D",
    "gnorm_w": "mixer.norm.weight", "out_proj_w": "mixer.out_proj.weight",
}
EMBEDDING_NAME = {"mamba_ssm": "backbone.embedding.weight", "transformers": "backbone.embeddings.weight"}
TOKENIZER_KEY = "ssd_c_tokenizer"        # extra keys that export adds to config.json; transformers keeps them
A_STRUCTURE_KEY = "ssd_c_a_structure"


class ConversionError(ValueError):
    """A checkpoint that cannot be converted; the message says which file, key or tensor."""


# ---- reading tensors ----

def bf16_bits_to_f32(bits):
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


def read_safetensors_index(path):
    """{tensor name: (path, dtype, shape, start, end)} of one .safetensors file, checking its header."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ConversionError(f"{path}: too short for a safetensors file")
        n = struct.unpack("<Q", head)[0]
        if n > size - 8:
            raise ConversionError(f"{path}: safetensors header length {n} exceeds the file size {size}")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConversionError(f"{path}: safetensors header is not valid JSON: {e}") from e
    entries = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype, shape, (start, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
        if dtype not in SAFETENSORS_DTYPES:
            raise ConversionError(f"{path}: tensor '{name}' has unsupported dtype {dtype}")
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(SAFETENSORS_DTYPES[dtype]).itemsize
        if end - start != nbytes or start < 0 or 8 + n + end > size:
            raise ConversionError(f"{path}: tensor '{name}' data offsets {start}..{end} do not fit shape {shape} "
                                  f"{dtype} in a file of {size} bytes")
        entries[name] = (path, dtype, shape, 8 + n + start, 8 + n + end)
    return entries


class TensorSource:
    """The tensors of a checkpoint directory, read lazily as fp32 numpy arrays."""

    def __init__(self, directory):
        self.entries, self.loaded = {}, None
        single = os.path.join(directory, "model.safetensors")
        index = os.path.join(directory, "model.safetensors.index.json")
        torch_bin = os.path.join(directory, "pytorch_model.bin")
        if os.path.exists(single):
            self.entries = read_safetensors_index(single)
        elif os.path.exists(index):
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
            for shard in sorted(set(weight_map.values())):
                self.entries.update(read_safetensors_index(os.path.join(directory, shard)))
        elif os.path.exists(torch_bin):
            self.loaded = load_torch_bin(torch_bin)
        else:
            raise ConversionError(f"{directory}: no model.safetensors, model.safetensors.index.json or "
                                  "pytorch_model.bin")

    def names(self):
        return set(self.loaded if self.loaded is not None else self.entries)

    def get(self, name):
        if self.loaded is not None:
            return self.loaded[name]
        path, dtype, shape, start, end = self.entries[name]
        raw = np.memmap(path, dtype=np.uint8, mode="r", offset=start, shape=(end - start,)) if end > start else \
            np.zeros(0, np.uint8)
        values = raw.view(np.dtype(SAFETENSORS_DTYPES[dtype]).newbyteorder("<")).reshape(shape)
        return bf16_bits_to_f32(values) if dtype == "BF16" else values.astype(np.float32)


def load_torch_bin(path):
    try:
        import torch
    except ImportError:
        sys.exit(f"error: reading '{path}' needs PyTorch (pip install torch); a model.safetensors needs only numpy")
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {name: t.detach().float().numpy() for name, t in state.items()}


# ---- Hugging Face config -> ssd.c config ----

def is_infinite(x):
    if isinstance(x, dict):  # newer transformers write {"__float__": "Infinity"}
        x = x.get("__float__")
    return isinstance(x, str) and x.lower() in ("inf", "infinity") or isinstance(x, float) and x == float("inf")


def check_dt_limit(limit, source):
    if limit is not None and not (len(limit) == 2 and limit[0] == 0 and is_infinite(limit[1])):
        raise ConversionError(f"{source}: dt limit {limit} is not supported (ssd.c does not clamp dt)")


def require(cond, message):
    if not cond:
        raise ConversionError(message)


def detect_layout(hf, src):
    if hf.get("model_type") == "mamba2" or "hidden_size" in hf:
        return "transformers"
    if "d_model" in hf and "n_layer" in hf:
        return "mamba_ssm"
    raise ConversionError(f"{src}: neither a mamba_ssm config (d_model, n_layer, ssm_cfg) nor a transformers "
                          "Mamba2 config (model_type \"mamba2\", hidden_size, ...)")


def config_from_mamba_ssm(hf, src):
    ssm = hf.get("ssm_cfg", {})
    require(ssm.get("layer", "Mamba1") == "Mamba2", f"{src}: ssm_cfg.layer is {ssm.get('layer', 'Mamba1')!r}; only "
            "Mamba2 checkpoints can be imported")
    require(hf.get("d_intermediate", 0) == 0, f"{src}: d_intermediate != 0 (MLP blocks) is not supported")
    require(not hf.get("attn_layer_idx"), f"{src}: attention layers (attn_layer_idx) are not supported")
    require(hf.get("rms_norm", True), f"{src}: rms_norm = false (LayerNorm) is not supported")
    require(hf.get("tie_embeddings", True), f"{src}: tie_embeddings = false is not supported (ssd.c ties them)")
    require(ssm.get("rmsnorm", True) and not ssm.get("norm_before_gate", False),
            f"{src}: ssm_cfg must use the gated RMSNorm after the gate (rmsnorm true, norm_before_gate false)")
    require(not ssm.get("D_has_hdim", False), f"{src}: ssm_cfg.D_has_hdim is not supported")
    require(not ssm.get("bias", False), f"{src}: ssm_cfg.bias (in_proj/out_proj bias) is not supported")
    require(ssm.get("d_ssm") in (None, ssm.get("expand", 2) * hf["d_model"]),
            f"{src}: ssm_cfg.d_ssm smaller than d_inner (partial SSM) is not supported")
    require(ssm.get("activation", "silu") == "silu", f"{src}: only the silu activation is supported")
    check_dt_limit(ssm.get("dt_limit"), src)
    return {
        "d_model": hf["d_model"], "n_layer": hf["n_layer"], "vocab_size": hf["vocab_size"],
        "pad_vocab_multiple": hf.get("pad_vocab_size_multiple", 8), "d_state": ssm.get("d_state", 128),
        "d_conv": ssm.get("d_conv", 4), "expand": ssm.get("expand", 2), "headdim": ssm.get("headdim", 64),
        "ngroups": ssm.get("ngroups", 1), "chunk_size": ssm.get("chunk_size", 256), "a_structure": "scalar",
        "dt_min": ssm.get("dt_min", 1e-3), "dt_max": ssm.get("dt_max", 0.1),
        "dt_init_floor": ssm.get("dt_init_floor", 1e-4), "norm_eps": hf.get("norm_epsilon", 1e-5),
    }, hf.get("conv_bias", ssm.get("conv_bias", True))


def config_from_transformers(hf, pad_vocab_multiple, src):
    D, expand = hf["hidden_size"], hf.get("expand", 2)
    require(float(expand).is_integer(), f"{src}: non-integer expand {expand} is not supported")
    expand = int(expand)
    head_dim = hf.get("head_dim", 64)
    num_heads = hf.get("num_heads", expand * D // head_dim)
    require(num_heads * head_dim == expand * D, f"{src}: num_heads * head_dim = {num_heads * head_dim} must equal "
            f"expand * hidden_size = {expand * D}")
    require(not hf.get("use_bias", False), f"{src}: use_bias = true (in_proj/out_proj bias) is not supported")
    require(hf.get("hidden_act", "silu") == "silu", f"{src}: only hidden_act \"silu\" is supported")
    require(hf.get("rms_norm", True), f"{src}: rms_norm = false is not supported")
    check_dt_limit(hf.get("time_step_limit"), src)
    return {
        "d_model": D, "n_layer": hf["num_hidden_layers"], "vocab_size": hf["vocab_size"],
        "pad_vocab_multiple": pad_vocab_multiple, "d_state": hf.get("state_size", 128),
        "d_conv": hf.get("conv_kernel", 4), "expand": expand, "headdim": head_dim, "ngroups": hf.get("n_groups", 8),
        "chunk_size": hf.get("chunk_size", 256), "a_structure": hf.get(A_STRUCTURE_KEY, "scalar"),
        "dt_min": hf.get("time_step_min", 1e-3), "dt_max": hf.get("time_step_max", 0.1),
        "dt_init_floor": hf.get("time_step_floor", 1e-4), "norm_eps": hf.get("layer_norm_epsilon", 1e-5),
    }, hf.get("use_conv_bias", True)


def default_tokenizer(directory, hf, layout):
    if hf.get(TOKENIZER_KEY):
        return hf[TOKENIZER_KEY]
    if layout == "mamba_ssm":
        return "gpt-neox-20b"  # every state-spaces Mamba/Mamba-2 checkpoint uses it
    tok_config = os.path.join(directory, "tokenizer_config.json")
    if os.path.exists(tok_config):
        with open(tok_config) as f:
            name = json.load(f).get("name_or_path", "")
        return os.path.basename(name.rstrip("/"))[:63]
    return ""


# ---- import ----

def import_checkpoint(directory, pad_vocab_multiple=16, name=None, tokenizer=None):
    """Reads a Hugging Face Mamba-2 directory; returns (ssd.c config dict, {tensor: array}, notes)."""
    config_path = os.path.join(directory, "config.json")
    try:
        with open(config_path) as f:
            hf = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ConversionError(f"{config_path}: {e}") from e
    layout = detect_layout(hf, config_path)
    try:
        if layout == "mamba_ssm":
            cfg, conv_bias = config_from_mamba_ssm(hf, config_path)
        else:
            cfg, conv_bias = config_from_transformers(hf, pad_vocab_multiple, config_path)
    except KeyError as e:
        raise ConversionError(f"{config_path}: missing key {e}") from e
    cfg["name"] = (name or os.path.basename(os.path.normpath(directory)))[:63]
    cfg["tokenizer"] = tokenizer if tokenizer is not None else default_tokenizer(directory, hf, layout)
    try:
        cfg = config_check(cfg, f"{config_path} (as an ssd.c config)")
    except ModelFileError as e:
        raise ConversionError(str(e)) from e
    notes = [f"layout: {layout}", f"tokenizer: {cfg['tokenizer'] or 'unknown (pass --tokenizer)'}"]

    source = TensorSource(directory)
    names = source.names()
    used = set()

    def fetch(hf_name, shape):
        if hf_name not in names:
            raise ConversionError(f"{directory}: tensor '{hf_name}' is missing")
        t = source.get(hf_name)
        if tuple(t.shape) != tuple(shape):
            raise ConversionError(f"{directory}: tensor '{hf_name}' has shape {tuple(t.shape)}, expected "
                                  f"{tuple(shape)}")
        used.add(hf_name)
        return t

    shapes = dict(param_shapes(cfg))
    L, D, V, Vp = cfg["n_layer"], cfg["d_model"], cfg["vocab_size"], cfg["padded_vocab"]
    emb_name = EMBEDDING_NAME[layout]
    if emb_name not in names:
        raise ConversionError(f"{directory}: tensor '{emb_name}' is missing (is this a {layout} checkpoint?)")
    rows = source.get(emb_name).shape[0]
    if rows not in (V, Vp):
        raise ConversionError(f"{directory}: '{emb_name}' has {rows} rows; expected vocab_size {V} or {V} padded to "
                              f"a multiple of {cfg['pad_vocab_multiple']} ({Vp})")
    wte = np.zeros((Vp, D), np.float32)
    wte[:rows] = fetch(emb_name, (rows, D))
    if rows < Vp:
        notes.append(f"embedding: {rows} rows padded with zeros to {Vp}")
    if "lm_head.weight" in names:
        head = fetch("lm_head.weight", (rows, D))
        if not np.array_equal(head, wte[:rows]):
            raise ConversionError(f"{directory}: lm_head.weight differs from {emb_name}; ssd.c ties the classifier "
                                  "to the embedding, untied checkpoints are not supported")

    tensors = {"wte": wte, "norm_f": fetch("backbone.norm_f.weight", (D,))}
    for ours, hf_suffix in LAYER_TENSORS.items():
        per_layer = shapes[ours][1:]
        stacked = np.empty((L,) + per_layer, np.float32)
        for layer in range(L):
            hf_name = f"backbone.layers.{layer}.{hf_suffix}"
            if ours == "conv_w":
                stacked[layer] = fetch(hf_name, (per_layer[0], 1, per_layer[1]))[:, 0, :]
            elif ours == "conv_b" and not conv_bias:
                stacked[layer] = 0.0  # a convolution without bias is one with a zero bias
            else:
                stacked[layer] = fetch(hf_name, per_layer)
        tensors[ours] = stacked
    unused = sorted(names - used)
    if unused:
        raise ConversionError(f"{directory}: tensors not understood: {', '.join(unused[:8])}"
                              f"{' ...' if len(unused) > 8 else ''}")
    return cfg, tensors, notes


# ---- export ----

def export_checkpoint(cfg, tensors, directory, allow_diagonal=False):
    """Writes config.json + model.safetensors in the transformers Mamba2ForCausalLM layout; returns notes."""
    from safetensors.numpy import save_file

    cfg = config_check(cfg)
    notes = []
    if cfg["a_structure"] == "diagonal":
        if not allow_diagonal:
            raise ConversionError("this is a diagonal-A (SSD-Mamba) model and transformers has no diagonal Mamba2: "
                                  "refusing to export (pass --allow-diagonal to write the same layout with A_log of "
                                  "shape [heads, d_state], readable by hf_import.py but not by transformers)")
        notes.append("diagonal A: A_log is [heads, d_state] and config.json has \"ssd_c_a_structure\": \"diagonal\"; "
                     "transformers' Mamba2ForCausalLM cannot load this checkpoint")
    L, V, Vp = cfg["n_layer"], cfg["vocab_size"], cfg["padded_vocab"]
    out = {"backbone.embeddings.weight": tensors["wte"][:V], "backbone.norm_f.weight": tensors["norm_f"]}
    if Vp > V:
        notes.append(f"embedding: the {Vp - V} padding rows are dropped (transformers has vocab_size rows)")
    for ours, hf_suffix in LAYER_TENSORS.items():
        for layer in range(L):
            t = tensors[ours][layer]
            out[f"backbone.layers.{layer}.{hf_suffix}"] = t[:, None, :] if ours == "conv_w" else t
    out = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}
    hf = {
        "architectures": ["Mamba2ForCausalLM"], "model_type": "mamba2", "hidden_size": cfg["d_model"],
        "num_hidden_layers": L, "vocab_size": V, "state_size": cfg["d_state"], "expand": cfg["expand"],
        "head_dim": cfg["headdim"], "num_heads": cfg["nheads"], "n_groups": cfg["ngroups"],
        "conv_kernel": cfg["d_conv"], "chunk_size": cfg["chunk_size"], "layer_norm_epsilon": cfg["norm_eps"],
        "time_step_min": cfg["dt_min"], "time_step_max": cfg["dt_max"], "time_step_floor": cfg["dt_init_floor"],
        "use_bias": False, "use_conv_bias": True, "hidden_act": "silu", "rms_norm": True, "residual_in_fp32": True,
        "tie_word_embeddings": True, "torch_dtype": "float32", TOKENIZER_KEY: cfg.get("tokenizer", ""),
        A_STRUCTURE_KEY: cfg["a_structure"],
    }
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(hf, f, indent=2)
    path = os.path.join(directory, "model.safetensors")
    save_file(out, path, metadata={"format": "pt"})
    # safetensors writes through a private temporary file (mode 0600); give it the mode any new file gets
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)
    return notes
