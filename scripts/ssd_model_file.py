"""Reads and writes ssd.c model files with numpy: the same format as train/checkpoint.c
(documented in train/checkpoint.h), the same parameter layout as model/params.h and the same
config checks as model/config.c."""
import json
import os
import struct
import zlib

import numpy as np

MAGIC = b"SSDMODEL"
VERSION = 1
HEADER_BYTES = 128
MAX_JSON_BYTES = 65536
DTYPE_FP32, DTYPE_BF16 = 0, 1
PARAM_NAMES = ["wte", "norm_w", "in_proj_w", "conv_w", "conv_b", "dt_bias", "A_log", "D", "gnorm_w",
               "out_proj_w", "norm_f"]
REQUIRED_INT_FIELDS = ["d_model", "n_layer", "vocab_size", "pad_vocab_multiple", "d_state", "d_conv", "expand",
                       "headdim", "ngroups", "chunk_size"]
FLOAT_FIELDS = {"dt_min": 1e-3, "dt_max": 0.1, "dt_init_floor": 1e-4, "norm_eps": 1e-5}
STRING_FIELDS = ["name", "tokenizer"]
DERIVED_FIELDS = {"d_inner", "nheads", "conv_dim", "d_in_proj", "padded_vocab", "a_per_head"}
# header: magic, version, dtype, num_params, 11 sizes, json_bytes, data_crc, reserved, header_crc
HEADER_STRUCT = struct.Struct("<8sIIQ11QIIII")
assert HEADER_STRUCT.size == HEADER_BYTES


class ModelFileError(ValueError):
    """A model file or config that cannot be read or written; the message names the file or field."""


def config_check(cfg, source="config"):
    """Validates a config dict like config_parse/config_finalize; returns it with defaults and
    derived sizes (d_inner, nheads, conv_dim, d_in_proj, padded_vocab, a_per_head) filled in."""
    known = set(REQUIRED_INT_FIELDS) | set(FLOAT_FIELDS) | set(STRING_FIELDS) | {"a_structure"}
    out = {}
    for key, value in cfg.items():
        if key in DERIVED_FIELDS:
            continue  # recomputed below
        if key not in known:
            raise ModelFileError(f"{source}: unknown field '{key}'")
        if key in REQUIRED_INT_FIELDS:
            if isinstance(value, float) and value.is_integer():
                value = int(value)  # as config.c, which accepts 16.0 for 16
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ModelFileError(f"{source}: field '{key}' must be a positive integer (got {value!r})")
        elif key in FLOAT_FIELDS:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < float("inf")):
                raise ModelFileError(f"{source}: field '{key}' must be a positive finite number (got {value!r})")
        elif key == "a_structure":
            if value not in ("scalar", "diagonal"):
                raise ModelFileError(f"{source}: field 'a_structure' must be \"scalar\" or \"diagonal\"")
        elif not isinstance(value, str) or len(value.encode()) >= 64:
            raise ModelFileError(f"{source}: field '{key}' must be a string of at most 63 bytes")
        out[key] = value
    for key in REQUIRED_INT_FIELDS:
        if key not in out:
            raise ModelFileError(f"{source}: missing field '{key}'")
    for key, default in FLOAT_FIELDS.items():
        out.setdefault(key, default)
    out.setdefault("a_structure", "scalar")
    if out["dt_min"] > out["dt_max"]:
        raise ModelFileError(f"{source}: field 'dt_min' must not exceed 'dt_max'")
    d_inner = out["expand"] * out["d_model"]
    if d_inner % out["headdim"]:
        raise ModelFileError(f"{source}: field 'headdim' ({out['headdim']}) must divide d_inner = {d_inner}")
    nheads = d_inner // out["headdim"]
    if nheads % out["ngroups"]:
        raise ModelFileError(f"{source}: field 'ngroups' ({out['ngroups']}) must divide nheads = {nheads}")
    gn = out["ngroups"] * out["d_state"]
    m = out["pad_vocab_multiple"]
    out.update(d_inner=d_inner, nheads=nheads, conv_dim=d_inner + 2 * gn, d_in_proj=2 * d_inner + 2 * gn + nheads,
               padded_vocab=(out["vocab_size"] + m - 1) // m * m,
               a_per_head=out["d_state"] if out["a_structure"] == "diagonal" else 1)
    return out


