"""Helpers shared by the benchmark scripts: what machine the numbers come from, timing and writing results."""

from __future__ import annotations

import json
import os
import platform
import re
import sys
from pathlib import Path
from typing import Any

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO_ROOT = RESULTS_DIR.parents[1]
# An absolute path inside a string: at the start or after whitespace, a quote, "=" or "(", up to whitespace or a quote.
_ABSOLUTE_PATH = re.compile(r"(?:(?<=^)|(?<=[\s='\"(]))(/[^\s'\"]+)")


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


def portable_path(path: str) -> str:
    """A path without what is specific to one machine: relative to the repository when inside it, else its last
    two components below the top-level folder (``/tmp/compare_run/baseline`` → ``compare_run/baseline``,
    ``/tmp/compare_run`` → ``compare_run``)."""
    resolved = Path(path)
    try:
        return str(resolved.relative_to(REPO_ROOT))
    except ValueError:
        below_top = resolved.parts[2:]  # ("/", "tmp", ...) → what is below /tmp
        return str(Path(*below_top[-2:])) if below_top else resolved.name or path


def portable_paths(value: Any) -> Any:
    """``value`` (JSON data) with every absolute path in its strings made :func:`portable_path` — whole strings and
    paths inside command lines alike."""
    if isinstance(value, str):
        return _ABSOLUTE_PATH.sub(lambda m: portable_path(m.group(1)), value)
    if isinstance(value, dict):
        return {k: portable_paths(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable_paths(v) for v in value]
    return value


def write_json(path: str, results: dict[str, Any]) -> None:
    """Write ``results`` to ``path`` (parents created; absolute paths made :func:`portable_paths`) and say where on
    stderr."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(portable_paths(results), f, indent=2)
        f.write("\n")
    print(f"\nresults written to {path}", file=sys.stderr)
