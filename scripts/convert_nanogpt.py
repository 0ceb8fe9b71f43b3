"""Convert a nanoGPT / TopoNet-NanoGPT checkpoint into a Hugging Face GPT-2 model with topography metadata.

    python scripts/convert_nanogpt.py tau_1.pt --output outputs/toponet-nanogpt-tau1          # τ from the file name
    python scripts/convert_nanogpt.py ckpt.pt --output outputs/nanogpt --tau 50 --tokenizer /path/to/gpt2-tokenizer

The result loads with `AutoModelForCausalLM.from_pretrained(DIR)` and `hf_topo.TopoConfig.from_pretrained(DIR)`;
its logits equal the nanoGPT model's. The checkpoint is read with `torch.load(weights_only=True)`: a file that needs
arbitrary unpickling is refused. The GPT-2 tokenizer (`--tokenizer`, default `gpt2` from the Hub) is saved next to
the model when it can be loaded; offline, pass a local copy or add it later (the script says how).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import transformers

from hf_topo import TopoConfig
from hf_topo.convert import CONVERSION_KEY, attach_tokenizer, convert_nanogpt


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", help="nanoGPT checkpoint (.pt): {'model_args', 'model', ...} or a state dict.")
    parser.add_argument("--output", required=True, help="Directory for the converted model (created).")
    parser.add_argument(
        "--tau", type=float, default=None, help="τ the model was trained with (default: from a tau_<τ> file name)."
    )
    parser.add_argument(
        "--tokenizer", default="gpt2", help="Hub id or local path of the tokenizer to save with the model."
    )
    parser.add_argument("--no_tokenizer", action="store_true", help="Do not attach a tokenizer.")
    parser.add_argument("--n_head", type=int, default=None, help="Attention heads (only for a bare state dict).")
    parser.add_argument("--overwrite", action="store_true", help="Write into --output even if it is not empty.")
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> str:
    """Convert and save; returns the output directory."""
    if os.path.isdir(args.output) and os.listdir(args.output) and not args.overwrite:
        raise SystemExit(f"--output {args.output} exists and is not empty; pass --overwrite or choose another path.")
    try:
        model = convert_nanogpt(args.checkpoint, tau=args.tau, n_head=args.n_head)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    os.makedirs(args.output, exist_ok=True)
    tokenizer = None if args.no_tokenizer else attach_tokenizer(model, args.output, args.tokenizer)
    model.save_pretrained(args.output)

    topo = TopoConfig.from_pretrained(args.output)
    record = getattr(model.config, CONVERSION_KEY)
    layers = topo.layers or {}
    first = next(iter(layers.values()))
    print(f"Converted {args.checkpoint} → {os.path.abspath(args.output)}")
    print(
        f"  GPT2LMHeadModel: {model.config.n_layer} layers × {model.config.n_embd}, {model.config.n_head} heads, "
        f"vocab {model.config.vocab_size}, context {model.config.n_positions}, biases "
        f"{'from the checkpoint' if record['model_args'].get('bias', True) else 'zero (bias-free nanoGPT)'}"
    )
    print(
        f"  topography: τ={topo.tau:g}{' (unknown: inferred sheets)' if topo.inferred else ''}, {len(layers)} layers "
        f"({', '.join(sorted({n.split('.')[-2] + '.' + n.split('.')[-1] for n in layers}))}), sheet "
        f"{first.height}×{first.width}×{first.depth}"
    )
    if tokenizer is not None:
        print(f"  tokenizer: {args.tokenizer} ({len(tokenizer)} tokens; model vocab {model.config.vocab_size})")
    else:
        print(
            "  tokenizer: none attached"
            + (
                " (--no_tokenizer)"
                if args.no_tokenizer
                else f" ({args.tokenizer!r} could not be loaded, see the warning)"
            )
            + f". Add one with AutoTokenizer.from_pretrained('gpt2').save_pretrained({args.output!r})."
        )
    return args.output


if __name__ == "__main__":
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    transformers.utils.logging.set_verbosity_warning()
    main(parse_args(sys.argv[1:]))
