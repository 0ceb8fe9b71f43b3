"""Downsample a saved model and save the result: the library side of ``hf-topo downsample``.

:func:`downsample_saved_model` loads a model folder (or Hub id), downsamples it with
:func:`~hf_topo.downsampling.downsample_model` (the gains method and the distillation as asked, calibrated on
``text_file``), saves it with its tokenizer, and, given held-out text, measures the perplexity of the original and
the downsampled model on it. Everything that can fail on bad input is checked before a model is loaded.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageClassification

from ..errors import InputError, parameter
from ..evaluation import evaluate_perplexity, load_text_blocks
from ..loading import check_model_source, load_tokenizer
from .api import downsample_model, parameter_count, resolve_gains
from .record import DOWNSAMPLING_KEY

__all__ = ["DownsampleArguments", "downsample_saved_model"]

logger = logging.getLogger(__name__)

#: Name of the summary written next to the downsampled model.
SUMMARY_FILE = "downsampling.json"


@dataclass
class DownsampleArguments:
    """What ``hf-topo downsample`` downsamples, how, and where it goes.

    Attributes:
        model (`str`): local folder or Hub id of the model (a TopoNet, or any supported causal LM).
        output_dir (`str`): where the downsampled model, its tokenizer and ``downsampling.json`` are written.
        factor (`float`, defaults to `2.0`): φ of a φ × φ downsampling of the sheets (φ = 3: ~9× smaller layers).
        factor_w (`float`, *optional*): a different φ along the sheets' width (then ``factor`` is φh).
        gains (`str`, defaults to `"closed_form"`): ``closed_form``, ``least_squares`` (fitted on ``text_file``)
            or ``none`` (the paper's layer).
        distill_steps (`int`, defaults to `0`): steps of distillation of the downsampled layers on ``text_file``.
        distill_learning_rate (`float`, defaults to `1e-3`): AdamW learning rate of the distillation.
        text_file (`str`, *optional*): calibration text for ``least_squares`` and ``distill_steps``.
        calibration_blocks (`int`, defaults to `32`): blocks of ``block_size`` tokens of ``text_file`` used.
        eval_text_file (`str`, *optional*): held-out text: report both models' perplexity on it.
        eval_blocks (`int`, defaults to `32`): blocks of ``eval_text_file`` scored.
        block_size (`int`, defaults to `128`): tokens per block.
        batch_size (`int`, defaults to `8`): sequences per forward.
    """

    model: str = field(metadata={"help": "Local folder or Hub id of the model to downsample."})
    output_dir: str = field(metadata={"help": "Where the downsampled model, its tokenizer and the summary go."})
    factor: float = field(default=2.0, metadata={"help": "φ of a φ×φ downsampling of the sheets (3: ~9× smaller)."})
    factor_w: float | None = field(default=None, metadata={"help": "φ along the width if it differs (factor is φh)."})
    gains: str = field(
        default="closed_form",
        metadata={"help": "Per-unit gains.", "choices": ["closed_form", "least_squares", "none"]},
    )
    distill_steps: int = field(default=0, metadata={"help": "Distillation steps of the downsampled layers (0: none)."})
    distill_learning_rate: float = field(default=1e-3, metadata={"help": "AdamW learning rate of the distillation."})
    text_file: str | None = field(
        default=None, metadata={"help": "Calibration text (.txt/.jsonl) for least_squares and --distill_steps."}
    )
    calibration_blocks: int = field(default=32, metadata={"help": "Blocks of --text_file used for calibration."})
    eval_text_file: str | None = field(
        default=None, metadata={"help": "Held-out text: report the perplexity of both models on it."}
    )
    eval_blocks: int = field(default=32, metadata={"help": "Blocks of --eval_text_file scored."})
    block_size: int = field(default=128, metadata={"help": "Tokens per block of text."})
    batch_size: int = field(default=8, metadata={"help": "Sequences per forward."})

    def __post_init__(self):
        for name in ("factor", "factor_w"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 1):
                raise InputError(
                    f"{parameter(name, value)}: give a factor φ >= 1 (2 halves each sheet side, 3 thirds it)."
                )
        resolve_gains(self.gains)
        if self.distill_steps < 0:
            raise InputError(f"{parameter('distill_steps', self.distill_steps)} must be >= 0 (0: no distillation).")
        needs_text = self.gains == "least_squares" or self.distill_steps > 0
        if needs_text and self.text_file is None:
            raise InputError(
                f"{parameter('gains', 'least_squares')} and {parameter('distill_steps')} fit the downsampled model on "
                f"some text: give {parameter('text_file')} (a .txt or .jsonl file; keep it apart from "
                f"{parameter('eval_text_file')})."
            )
        for name in ("calibration_blocks", "eval_blocks", "block_size", "batch_size"):
            if getattr(self, name) < 1:
                raise InputError(f"{parameter(name, getattr(self, name))} must be a positive integer.")
        for name in ("text_file", "eval_text_file"):
            path = getattr(self, name)
            if path is not None and not os.path.isfile(path):
                raise InputError(f"{parameter(name, path)} does not exist; give a local .txt or .jsonl file.")
        if self.text_file is not None and self.text_file == self.eval_text_file:
            logger.warning("text_file is also eval_text_file: the perplexity is then not on held-out text.")

    @property
    def factors(self) -> tuple[float, float]:
        return (self.factor, self.factor if self.factor_w is None else self.factor_w)


def downsample_saved_model(args: DownsampleArguments) -> dict[str, Any]:
    """Downsample ``args.model`` as ``args`` say, save it to ``args.output_dir`` and return (and save) a summary.

    The summary (``<output_dir>/downsampling.json``) holds the record of ``config.json`` (factors, variant, gains,
    parameter counts) and, with ``eval_text_file``, ``perplexity_original``, ``perplexity`` and their difference
    ``delta_perplexity`` on the held-out blocks.
    """
    check_model_source(args.model)
    if _is_image_classifier(args.model):
        return _downsample_image_classifier(args)
    tokenizer = load_tokenizer(args.model)

    def blocks(path: str | None, n: int):
        return None if path is None else load_text_blocks(tokenizer, args.block_size, text_file=path, max_blocks=n)

    calibration = blocks(args.text_file, args.calibration_blocks)
    held_out = blocks(args.eval_text_file, args.eval_blocks)
    model = AutoModelForCausalLM.from_pretrained(args.model).eval()
    smaller = downsample_model(
        model,
        args.factors,
        gains=args.gains,
        calibration_tokens=calibration,
        distill_steps=args.distill_steps,
        distill_learning_rate=args.distill_learning_rate,
        batch_size=args.batch_size,
        progress=True,
    )
    os.makedirs(args.output_dir, exist_ok=True)
    smaller.save_pretrained(args.output_dir)
    tokenizer.save_pretrained(args.output_dir)
    summary: dict[str, Any] = {
        "model": args.model,
        "arguments": asdict(args),
        "record": getattr(smaller.config, DOWNSAMPLING_KEY),
        "parameters_original": parameter_count(model),
        "parameters": parameter_count(smaller),
    }
    if held_out is not None:
        reference = evaluate_perplexity(model, held_out, args.batch_size, progress=False)
        perplexity = evaluate_perplexity(smaller, held_out, args.batch_size, progress=False)
        summary |= {
            "eval_tokens": held_out.n_tokens,
            "perplexity_original": reference,
            "perplexity": perplexity,
            "delta_perplexity": perplexity - reference,
        }
    with open(os.path.join(args.output_dir, SUMMARY_FILE), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    logger.info("Downsampled model saved to %s", args.output_dir)
    return summary


def _is_image_classifier(source: str) -> bool:
    config = AutoConfig.from_pretrained(source)
    return any(name.endswith("ForImageClassification") for name in (config.architectures or ()))


def _downsample_image_classifier(args: DownsampleArguments) -> dict[str, Any]:
    """The vision side of :func:`downsample_saved_model`: closed-form gains or the paper's layer (no text to fit
    on), the image processor saved beside the model when the source has one."""
    from transformers import AutoImageProcessor

    if args.text_file is not None or args.eval_text_file is not None:
        raise ValueError(
            f"{args.model} is an image classifier: text_file / eval_text_file (calibration and perplexity on text) "
            "apply to language models only. Leave them out."
        )
    model = AutoModelForImageClassification.from_pretrained(args.model).eval()
    smaller = downsample_model(model, args.factors, gains=args.gains, distill_steps=args.distill_steps)
    os.makedirs(args.output_dir, exist_ok=True)
    smaller.save_pretrained(args.output_dir)
    try:
        AutoImageProcessor.from_pretrained(args.model).save_pretrained(args.output_dir)
    except OSError:
        logger.warning("%s has no image processor to save beside the downsampled model.", args.model)
    summary: dict[str, Any] = {
        "model": args.model,
        "arguments": asdict(args),
        "record": getattr(smaller.config, DOWNSAMPLING_KEY),
        "parameters_original": parameter_count(model),
        "parameters": parameter_count(smaller),
    }
    with open(os.path.join(args.output_dir, SUMMARY_FILE), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    logger.info("Downsampled model saved to %s", args.output_dir)
    return summary
