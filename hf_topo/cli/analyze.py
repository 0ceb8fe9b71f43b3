"""Measure a TopoNet (and its baseline): topography, dimensionality, efficiency, robustness, maps; a report with figures.

    # the demo's TopoNet against its τ=0 twin, on held-out text, with BLiMP in the pruning sweep
    hf-topo analyze --model outputs/demo/toponet --baseline outputs/demo/baseline \\
        --text_file heldout.txt --blimp_dir blimp_sample --blimp_limit 100 \\
        --stimuli_a animals.txt --stimuli_b tools.txt --save_downsampled 2 --output_dir outputs/analysis

    # any Hub GPT-2 on a Hub dataset (its MLP c_fc layers get most-square sheets)
    hf-topo analyze --model openai-community/gpt2 --dataset wikitext --dataset_config wikitext-2-raw-v1 \\
        --split validation --output_dir outputs/analysis-gpt2

    # an image classifier (a vision TopoNet and its twin) on a folder of class subfolders: accuracy-scored sweeps
    hf-topo analyze --model outputs/demo_vision/toponet --baseline outputs/demo_vision/baseline \\
        --image_dir outputs/demo_vision/data/validation --max_images 1024 --output_dir outputs/analysis-vision

Writes `<output_dir>/report.json` (`summary`: flat scalar metrics of `--model`; `baseline_summary`; per-layer
results, correlation-vs-distance curves and sweeps under `model` / `baseline`) and the figures `sheet_maps.png`,
`smoothness_curve.png`, `pruning.png`, `noise.png`, `downsampling.png` (and `selectivity.png` with stimuli).
`--temporal_windows` adds every unit's temporal integration window and structure-yoking index (word swaps, as
Skrill & Norman-Haignere measure them; docs/analysis.md). `--save_downsampled φ` also saves `--model` with its
topographic layers downsampled φ×φ to `<output_dir>/downsampled/`, loadable with
`AutoModelForCausalLM.from_pretrained` after `import hf_topo`. With `--image_dir` (image classifiers) a unit is a
convolution's output channel, its response to an image the channel's feature map averaged over space, and the
pruning, noise and downsampling sweeps are scored by top-1 accuracy (docs/analysis.md, "Analysing a vision
TopoNet"). Every analysis setting is a flag.
"""

from __future__ import annotations

import os
import sys

from hf_topo.analysis.report import AnalysisSettings
from hf_topo.analysis.run import AnalyzeArguments, analyze_saved_models
from hf_topo.analysis.summary import AnalysisSummary
from hf_topo.cli.arguments import make_argument_parser, parse_command_line, run_command, setup_logging
from hf_topo.vision.category_report import (
    SelectivityArguments,
    add_selectivity_to_report,
    selectivity_only,
    selectivity_table,
)

#: The measures of the printed summary (fields of AnalysisSummary), in this order, when the report has them.
SUMMARY_MEASURES = (
    "perplexity",
    "accuracy",
    "smoothness",
    "weight_smoothness",
    "effective_dimensionality",
    "morans_i",
    "blimp",
)


def make_parser(prog: str | None = None):
    return make_argument_parser((AnalyzeArguments, AnalysisSettings, SelectivityArguments), prog, __doc__)


def summary_rows(report: dict) -> list[tuple[str, list[float | None]]]:
    """``(label, [model value, baseline value])``: the headline measures, then Δ score (perplexity, or top-1 accuracy
    for an image classifier) at every perturbed point of every sweep the model has."""
    model = AnalysisSummary.from_report(report, "model")
    summaries = [model] + ([baseline] if (baseline := AnalysisSummary.from_report(report, "baseline")) else [])
    rows = [
        (name, [s.measure(name) for s in summaries]) for name in SUMMARY_MEASURES if model.measure(name) is not None
    ]
    for kind, sweep in model.sweeps.items():
        for point in sweep.perturbed_points():
            label = f"Δ {sweep.metric}, {kind} {sweep.strength(point.x)}"
            rows.append((label, [s.delta(kind, point.x) for s in summaries]))
    return rows


def print_summary(report: dict) -> None:
    names = ["model"] + (["baseline"] if report.get("baseline_summary") else [])
    print("\n| metric | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for label, values in summary_rows(report):
        print(f"| {label} | " + " | ".join("n/a" if v is None else f"{v:.4g}" for v in values) + " |")


def main(argv: list[str] | None = None, prog: str | None = None) -> dict:
    setup_logging()
    args, settings, selectivity = parse_command_line(make_parser(prog), sys.argv[1:] if argv is None else argv)
    if selectivity_only(args, selectivity):
        report = {"metadata": {"model": args.model, "baseline": args.baseline}}
    elif args.image_dir is not None:  # an image classifier, on a folder of class subfolders
        from hf_topo.vision.analyze import analyze_saved_image_models

        report = analyze_saved_image_models(args, settings)
    else:
        report = analyze_saved_models(args, settings)
    if selectivity.stimuli_dir is not None:  # category-selectivity maps of an image model (Fig. 5A)
        report = add_selectivity_to_report(report, args, selectivity)
    if AnalysisSummary.from_report(report, "model") is not None:
        print_summary(report)
    if "selectivity" in report:
        print("\n" + selectivity_table(report["selectivity"]))
    print(f"\nReport: {os.path.abspath(os.path.join(args.output_dir, 'report.json'))}")
    print("Figures: " + ", ".join(report["figures"].values()))
    return report


if __name__ == "__main__":
    sys.exit(run_command(main, prog="hf-topo analyze"))