def config_json(cfg):
    """The config as stored in a model file: the non-derived fields only."""
    keys = STRING_FIELDS + REQUIRED_INT_FIELDS + ["a_structure"] + list(FLOAT_FIELDS)
    return json.dumps({k: cfg[k] for k in keys if k in cfg and cfg[k] != ""}, separators=(",", ":"))


def param_shapes(cfg):
    """[(name, shape)] in file order, as in model/params.h (per-layer tensors stacked over layers)."""
    c = config_check(cfg)
    L, D, E, H = c["n_layer"], c["d_model"], c["d_inner"], c["nheads"]
    a_shape = (L, H) if c["a_structure"] == "scalar" else (L, H, c["d_state"])
    return [("wte", (c["padded_vocab"], D)), ("norm_w", (L, D)), ("in_proj_w", (L, c["d_in_proj"], D)),
            ("conv_w", (L, c["conv_dim"], c["d_conv"])), ("conv_b", (L, c["conv_dim"])), ("dt_bias", (L, H)),
            ("A_log", a_shape), ("D", (L, H)), ("gnorm_w", (L, E)), ("out_proj_w", (L, D, E)), ("norm_f", (D,))]


def f32_to_bf16(x):
    """Round-to-nearest-even fp32 -> bf16 bits (uint16); NaN stays a quiet NaN. Same as float_to_bf16."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)
    is_nan = (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    return np.where(is_nan, ((u >> np.uint32(16)) | np.uint32(0x40)).astype(np.uint16), rounded)


def bf16_to_f32(b):
    return (np.asarray(b, dtype=np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


def write_atomic(path, chunks):
    """Writes the byte chunks to path.tmp, fsyncs, renames over path and fsyncs the directory (made
    first when it does not exist)."""
    tmp = path + ".tmp"
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(tmp, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise ModelFileError(f"cannot write '{path}': {e}") from e
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a directory
    finally:
        os.close(fd)


def write_model_file(path, cfg, tensors, bf16=False):
    """Writes {name: array} (shapes from param_shapes) as an ssd.c model file; returns the data CRC."""
    cfg = config_check(cfg)
    text = config_json(cfg).encode()
    if len(text) > MAX_JSON_BYTES:
        raise ModelFileError(f"{path}: config JSON too long ({len(text)} bytes)")
    blobs, sizes = [], []
    for name, shape in param_shapes(cfg):
        if name not in tensors:
            raise ModelFileError(f"{path}: tensor '{name}' missing")
        t = np.asarray(tensors[name])
        if t.shape != shape:
            raise ModelFileError(f"{path}: tensor '{name}' has shape {t.shape}, the config needs {shape}")
        t = np.ascontiguousarray(t, dtype=np.float32)
        blobs.append(f32_to_bf16(t).tobytes() if bf16 else t.astype("<f4").tobytes())
        sizes.append(t.size)
    data_crc = 0
    for blob in blobs:
        data_crc = zlib.crc32(blob, data_crc)
    head = HEADER_STRUCT.pack(MAGIC, VERSION, DTYPE_BF16 if bf16 else DTYPE_FP32, sum(sizes), *sizes, len(text),
                              data_crc, 0, 0)
    header_crc = zlib.crc32(text, zlib.crc32(head[:124]))
    head = head[:124] + struct.pack("<I", header_crc)
    write_atomic(path, [head, text] + blobs)
    return data_crc


def parse_header(data, path, file_bytes):
    """Checks the header and config JSON at the start of a model file of file_bytes bytes (data holds at least
    its first HEADER_BYTES + MAX_JSON_BYTES bytes, or all of it); returns (config with derived sizes, dtype,
    json_bytes, data_crc, [(name, shape)]); ModelFileError on any problem."""
    if len(data) < HEADER_BYTES:
        raise ModelFileError(f"{path}: {len(data)} bytes, too short for a model file header ({HEADER_BYTES} bytes)")
    fields = HEADER_STRUCT.unpack_from(data)
    magic, version, dtype, num_params = fields[:4]
    sizes = fields[4:15]
    json_bytes, data_crc, reserved, header_crc = fields[15:]
    if magic != MAGIC:
        raise ModelFileError(f"{path}: not an ssd.c model file (bad magic)")
    if version != VERSION:
        raise ModelFileError(f"{path}: model file version {version}, this reader reads version {VERSION}")
    if dtype not in (DTYPE_FP32, DTYPE_BF16):
        raise ModelFileError(f"{path}: unknown dtype {dtype} (0 = fp32, 1 = bf16)")
    if not 2 <= json_bytes <= MAX_JSON_BYTES or HEADER_BYTES + json_bytes > min(len(data), file_bytes):
        raise ModelFileError(f"{path}: config JSON length {json_bytes} is impossible for a file of {file_bytes} bytes")
    if reserved != 0:
        raise ModelFileError(f"{path}: reserved header field is not zero (corrupt header)")
    text = data[HEADER_BYTES:HEADER_BYTES + json_bytes]
    if zlib.crc32(text, zlib.crc32(data[:124])) != header_crc:
        raise ModelFileError(f"{path}: header checksum mismatch (corrupt header or config JSON)")
    try:
        raw = json.loads(bytes(text).decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"{path}: embedded config is not valid JSON: {e}") from e
    if not isinstance(raw, dict):
        raise ModelFileError(f"{path}: embedded config is not a JSON object")
    cfg = config_check(raw, f"{path}: embedded config")
    shapes = param_shapes(cfg)
    for (name, shape), stored in zip(shapes, sizes):
        if int(np.prod(shape)) != stored:
            raise ModelFileError(f"{path}: tensor '{name}' has {stored} elements in the header but the config "
                                 f"gives {int(np.prod(shape))}")
    if num_params != sum(sizes):
        raise ModelFileError(f"{path}: header says {num_params} parameters but the tensor sizes add up to {sum(sizes)}")
    elem = 2 if dtype == DTYPE_BF16 else 4
    expected = HEADER_BYTES + json_bytes + num_params * elem
    if file_bytes != expected:
        raise ModelFileError(f"{path}: file is {file_bytes} bytes but its header describes {expected} bytes "
                             f"({'truncated' if file_bytes < expected else 'trailing data'})")
    return cfg, dtype, json_bytes, data_crc, shapes


def read_model_config(path):
    """The config of a model file (with derived sizes) from its header alone: the tensors are not read."""
    try:
        with open(path, "rb") as f:
            data = f.read(HEADER_BYTES + MAX_JSON_BYTES)
        file_bytes = os.path.getsize(path)
    except OSError as e:
        raise ModelFileError(f"cannot open model file '{path}': {e}") from e
    return parse_header(data, path, file_bytes)[0]


def read_model_file(path):
    """Returns (config dict with derived sizes, {name: fp32 array}); ModelFileError on any problem."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ModelFileError(f"cannot open model file '{path}': {e}") from e
    cfg, dtype, json_bytes, data_crc, shapes = parse_header(data, path, len(data))
    body = memoryview(data)[HEADER_BYTES + json_bytes:]
    if zlib.crc32(body) != data_crc:
        raise ModelFileError(f"{path}: tensor data checksum mismatch (corrupt data)")
    flat = bf16_to_f32(np.frombuffer(body, dtype="<u2")) if dtype == DTYPE_BF16 else np.frombuffer(body, "<f4")
    tensors, offset = {}, 0
    for name, shape in shapes:
        n = int(np.prod(shape))
        tensors[name] = flat[offset:offset + n].astype(np.float32).reshape(shape)
        offset += n
    return cfg, tensors
