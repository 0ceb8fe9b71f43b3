"""Convert a nanoGPT / TopoNet-NanoGPT checkpoint into a Hugging Face GPT-2 model with topography metadata.

    # the authors' published TopoNets (murtylab/topo-nanogpt-fineweb10B: tau_0.5.pt, tau_1.0.pt, tau_3.0.pt,
    # tau_50.0.pt), fetched with hf_hub_download, with the GPT-2 tokenizer from the Hub
    hf-topo convert-nanogpt murtylab/topo-nanogpt-fineweb10B --tau 50 --output outputs/toponet-nanogpt-tau50

    # a local checkpoint (τ from a tau_<τ>.pt file name, or --tau), a local tokenizer
    hf-topo convert-nanogpt ckpt/tau_1.0.pt --output outputs/toponet-nanogpt-tau1 --tokenizer_name ./gpt2-tokenizer

The result loads with `AutoModelForCausalLM.from_pretrained(DIR)` and `hf_topo.TopoConfig.from_pretrained(DIR)`;
its logits equal the nanoGPT model's. The checkpoint is read with `torch.load(weights_only=True)`: a file that needs
arbitrary unpickling is refused. The source is a `.pt` file, a folder of `tau_<τ>.pt` files, or a Hub model repo of
them; the tokenizer (`--tokenizer_name`, default `openai-community/gpt2`) is saved next to the model.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from hf_topo.cli.arguments import CONFIG_SUFFIXES, make_argument_parser, parse_command_line, run_command, setup_logging
from hf_topo.config import TopoConfig
from hf_topo.convert import (
    CONVERSION_KEY,
    DEFAULT_TOKENIZER,
    attach_tokenizer,
    convert_nanogpt,
    resolve_nanogpt_checkpoint,
)
from hf_topo.loading import load_tokenizer


@dataclass
class ConvertArguments:
    """What to convert and where the model goes."""

    checkpoint: str = field(
        metadata={
            "help": "nanoGPT checkpoint: a .pt file, a folder of tau_<τ>.pt files, or a Hub repo id of them "
            "(also accepted as the first, positional argument)."
        }
    )
    output: str | None = field(
        default=None, metadata={"help": "Directory for the converted model (default: ./<checkpoint name>)."}
    )
    tau: float | None = field(
        default=None,
        metadata={"help": "τ the model was trained with; picks tau_<τ>.pt in a folder or repo (default: file name)."},
    )
    filename: str | None = field(default=None, metadata={"help": "File in the folder or repo (instead of --tau)."})
    revision: str | None = field(default=None, metadata={"help": "Hub revision (branch, tag or commit)."})
    tokenizer_name: str = field(
        default=DEFAULT_TOKENIZER,
        metadata={"help": "Hub id or local path of the tokenizer saved with the model."},
    )
    no_tokenizer: bool = field(default=False, metadata={"help": "Do not attach a tokenizer."})
    n_head: int | None = field(default=None, metadata={"help": "Attention heads (only for a bare state dict)."})
    overwrite: bool = field(default=False, metadata={"help": "Write into --output even if it is not empty."})
    token: str | None = field(default=None, metadata={"help": "Hub token (default: the saved login or HF_TOKEN)."})


def make_parser(prog: str | None = None):
    return make_argument_parser(ConvertArguments, prog, __doc__)


def _positional_checkpoint(argv: list[str]) -> list[str]:
    if argv and not argv[0].startswith("-") and not argv[0].endswith(CONFIG_SUFFIXES):
        return ["--checkpoint", argv[0], *argv[1:]]
    return argv


def convert(args: ConvertArguments) -> str:
    """Fetch (from a folder or the Hub) and convert the checkpoint, save model and tokenizer; returns the folder.

    Everything that can fail (the tokenizer, the checkpoint, the output folder) is checked before anything is
    written; a failure is a ``ValueError`` or ``FileNotFoundError`` whose message says what to do."""
    tokenizer = None if args.no_tokenizer else load_tokenizer(args.tokenizer_name)
    path, tau = resolve_nanogpt_checkpoint(
        args.checkpoint, tau=args.tau, filename=args.filename, revision=args.revision, token=args.token
    )
    output = args.output or os.path.splitext(os.path.basename(path))[0]
    if args.output is None and not os.path.isfile(args.checkpoint):  # a folder or repo: name it after both
        output = f"{os.path.basename(os.path.normpath(args.checkpoint))}-{output}"
    if os.path.isdir(output) and os.listdir(output) and not args.overwrite:
        raise ValueError(f"--output {output} exists and is not empty; pass --overwrite or choose another path.")
    source = None if os.path.exists(args.checkpoint) else args.checkpoint  # a Hub repo: recorded as the source
    model = convert_nanogpt(path, tau=tau, n_head=args.n_head, source=source)
    os.makedirs(output, exist_ok=True)
    if tokenizer is not None:
        tokenizer = attach_tokenizer(model, output, tokenizer)
    model.save_pretrained(output)

    topo = TopoConfig.from_pretrained(output)
    record = getattr(model.config, CONVERSION_KEY)
    layers = topo.layers or {}
    first = next(iter(layers.values()))
    print(f"Converted {path} → {os.path.abspath(output)}")
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
        print(f"  tokenizer: {args.tokenizer_name} ({len(tokenizer)} tokens; model vocab {model.config.vocab_size})")
    else:
        print(
            "  tokenizer: none attached (--no_tokenizer). Add one with "
            f"AutoTokenizer.from_pretrained({DEFAULT_TOKENIZER!r}).save_pretrained({output!r})."
        )
    return output


def main(argv: list[str] | None = None, prog: str | None = None) -> str:
    setup_logging()
    argv = _positional_checkpoint(list(sys.argv[1:] if argv is None else argv))
    (args,) = parse_command_line(make_parser(prog), argv)
    return convert(args)


if __name__ == "__main__":
    sys.exit(run_command(main, prog="hf-topo convert-nanogpt"))
