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

import sys

from hf_topo.cli.arguments import CONFIG_SUFFIXES, make_argument_parser, parse_command_line, run_command, setup_logging
from hf_topo.convert.run import ConvertArguments, convert_to_folder, describe_architecture


def make_parser(prog: str | None = None):
    return make_argument_parser(ConvertArguments, prog, __doc__)


def _positional_source(argv: list[str]) -> list[str]:
    if argv and not argv[0].startswith("-") and not argv[0].endswith(CONFIG_SUFFIXES):
        return ["--source", argv[0], *argv[1:]]
    return argv


def main(argv: list[str] | None = None, prog: str | None = None) -> str:
    setup_logging()
    argv = _positional_source(list(sys.argv[1:] if argv is None else argv))
    (args,) = parse_command_line(make_parser(prog), argv)
    done = convert_to_folder(args)
    model, topo, output = done["model"], done["topography"], done["output_dir"]
    layers = topo.layers or {}
    shapes = sorted({(s.height, s.width, s.depth) for s in layers.values()}, key=lambda hwd: (hwd[0] * hwd[1], hwd[2]))
    sheets = [f"{h}×{w}×{d}" for h, w, d in shapes]
    print(f"Converted {done['checkpoint']} → {output}")
    print(f"  {type(model).__name__}: {describe_architecture(model)}")
    print(
        f"  topography: τ={topo.tau:g}{' (unknown: inferred sheets)' if topo.inferred else ''}, {len(layers)} layers, "
        f"sheets {', '.join(sheets[:4])}{' …' if len(sheets) > 4 else ''}"
    )
    if done["family"] == "nanogpt":
        tokenizer = done["tokenizer"]
        if tokenizer is not None:
            print(
                f"  tokenizer: {args.tokenizer_name} ({len(tokenizer)} tokens; model vocab {model.config.vocab_size})"
            )
        else:
            print(
                "  tokenizer: none attached (--no_tokenizer). Add one with "
                f"AutoTokenizer.from_pretrained('{args.tokenizer_name}').save_pretrained({output!r})."
            )
    else:
        load = "import hf_topo; " if model.config.model_type.startswith("hf_topo_") else ""
        print(f"  load: {load}AutoModelForImageClassification.from_pretrained({output!r})")
    return output


if __name__ == "__main__":
    sys.exit(run_command(main, prog="hf-topo convert-toponet"))
