"""The ``hf-topo analyze`` run on saved models: load the model (and its baseline) and the text (a causal LM) or the
images (an image classifier, ``image_dir``), analyse both with :func:`~hf_topo.analysis.report.analyze_model` on the
model's sheets, write ``report.json`` and the figures.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass, field

import torch
from transformers import AutoConfig, AutoModelForCausalLM, set_seed

from ..blimp import load_blimp
from ..config import TopoConfig
from ..downsampling import downsample_model, parameter_count
from ..errors import InputError, parameter
from ..evaluation import load_text_blocks
from ..loading import check_model_source, load_tokenizer
from .activations import is_output_weight_sheet, topographic_layers
from .inputs import load_passages, read_stimuli
from .report import AnalysisSettings, analyze_model, write_report

logger = logging.getLogger(__name__)


@dataclass
class AnalyzeArguments:
    """Which models, which text and where the report goes."""

    model: str = field(metadata={"help": "Local directory or Hub id of the model to analyse (a TopoNet)."})
    output_dir: str = field(metadata={"help": "Where report.json and the figures are written."})
    baseline: str | None = field(
        default=None, metadata={"help": "Its baseline (e.g. the τ=0 twin), analysed on the same layers and sheets."}
    )
    text_file: str | None = field(default=None, metadata={"help": "Local text (.txt) or .jsonl file to run on."})
    dataset: str | None = field(
        default=None, metadata={"help": "Or a dataset for datasets.load_dataset (Hub id or local directory)."}
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Dataset config (e.g. wikitext-2-raw-v1)."})
    split: str = field(default="train", metadata={"help": "Dataset split (use held-out text: e.g. validation)."})
    text_column: str = field(default="text", metadata={"help": "Column holding the text."})
    image_dir: str | None = field(
        default=None,
        metadata={"help": "Image classifiers: a folder of class subfolders (named after the model's labels)."},
    )
    max_images: int | None = field(
        default=1024,
        metadata={"help": "Image classifiers: at most this many images of --image_dir, classes balanced."},
    )
    image_size: int | None = field(
        default=None, metadata={"help": "Image classifiers without a saved image processor: the input side in pixels."}
    )
    block_size: int = field(default=128, metadata={"help": "Tokens per packed block of text."})
    layers: list[str] | None = field(
        default=None, metadata={"help": "Analyse only these topographic layers (names or suffixes)."}
    )
    stimuli_a: str | None = field(
        default=None, metadata={"help": "Selectivity: text file of stimuli of set a, one per line."}
    )
    stimuli_b: str | None = field(default=None, metadata={"help": "Selectivity: stimuli of set b (a over b)."})
    blimp_dir: str | None = field(
        default=None, metadata={"help": "BLiMP jsonl directory: Δ BLiMP in the pruning sweep."}
    )
    blimp_paradigms: str | None = field(default=None, metadata={"help": "Comma-separated BLiMP paradigms."})
    blimp_limit: int | None = field(default=None, metadata={"help": "At most this many BLiMP pairs per paradigm."})
    save_downsampled: float | None = field(
        default=None, metadata={"help": "Also save --model downsampled φ×φ on its sheets to <output_dir>/downsampled."}
    )
    model_label: str = field(default="TopoNet", metadata={"help": "Name of --model in the figures."})
    baseline_label: str = field(default="baseline", metadata={"help": "Name of --baseline in the figures."})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, ... (default: cuda when available)."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})


def check_analyze_arguments(args: AnalyzeArguments) -> None:
    """Refuse what no model can take: no input or two (text file, dataset, image folder), one stimulus set without
    the other, a downsampling factor below 1."""
    sources = [args.text_file, args.dataset, args.image_dir]
    if sum(source is not None for source in sources) != 1:
        raise InputError(
            f"Give exactly one input: {parameter('text_file', 'FILE')} or {parameter('dataset', 'NAME')} for a "
            f"language model, {parameter('image_dir', 'FOLDER')} for an image classifier."
        )
    if (args.stimuli_a is None) != (args.stimuli_b is None):
        raise InputError(
            f"Selectivity needs both {parameter('stimuli_a')} and {parameter('stimuli_b')} (one stimulus per line each)."
        )
    if args.save_downsampled is not None and not (math.isfinite(args.save_downsampled) and args.save_downsampled >= 1):
        raise InputError(
            f"{parameter('save_downsampled', args.save_downsampled)}: give a factor φ >= 1, e.g. 2 for 2×2."
        )


def _load(path: str, device: str):
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return model.to(device)


def is_image_classifier(source: str) -> bool:
    """Whether the ``config.json`` of ``source`` (a folder or Hub id) names a ``*ForImageClassification``
    architecture: an image classifier, analysed on images (:mod:`hf_topo.vision.analyze`)."""
    architectures = AutoConfig.from_pretrained(source).architectures or ()
    return any(name.endswith("ForImageClassification") for name in architectures)


def save_downsampled(model, analysis, args: AnalyzeArguments, tokenizer=None) -> dict:
    """Save ``model`` downsampled ``args.save_downsampled`` × itself on the sheets of ``analysis``'s layers to
    ``<output_dir>/downsampled`` (with ``tokenizer`` when given); returns the report's record of it."""
    factor = args.save_downsampled
    smaller = downsample_model(model, (factor, factor), [layer.name for layer in analysis.layers])
    directory = os.path.join(args.output_dir, "downsampled")
    smaller.save_pretrained(directory)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    logger.info("Downsampled model (%g×%g) saved to %s", factor, factor, directory)
    return {
        "path": os.path.abspath(directory),
        "factor": factor,
        "parameters": parameter_count(smaller),
        "parameters_kept": parameter_count(smaller) / parameter_count(model),
    }


