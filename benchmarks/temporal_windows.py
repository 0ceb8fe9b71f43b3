"""Temporal integration windows and structure yoking of a TopoNet and its twin, as Skrill & Norman-Haignere measure
them (``hf_topo.analysis.temporal``; the procedure and its sources: docs/analysis.md).

    python benchmarks/temporal_windows.py --model runs/toponet --baseline runs/baseline --text_file held_out.txt

Writes ``benchmarks/results/temporal_windows.json``: per model and layer, the shares of window kinds, the median fit
parameters, Moran's I of the ``a``, ``b``, ``c``, reach and yoking-index maps, the mean window and the yoking index.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from _common import RESULTS_DIR, device_info, write_json
from transformers import AutoModelForCausalLM, AutoTokenizer

import hf_topo  # noqa: F401  (registers the topography metadata)
from hf_topo.analysis import load_passages
from hf_topo.analysis.temporal import (
    WINDOW_KINDS,
    fit_integration_windows,
    measure_integration_windows,
    measure_structure_yoking,
)


def finite_median(values: torch.Tensor) -> float | None:
    finite = values[torch.isfinite(values)]
    return float(finite.median()) if finite.numel() else None


def measure(path: str, passages: list[str], args) -> dict:
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    start = time.perf_counter()
    windows = measure_integration_windows(
        model, tokenizer, passages, max_delta=args.max_delta, sequence_words=args.sequence_words,
        max_sequences=args.max_sequences, batch_size=args.batch_size, seed=args.seed,
    )  # fmt: skip
    fits = fit_integration_windows(windows)
    yoking = measure_structure_yoking(
        model, tokenizer, passages, sentence_words=args.sentence_words, sentences_per_sequence=args.sentences_per_sequence,
        max_sequences=args.yoking_sequences, single_token_words=args.single_token_words, batch_size=args.batch_size,
        seed=args.seed,
    )  # fmt: skip
    layers = {}
    for name, fit in fits.layers.items():
        index = yoking.index[name]
        finite = index[torch.isfinite(index)]
        layers[name] = {
            "kinds": {kind: round(share, 4) for kind, share in fit.fractions().items()},
            "median_a": finite_median(fit.a),
            "median_b": finite_median(fit.b),
            "median_c": finite_median(fit.c),
            "median_reach": finite_median(fit.reach),
            "morans_i": {key: round(value, 4) for key, value in fits.morans[name].items() if math.isfinite(value)},
            "mean_window": [round(v, 4) for v in fit.mean_window.tolist()],
            "yoking_median_index": float(finite.median()) if finite.numel() else None,
            "yoking_fraction_positive": float((finite > 0).double().mean()) if finite.numel() else None,
            "yoking_morans_i": yoking.morans[name],
        }
    return {
        "n_sequences": windows.n_sequences,
        "yoking_sequences": yoking.n_sequences,
        "seconds": round(time.perf_counter() - start, 1),
        "layers": layers,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--baseline", required=True)
    parser.add_argument("--text_file", required=True)
    parser.add_argument("--max_delta", type=int, default=20)
    parser.add_argument("--sequence_words", type=int, default=40)
    parser.add_argument("--max_sequences", type=int, default=200)
    parser.add_argument("--sentence_words", type=int, default=8)
    parser.add_argument("--sentences_per_sequence", type=int, default=5)
    parser.add_argument("--yoking_sequences", type=int, default=150)
    parser.add_argument("--single_token_words", action="store_true")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=str(RESULTS_DIR / "temporal_windows.json"))
    args = parser.parse_args()
    passages = load_passages(text_file=args.text_file, min_words=args.sequence_words, max_passages=2000)
    results = {
        "settings": {k: v for k, v in vars(args).items() if k not in ("model", "baseline", "text_file", "output")},
        "method": "Skrill & Norman-Haignere (NeurIPS 2023) word swaps; docs/analysis.md",
        "kinds": list(WINDOW_KINDS),
        "machine": device_info("cpu"),
        "models": {"toponet": measure(args.model, passages, args), "baseline": measure(args.baseline, passages, args)},
    }
    write_json(args.output, results)
    for label, result in results["models"].items():
        for name, layer in result["layers"].items():
            print(
                f"{label:8s} {name}: kinds {layer['kinds']}, Moran's I c {layer['morans_i'].get('c')}, reach "
                f"{layer['morans_i'].get('reach')}; yoking median {layer['yoking_median_index']:.3f}, "
                f"Moran's I {layer['yoking_morans_i']:.2f}"
            )


if __name__ == "__main__":
    main()
