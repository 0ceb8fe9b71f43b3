"""The ``hf-topo arrange`` run on a saved model: load it, :func:`~hf_topo.arrangement.arrange.arrange_units`, save it
(with its tokenizer) and ``arrangement.json`` (the report and every layer's permutation) to the output folder."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field

import torch

from ..errors import InputError, parameter
from ..loading import check_model_source
from .arrange import ArrangementReport, arrange_units
from .search import ARRANGE_INITS, ARRANGE_OBJECTIVES

__all__ = ["ARRANGEMENT_FILE", "ArrangeArguments", "arrange_saved_model"]

logger = logging.getLogger(__name__)

#: The report written next to the arranged model: the record entry plus every layer's permutation.
ARRANGEMENT_FILE = "arrangement.json"


@dataclass
class ArrangeArguments:
    """Which model, where the arranged copy goes, and how the arrangement is searched."""

    model: str = field(metadata={"help": "Local directory or Hub id of the model to arrange (any supported family)."})
    output_dir: str = field(metadata={"help": "Where the arranged model, its tokenizer and arrangement.json go."})
    target_modules: list[str] | None = field(
        default=None,
        metadata={"help": "MLP expansion layers to arrange (default: the record's targets or the family's)."},
    )
    objective: str = field(
        default="topoloss", metadata={"help": f"Objective to minimise: {', '.join(ARRANGE_OBJECTIVES)}."}
    )
    init: str = field(default="auto", metadata={"help": f"Initial layout: {', '.join(ARRANGE_INITS)}."})
    max_rounds: int = field(default=200, metadata={"help": "The most pairwise-swap rounds per layer."})
    patience: int = field(default=3, metadata={"help": "Stop a layer after this many rounds without a swap."})
    seed: int = field(default=0, metadata={"help": "Seed of the random swap proposals."})
    overwrite: bool = field(default=False, metadata={"help": "Write into a non-empty output_dir."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})


def arrange_saved_model(args: ArrangeArguments) -> tuple[ArrangementReport, str]:
    """Arrange the saved model ``args.model`` and save it to ``args.output_dir``; returns ``(report, report path)``.

    Raises:
        ValueError: the output folder is not empty (without ``overwrite``), or what :func:`arrange_units` refuses.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if args.objective not in ARRANGE_OBJECTIVES:
        raise InputError(f"{parameter('objective', args.objective)}: choose one of {', '.join(ARRANGE_OBJECTIVES)}.")
    if os.path.isdir(args.output_dir) and os.listdir(args.output_dir) and not args.overwrite:
        raise InputError(
            f"{args.output_dir} is not empty: choose another {parameter('output_dir')} or pass "
            f"{parameter('overwrite', True)}."
        )
    check_model_source(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    try:
        tokenizer = AutoTokenizer.from_pretrained(args.model)
    except (OSError, ValueError):
        tokenizer = None
        logger.warning("%s has no tokenizer to copy: the arranged model is saved without one", args.model)
    report = arrange_units(
        model, args.target_modules, args.objective, init=args.init, max_rounds=args.max_rounds,
        patience=args.patience, seed=args.seed, progress=args.progress,
    )  # fmt: skip
    os.makedirs(args.output_dir, exist_ok=True)
    model.save_pretrained(args.output_dir)
    if tokenizer is not None:
        tokenizer.save_pretrained(args.output_dir)
    path = os.path.join(args.output_dir, ARRANGEMENT_FILE)
    with open(path, "w") as f:
        json.dump(report.to_record() | {"source": args.model, "permutations": report.permutations()}, f)
    return report, path
