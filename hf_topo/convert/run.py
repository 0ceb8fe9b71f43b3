"""``hf-topo convert-toponet``'s library side: a checkpoint of the authors' (file, folder or Hub repo) converted and
saved as a ``transformers`` model folder (:func:`convert_to_folder`), with its arguments (:class:`ConvertArguments`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ..config import TopoConfig
from ..errors import InputError, parameter
from .checkpoint import load_checkpoint
from .nanogpt import DEFAULT_TOKENIZER, attach_tokenizer
from .record import CONVERSION_KEY
from .sources import family_from_repo_id, is_hub_repo_id, resolve_checkpoint_file
from .toponet import convert_toponet, detect_family

__all__ = ["ConvertArguments", "convert_to_folder", "describe_architecture"]


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


def convert_to_folder(args: ConvertArguments) -> dict[str, Any]:
    """Fetch (from a folder or the Hub), read and convert the checkpoint, save the model (and a nanoGPT's tokenizer,
    a vision model's image processor); returns what was done: ``{"checkpoint", "output_dir", "model", "topography",
    "family", "tokenizer"}`` (the model and its :class:`~hf_topo.config.TopoConfig` as saved).

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
        raise InputError(
            f"{parameter('output_dir', output)} exists and is not empty; pass {parameter('overwrite', True)} or choose "
            "another path."
        )
    checkpoint = load_checkpoint(path)  # an unreadable or unsafe file stops here, before the tokenizer
    found = detect_family(checkpoint)
    tokenizer = None
    if found == "nanogpt" and not args.no_tokenizer:
        from ..loading import load_tokenizer

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
        from ..vision.imagenet import imagenet_eval_processor

        imagenet_eval_processor(getattr(model.config, "image_size", 224)).save_pretrained(output)
    model.save_pretrained(output)

    return {
        "checkpoint": path,
        "output_dir": os.path.abspath(output),
        "model": model,
        "topography": TopoConfig.from_pretrained(output),
        "family": found,
        "tokenizer": tokenizer,
    }


def describe_architecture(model) -> str:
    """One line on a converted model's architecture (layers, widths, classes, blur-pool)."""
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
