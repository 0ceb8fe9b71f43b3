"""Convert one of the authors' TopoNets (ResNet-18, ResNet-50, ViT-B/32, nanoGPT) into a `transformers` model.

    # the authors' published TopoNets, fetched with hf_hub_download (τ picks the file)
    hf-topo convert-toponet murtylab/topo-resnet18-imagenet --tau 10 --output_dir outputs/topo-resnet18-tau10
    hf-topo convert-toponet murtylab/topo-resnet50-imagenet --tau 30 --output_dir outputs/topo-resnet50-tau30
    hf-topo convert-toponet murtylab/topo-vit-b-32-imagenet --tau 10 --output_dir outputs/topo-vit-b-32-tau10
    hf-topo convert-toponet murtylab/topo-nanogpt-fineweb10B --tau 50 --output_dir outputs/topo-nanogpt-tau50

    # a local file (τ from a tau_<τ> file name, or --tau); nanoGPT without a tokenizer, offline
    hf-topo convert-toponet all_topo_tau_1.0.pt --output_dir outputs/topo-resnet18-tau1
    hf-topo convert-toponet ckpt/tau_1.0.pt --output_dir outputs/nanogpt-tau1 --no_tokenizer

The family is read from the repo id or the file's keys. ResNets load with
`AutoModelForImageClassification.from_pretrained(DIR)` after `import hf_topo` (their blur-pool class is registered
then); ViT-B/32 loads without it; nanoGPT loads with `AutoModelForCausalLM`, with the GPT-2 tokenizer saved next to it
(`--tokenizer_name`, or `--no_tokenizer`). The vision models carry ImageNet's 1000 class names as `id2label`. Every
model carries its topography (`hf_topo.TopoConfig.from_pretrained(DIR)`: sheets, τ) and `config.conversion` (source,
file); a vision model is saved with torchvision's ImageNet evaluation transform as its image processor (shorter side
to 256, central 224 crop, ImageNet's mean and std; PIL backend). The file is read with
`torch.load(weights_only=True)`: a file that needs arbitrary unpickling is refused.
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
    convert_toponet,
    detect_family,
    family_from_repo_id,
    load_checkpoint,
    resolve_checkpoint_file,
)
from hf_topo.convert.sources import is_hub_repo_id


@dataclass
class ConvertArguments:
    """What to convert and where the model goes."""

    source: str = field(
        metadata={
            "help": "The checkpoint: a .pt file, a folder of tau_<τ> files, or a Hub repo id such as "
            "murtylab/topo-resnet18-imagenet (also accepted as the first, positional argument)."
        }
    )
    output_dir: str | None = field(
        default=None, metadata={"help": "Directory for the converted model (default: ./<checkpoint name>)."}
    )
    tau: float | None = field(
        default=None,
        metadata={"help": "τ the model was trained with; picks the file in a folder or repo (default: file name)."},
    )
    filename: str | None = field(default=None, metadata={"help": "File in the folder or repo (instead of --tau)."})
    revision: str | None = field(default=None, metadata={"help": "Hub revision (branch, tag or commit)."})
    tokenizer_name: str = field(
        default=DEFAULT_TOKENIZER,
        metadata={"help": "nanoGPT only: Hub id or local path of the tokenizer saved with the model."},
    )
    no_tokenizer: bool = field(default=False, metadata={"help": "nanoGPT only: do not attach a tokenizer."})
    n_head: int | None = field(
        default=None, metadata={"help": "Attention heads, when the file does not say (a bare nanoGPT or ViT)."}
    )
    overwrite: bool = field(default=False, metadata={"help": "Write into --output_dir even if it is not empty."})
    token: str | None = field(default=None, metadata={"help": "Hub token (default: the saved login or HF_TOKEN)."})


def make_parser(prog: str | None = None):
    return make_argument_parser(ConvertArguments, prog, __doc__)


def _positional_source(argv: list[str]) -> list[str]:
    if argv and not argv[0].startswith("-") and not argv[0].endswith(CONFIG_SUFFIXES):
        return ["--source", argv[0], *argv[1:]]
    return argv


def convert(args: ConvertArguments) -> str:
    """Fetch (from a folder or the Hub), read and convert the checkpoint, save the model (and a nanoGPT's tokenizer);
    returns the folder.

    Everything that can fail (the checkpoint, its family, the tokenizer, the output folder) is checked before anything
    is written; a failure is a ``ValueError`` or ``FileNotFoundError`` whose message says what to do."""
    from_hub = is_hub_repo_id(args.source)
    family = family_from_repo_id(args.source) if from_hub else None
    path, tau = resolve_checkpoint_file(
        args.source, tau=args.tau, filename=args.filename, revision=args.revision, token=args.token
    )
    output = args.output_dir or os.path.splitext(os.path.basename(path))[0]
    if args.output_dir is None and not os.path.isfile(args.source):  # a folder or repo: name it after both
        output = f"{os.path.basename(os.path.normpath(args.source))}-{output}"
    if os.path.isdir(output) and os.listdir(output) and not args.overwrite:
        raise ValueError(f"--output_dir {output} exists and is not empty; pass --overwrite or choose another path.")
    checkpoint = load_checkpoint(path)  # an unreadable or unsafe file stops here, before the tokenizer
    found = detect_family(checkpoint)
    tokenizer = None
    if found == "nanogpt" and not args.no_tokenizer:
        from hf_topo.loading import load_tokenizer

        tokenizer = load_tokenizer(args.tokenizer_name)
    model = convert_toponet(
        path,
        tau=tau,
        family=family,
        n_head=args.n_head,
        source=args.source if from_hub else None,
        checkpoint=checkpoint,
    )
    os.makedirs(output, exist_ok=True)
    if tokenizer is not None:
        tokenizer = attach_tokenizer(model, output, tokenizer)
    if found != "nanogpt":  # torchvision's ImageNet evaluation transform, so pipeline("image-classification") works
        from hf_topo.vision.imagenet import imagenet_eval_processor

        imagenet_eval_processor(getattr(model.config, "image_size", 224)).save_pretrained(output)
    model.save_pretrained(output)

    topo = TopoConfig.from_pretrained(output)
    layers = topo.layers or {}
    shapes = sorted({(s.height, s.width, s.depth) for s in layers.values()}, key=lambda hwd: (hwd[0] * hwd[1], hwd[2]))
    sheets = [f"{h}×{w}×{d}" for h, w, d in shapes]
    print(f"Converted {path} → {os.path.abspath(output)}")
    print(f"  {type(model).__name__}: {_describe_architecture(model)}")
    print(
        f"  topography: τ={topo.tau:g}{' (unknown: inferred sheets)' if topo.inferred else ''}, {len(layers)} layers, "
        f"sheets {', '.join(sheets[:4])}{' …' if len(sheets) > 4 else ''}"
    )
    if found == "nanogpt":
        if tokenizer is not None:
            print(
                f"  tokenizer: {args.tokenizer_name} ({len(tokenizer)} tokens; model vocab {model.config.vocab_size})"
            )
        else:
            print(
                "  tokenizer: none attached (--no_tokenizer). Add one with "
                f"AutoTokenizer.from_pretrained({DEFAULT_TOKENIZER!r}).save_pretrained({output!r})."
            )
    else:
        load = "import hf_topo; " if model.config.model_type.startswith("hf_topo_") else ""
        print(f"  load: {load}AutoModelForImageClassification.from_pretrained({output!r})")
    return output


def _describe_architecture(model) -> str:
    config = model.config
    record = getattr(config, CONVERSION_KEY, {}) or {}
    if config.model_type == "gpt2":
        return (
            f"{config.n_layer} layers × {config.n_embd}, {config.n_head} heads, vocab {config.vocab_size}, context "
            f"{config.n_positions}, biases "
            f"{'from the checkpoint' if record.get('model_args', {}).get('bias', True) else 'zero (bias-free nanoGPT)'}"
        )
    if config.model_type == "vit":
        return (
            f"{config.num_hidden_layers} layers × {config.hidden_size}, {config.num_attention_heads} heads, MLP "
            f"{config.intermediate_size}, {config.image_size}px images in {config.patch_size}px patches, "
            f"{config.num_labels} classes"
        )
    return (
        f"{config.layer_type} blocks {'-'.join(map(str, config.depths))}, widths "
        f"{'-'.join(map(str, config.hidden_sizes))}, {config.num_labels} classes"
        + (", blur-pool convolutions" if record.get("blurpool") else "")
    )


def main(argv: list[str] | None = None, prog: str | None = None) -> str:
    setup_logging()
    argv = _positional_source(list(sys.argv[1:] if argv is None else argv))
    (args,) = parse_command_line(make_parser(prog), argv)
    return convert(args)


if __name__ == "__main__":
    sys.exit(run_command(main, prog="hf-topo convert-toponet"))
