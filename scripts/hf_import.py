#!/usr/bin/env python3
"""Converts a Hugging Face Mamba-2 checkpoint (mamba_ssm or transformers layout: config.json +
model.safetensors, sharded safetensors, or pytorch_model.bin) into an ssd.c model file.

    python3 scripts/hf_import.py --in DIR --out model.bin [--bf16] [--tokenizer NAME]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hf_mamba2 import ConversionError, import_checkpoint  # noqa: E402
from ssd_model_file import ModelFileError, write_model_file  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--in", dest="src", required=True, help="Hugging Face checkpoint directory")
    parser.add_argument("--out", required=True, help="ssd.c model file to write")
    parser.add_argument("--bf16", action="store_true", help="store the parameters as bf16")
    parser.add_argument("--tokenizer", help="tokenizer note stored in the model (default: gpt-neox-20b for "
                        "mamba_ssm checkpoints, else from tokenizer_config.json if present)")
    parser.add_argument("--name", help="model name stored in the config (default: the directory name)")
    parser.add_argument("--pad-vocab-multiple", type=int, default=16,
                        help="pad the vocabulary to a multiple of this (transformers layout; default 16)")
    args = parser.parse_args()
    try:
        cfg, tensors, notes = import_checkpoint(args.src, args.pad_vocab_multiple, args.name, args.tokenizer)
        write_model_file(args.out, cfg, tensors, bf16=args.bf16)
    except (ConversionError, ModelFileError) as e:
        sys.exit(f"error: {e}")
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    n = sum(t.size for t in tensors.values())
    print(f"wrote {args.out}: {cfg['n_layer']} layers, d_model {cfg['d_model']}, vocab {cfg['vocab_size']} "
          f"(padded {cfg['padded_vocab']}), {n} parameters, {'bf16' if args.bf16 else 'fp32'}")


if __name__ == "__main__":
    main()
