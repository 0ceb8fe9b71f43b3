"""TopoLoss forward+backward: hf_topo vs the reference `topoloss` package, same run, same weights.

    python benchmarks/bench_topoloss.py                  # GPT-2-124M c_fc shapes: 12 × (3072 × 768), float32, CPU
    python benchmarks/bench_topoloss.py --device cuda

Speed: median of `--repeats` timed forward+backward passes after warm-up, for the reference (12 `nn.Linear`
layers, `topoloss.TopoLoss` + `LaplacianPyramid(factor 3, 3)`), hf_topo on the same `nn.Linear` layers, and hf_topo
on transformers' `Conv1D` layers holding the transposed weights (GPT-2's real layout). Values are checked equal
first (|Δ| ≤ 1e-6).

Peak extra memory: one forward+backward of each implementation in a fresh subprocess, after the parameters and
their `.grad` buffers exist (so neither counts), as the rise of the process's peak resident memory (VmHWM) with
glibc returning freed blocks to the OS (MALLOC_MMAP_THRESHOLD_); on CUDA, `max_memory_allocated`. Reported in
MiB and as a multiple of one layer's weight (goal ≤ 2×).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D


def device_line(device: str) -> str:
    if device == "cuda":
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__})"
    cpu = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {torch.get_num_threads()} torch threads (torch {torch.__version__})"


class Stack(nn.Module):
    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)


def build(kind: str, n_layers: int, units: int, inputs: int, device: str, seed: int = 0) -> Stack:
    torch.manual_seed(seed)
    linears = [nn.Linear(inputs, units) for _ in range(n_layers)]
    if kind == "conv1d":
        layers = []
        for linear in linears:
            conv = Conv1D(units, inputs)
            conv.weight.data.copy_(linear.weight.data.T)
            layers.append(conv)
        return Stack(layers).to(device)
    return Stack(linears).to(device)


def loss_fn(impl: str, model: Stack, n_layers: int):
    if impl == "reference":
        from topoloss import LaplacianPyramid, TopoLoss

        ref = TopoLoss([LaplacianPyramid(layer_name=f"layers.{i}", factor_h=3, factor_w=3) for i in range(n_layers)])
        return lambda: ref.compute(model)
    from hf_topo import TopoLoss

    ours = TopoLoss(target_modules=["layers." + str(i) for i in range(n_layers)])
    return lambda: ours(model)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_impl(impl: str, kind: str, args) -> tuple[float, float]:
    model = build(kind, args.layers, args.units, args.inputs, args.device)
    fn = loss_fn(impl, model, args.layers)
    for _ in range(args.warmup):
        fn().backward()
    times = []
    for _ in range(args.repeats):
        model.zero_grad(set_to_none=True)
        sync(args.device)
        start = time.perf_counter()
        value = fn()
        value.backward()
        sync(args.device)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3, value.item()


def _vm_hwm_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))


def memory_child(impl: str, kind: str, args) -> None:
    """Runs in a subprocess: print the peak extra bytes of one forward+backward."""
    # Warm up on a small stack first so one-time costs (thread pools, lazy imports, kernels) are not counted.
    small = build(kind, 1, 96, 16, args.device)
    loss_fn(impl, small, 1)().backward()
    model = build(kind, args.layers, args.units, args.inputs, args.device)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    fn = loss_fn(impl, model, args.layers)
    if args.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn().backward()
        torch.cuda.synchronize()
        print(torch.cuda.max_memory_allocated() - before)
    else:
        before = _vm_hwm_kib()
        fn().backward()
        print((_vm_hwm_kib() - before) * 1024)


def measure_memory(impl: str, kind: str, args) -> int:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    cmd = [sys.executable, __file__, "--memory_child", impl, kind, "--device", args.device]
    cmd += ["--layers", str(args.layers), "--units", str(args.units), "--inputs", str(args.inputs)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--units", type=int, default=3072)
    parser.add_argument("--inputs", type=int, default=768)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--output", default="benchmarks/results/bench_topoloss.json")
    parser.add_argument("--memory_child", nargs=2, metavar=("IMPL", "KIND"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(*args.memory_child, args)
        return

    rows = [
        ("reference topoloss 0.0.2", "reference", "linear"),
        ("hf_topo, nn.Linear", "ours", "linear"),
        ("hf_topo, GPT-2 Conv1D", "ours", "conv1d"),
    ]
    weight_bytes = args.units * args.inputs * 4
    results = {
        "device": device_line(args.device),
        "shape": f"{args.layers} x ({args.units} x {args.inputs}) float32",
        "rows": [],
    }
    ref_ms = ref_value = None
    for label, impl, kind in rows:
        ms, value = time_impl(impl, kind, args)
        extra = measure_memory(impl, kind, args)
        if impl == "reference":
            ref_ms, ref_value = ms, value
        results["rows"].append(
            {"implementation": label, "ms": ms, "speedup": ref_ms / ms, "value": value, "abs_diff_vs_reference": abs(value - ref_value),
             "peak_extra_mib": extra / 2**20, "peak_extra_weights": extra / weight_bytes}
        )  # fmt: skip
    print(f"TopoLoss forward+backward, {results['shape']}, {results['device']}\n")
    print("| implementation | ms (median) | speed-up vs reference | value | abs diff | peak extra memory |")
    print("|---|---|---|---|---|---|")
    for r in results["rows"]:
        print(
            f"| {r['implementation']} | {r['ms']:.1f} | {r['speedup']:.1f}× | {r['value']:.7f} | {r['abs_diff_vs_reference']:.1e} | "
            f"{r['peak_extra_mib']:.1f} MiB = {r['peak_extra_weights']:.2f}× one weight |"
        )
    assert all(r["abs_diff_vs_reference"] <= 1e-6 for r in results["rows"]), "values differ from the reference"
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
