#!/usr/bin/env python3
"""Converts an ssd.c model file into a Hugging Face transformers Mamba2ForCausalLM checkpoint
(config.json + model.safetensors, fp32) that Mamba2ForCausalLM.from_pretrained(DIR) loads.

    python3 scripts/hf_export.py --in model.bin --out DIR [--allow-diagonal]

transformers has no diagonal-A Mamba2: a diagonal (SSD-Mamba) model is refused unless
--allow-diagonal is given, which writes the same layout with A_log of shape [heads, d_state]
(hf_import.py reads it back; transformers cannot load it).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hf_mamba2 import ConversionError, export_checkpoint  # noqa: E402
from ssd_model_file import ModelFileError, read_model_file  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--in", dest="src", required=True, help="ssd.c model file")
    parser.add_argument("--out", required=True, help="directory to write config.json and model.safetensors into")
    parser.add_argument("--allow-diagonal", action="store_true",
                        help="export a diagonal-A model in a layout transformers cannot load")
    args = parser.parse_args()
    try:
        cfg, tensors = read_model_file(args.src)
        notes = export_checkpoint(cfg, tensors, args.out, allow_diagonal=args.allow_diagonal)
    except (ConversionError, ModelFileError) as e:
        sys.exit(f"error: {e}")
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {args.out}/config.json and model.safetensors ({cfg['n_layer']} layers, vocab {cfg['vocab_size']})")


if __name__ == "__main__":
    main()
