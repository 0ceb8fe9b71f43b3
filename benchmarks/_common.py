"""Helpers shared by the benchmark scripts: what machine the numbers come from, timing and writing results."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def cpu_model() -> str:
    """The CPU's ``model name`` from ``/proc/cpuinfo`` (``platform.processor()`` where that file is absent)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_info(device: str) -> dict[str, Any]:
    """Everything that identifies the machine a benchmark ran on (stored in the results JSON)."""
    import transformers

    info: dict[str, Any] = {
        "device": device,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }
    if device == "cuda":
        info["cuda_device"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    return info


def device_line(info: dict[str, Any]) -> str:
    """One line naming the machine, e.g. ``Intel(R) Xeon(R) Processor, 2 torch threads, torch 2.13.0+cpu``."""
    line = f"{info['cpu']}, {info['torch_threads']} torch threads, torch {info['torch']}"
    if info["device"] == "cuda":
        line = f"{info['cuda_device']} (CUDA {info['cuda']}); host {line}"
    return line


def synchronize(device: str) -> None:
    """Wait for queued GPU work, so that a wall-clock reading covers it (no-op on CPU)."""
    if device == "cuda":
        torch.cuda.synchronize()


def default_output(script: str) -> str:
    """``benchmarks/results/<script name>.json``."""
    return str(RESULTS_DIR / f"{Path(script).stem}.json")


def write_json(path: str, results: dict[str, Any]) -> None:
    """Write ``results`` to ``path`` (parents created) and say where on stderr."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
    print(f"\nresults written to {path}", file=sys.stderr)
