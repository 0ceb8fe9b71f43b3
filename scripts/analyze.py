"""Measure a TopoNet (and its baseline): topography, dimensionality, efficiency, robustness, maps; a report with figures.

    # the demo's TopoNet against its τ=0 twin, on held-out text, with BLiMP in the pruning sweep
    python scripts/analyze.py --model outputs/demo/toponet --baseline outputs/demo/baseline \
        --text_file ../shared/data/tinyshakespeare.txt --blimp_dir ../shared/data/blimp_sample --blimp_limit 100 \
        --stimuli_a animals.txt --stimuli_b tools.txt --save_downsampled 2 --output_dir outputs/analysis

    # any Hub GPT-2 on a Hub dataset (its MLP c_fc layers get most-square sheets)
    python scripts/analyze.py --model openai-community/gpt2 --dataset wikitext --dataset_config wikitext-2-raw-v1 \
        --split validation --output_dir outputs/analysis-gpt2

Writes `<output_dir>/report.json` (`summary`: flat scalar metrics of `--model`; `baseline_summary`; per-layer
results, correlation-vs-distance curves and sweeps under `model` / `baseline`) and the figures `sheet_maps.png`,
`smoothness_curve.png`, `pruning.png`, `noise.png`, `downsampling.png` (and `selectivity.png` with stimuli).
`--temporal_windows` adds every unit's temporal integration window (word swaps; `temporal_summary_*.png`,
`temporal_maps_*.png`). `--save_downsampled φ` also saves `--model` with its topographic layers downsampled φ×φ to
`<output_dir>/downsampled/`, loadable with `AutoModelForCausalLM.from_pretrained` after `import hf_topo`.
Every analysis setting (`--max_tokens`, `--pruning_fractions 0 0.5 0.9`, `--noise_sigmas`, `--downsampling_factors`,
...) is a flag; `--help` lists them.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import asdict, dataclass, field

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, HfArgumentParser, set_seed

import hf_topo.downsampling  # noqa: F401  (registers the downsampled model classes, so --save_downsampled output loads)
from hf_topo import TopoConfig
from hf_topo.analysis import (
    AnalysisSettings,
    analyze_model,
    load_passages,
    load_text_blocks,
    read_stimuli,
    write_report,
)
from hf_topo.blimp import load_blimp
from hf_topo.downsampling import downsample_model, parameter_count

logger = logging.getLogger("analyze")


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


def _check(args: AnalyzeArguments) -> None:
    if (args.text_file is None) == (args.dataset is None):
        raise ValueError("Give exactly one text source: --text_file FILE or --dataset NAME.")
    if (args.stimuli_a is None) != (args.stimuli_b is None):
        raise ValueError("Selectivity needs both --stimuli_a and --stimuli_b (one stimulus per line each).")
    if args.save_downsampled is not None and not (math.isfinite(args.save_downsampled) and args.save_downsampled >= 1):
        raise ValueError(f"--save_downsampled {args.save_downsampled}: give a factor φ >= 1, e.g. 2 for 2×2.")


def _tokenizer(path: str, fallback=None):
    has_own = not os.path.isdir(path) or any(
        os.path.isfile(os.path.join(path, name)) for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json")
    )
    if not has_own and fallback is not None:
        logger.info("%s has no tokenizer: using the analysed model's", path)
        return fallback
    return AutoTokenizer.from_pretrained(path)


def _load(path: str, device: str):
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return model.to(device)


def main(args: AnalyzeArguments, settings: AnalysisSettings) -> dict:
    """Analyse ``args.model`` (and ``args.baseline``), write the report; returns the report written to report.json."""
    _check(args)
    set_seed(settings.seed)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
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
    if settings.temporal_windows:  # whole stretches of text: a window of Δ words needs Δ words of context
        source = {k: v for k, v in text_source.items() if k != "max_blocks"}
        passages = load_passages(
            **source, min_words=2 * settings.temporal_max_delta, max_passages=4 * settings.temporal_max_sequences
        )

    tokenizer = _tokenizer(args.model)
    text = load_text_blocks(tokenizer, args.block_size, **text_source)
    model = _load(args.model, device)
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
    if args.baseline is not None:
        baseline_tokenizer = _tokenizer(args.baseline, fallback=tokenizer)
        baseline_text = (
            text
            if baseline_tokenizer is tokenizer
            else load_text_blocks(baseline_tokenizer, args.block_size, **text_source)
        )
        baseline = _load(args.baseline, device)
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
        factor = args.save_downsampled
        smaller = downsample_model(model, (factor, factor), [layer.name for layer in analysis.layers])
        directory = os.path.join(args.output_dir, "downsampled")
        smaller.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        metadata["downsampled"] = {
            "path": os.path.abspath(directory),
            "factor": factor,
            "parameters": parameter_count(smaller),
            "parameters_kept": parameter_count(smaller) / parameter_count(model),
        }
        logger.info("Downsampled model (%g×%g) saved to %s", factor, factor, directory)
    return write_report(analysis, args.output_dir, baseline_analysis, metadata)


def parse_args(argv: list[str] | None = None) -> tuple[AnalyzeArguments, AnalysisSettings]:
    parser = HfArgumentParser((AnalyzeArguments, AnalysisSettings))
    if argv is None and len(sys.argv) == 2 and sys.argv[1].endswith((".json", ".yaml", ".yml")):
        path = os.path.abspath(sys.argv[1])
        return parser.parse_yaml_file(path) if path.endswith((".yaml", ".yml")) else parser.parse_json_file(path)
    return parser.parse_args_into_dataclasses(args=argv)


def _print_summary(report: dict) -> None:
    keys = ["perplexity", "smoothness", "weight_smoothness", "effective_dimensionality", "morans_i", "blimp"]
    keys += [k for k in report["summary"] if k.startswith("downsampled_") and k.endswith("perplexity")]
    keys += [
        k for k in ("pruned_50pct_delta_perplexity", "noise_sigma_0.5_delta_perplexity") if k in report["summary"]
    ]
    columns = [("model", report["summary"])] + (
        [("baseline", report["baseline_summary"])] if report["baseline_summary"] else []
    )
    print("\n| metric | " + " | ".join(name for name, _ in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for key in keys:
        if key in report["summary"]:
            values = [summary.get(key) for _, summary in columns]
            print(f"| {key} | " + " | ".join("n/a" if v is None else f"{v:.4g}" for v in values) + " |")


if __name__ == "__main__":
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    transformers.utils.logging.set_verbosity_warning()
    script_args, analysis_settings = parse_args()
    report = main(script_args, analysis_settings)
    _print_summary(report)
    print(f"\nReport: {os.path.abspath(os.path.join(script_args.output_dir, 'report.json'))}")
    print("Figures: " + ", ".join(report["figures"].values()))