def analyze_saved_models(args: AnalyzeArguments, settings: AnalysisSettings) -> dict:
    """Analyse the saved model ``args.model`` (and ``args.baseline`` on the same layers and sheets) and write
    ``report.json`` and the figures to ``args.output_dir``; returns the report.

    Everything that can fail on bad input (arguments, stimuli, BLiMP files, both model folders, text, tokenizers) is
    read before any model runs. With ``args.save_downsampled`` the model is also saved downsampled φ×φ on its sheets to
    ``<output_dir>/downsampled`` (loadable with ``AutoModelForCausalLM`` after ``import hf_topo``).

    An image classifier is analysed on images instead (``args.image_dir``):
    :func:`hf_topo.vision.analyze.analyze_saved_image_models`, which ``hf-topo analyze --image_dir`` runs.
    """
    check_analyze_arguments(args)
    set_seed(settings.seed)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    check_model_source(args.model)
    if args.image_dir is not None or is_image_classifier(args.model):
        raise InputError(
            f"{args.model} is an image classifier: analyse it on images with {parameter('image_dir', 'FOLDER')} "
            "(hf_topo.vision.analyze.analyze_saved_image_models)."
            if args.image_dir is None
            else f"{parameter('image_dir')} is for image classifiers (hf_topo.vision.analyze.analyze_saved_image_models)"
            f"; analyse a language model on {parameter('text_file')} or {parameter('dataset')}."
        )
    # Everything that can fail on bad input is read before any model runs.
    stimuli = (read_stimuli(args.stimuli_a), read_stimuli(args.stimuli_b)) if args.stimuli_a else None
    blimp = load_blimp(args.blimp_dir, None, args.blimp_paradigms, args.blimp_limit) if args.blimp_dir else None
    max_blocks = max(settings.eval_blocks, math.ceil(settings.max_tokens / args.block_size))
    text_source = dict(
        text_file=args.text_file,
        dataset_name=args.dataset,
        dataset_config=args.dataset_config,
        split=args.split,
        text_column=args.text_column,
        max_blocks=max_blocks,
    )

    passages = None
    if settings.temporal_windows:  # whole stretches of text: a sequence is a run of consecutive words
        source = {k: v for k, v in text_source.items() if k != "max_blocks"}
        passages = load_passages(
            **source, min_words=settings.temporal_sequence_words, max_passages=4 * settings.temporal_max_sequences
        )

    if args.baseline is not None:
        check_model_source(args.baseline)
    tokenizer = load_tokenizer(args.model)
    text = load_text_blocks(tokenizer, args.block_size, **text_source)
    if args.baseline is not None:  # its tokenizer (or the model's) and text, also before any model runs
        baseline_tokenizer = load_tokenizer(args.baseline, fallback=tokenizer)
        baseline_text = (
            text
            if baseline_tokenizer is tokenizer
            else load_text_blocks(baseline_tokenizer, args.block_size, **text_source)
        )
    model = _load(args.model, device)
    layers = topographic_layers(model, None, args.layers)  # the model's layers (inferred sheets attached if none)
    if args.save_downsampled is not None and not all(is_output_weight_sheet(layer) for layer in layers):
        raise InputError(
            f"{parameter('save_downsampled')} resamples the output units of Linear/Conv1D layers on their sheets, but {args.model} "
            f"has {layers[0].sheet.layer_type} sheets of {layers[0].sheet.units} units (e.g. {layers[0].name}): "
            f"drop {parameter('save_downsampled')} for this model."
        )
    baseline = None
    if args.baseline is not None:  # kept on the CPU until its turn; its layers must take the model's sheets
        baseline = _load(args.baseline, "cpu")
        try:
            topographic_layers(baseline, TopoConfig.from_pretrained(model), args.layers)
        except ValueError as err:
            raise ValueError(
                f"The baseline {args.baseline} cannot be analysed on the layers and sheets of {args.model}: {err} "
                "A baseline is the same architecture trained without TopoLoss (e.g. its τ=0 twin)."
            ) from None
    common = dict(
        settings=settings,
        layer_names=args.layers,
        stimuli=stimuli,
        blimp_data=blimp,
        passages=passages,
        progress=args.progress,
    )
    analysis = analyze_model(model, tokenizer, text, label=args.model_label, **common)

    baseline_analysis = None
    if baseline is not None:
        baseline = baseline.to(device)
        baseline_analysis = analyze_model(
            baseline, baseline_tokenizer, baseline_text, label=args.baseline_label,
            topography=TopoConfig.from_pretrained(model), **common,
        )  # fmt: skip
        del baseline

    metadata = {
        "model": args.model,
        "baseline": args.baseline,
        "text": {k: v for k, v in text_source.items() if v is not None} | {"block_size": args.block_size},
        "n_blocks": len(text),
        "settings": asdict(settings),
        "topography": TopoConfig.from_pretrained(model).to_dict(),
        "device": device,
    }
    if args.save_downsampled is not None:
        metadata["downsampled"] = save_downsampled(model, analysis, args, tokenizer=tokenizer)
    return write_report(analysis, args.output_dir, baseline_analysis, metadata)
