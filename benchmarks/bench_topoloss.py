"""TopoLoss forward+backward: hf_topo vs the reference ``topoloss`` package, timed in the same run.

    python benchmarks/bench_topoloss.py                    # GPT-2-124M c_fc shapes: 12 × (3072 × 768), float32, CPU
    python benchmarks/bench_topoloss.py --repeats 20 --threads 2
    python benchmarks/bench_topoloss.py --device cuda      # on a GPU

Three implementations run on identical weights (same seed):

* reference: ``topoloss.TopoLoss([LaplacianPyramid(f"layers.{i}", factor_h=3, factor_w=3), ...])`` over
  ``--layers`` ``nn.Linear(768, 3072)`` layers, ``.compute(model)`` then ``.backward()``;
* hf_topo on the same ``nn.Linear`` layers: ``hf_topo.TopoRegularizer(TopoConfig(target_modules=[...]))``;
* hf_topo on transformers' ``Conv1D`` layers holding the transposed weights (GPT-2's real layout).

Parity first: the loss values must agree with the reference to ``--value_tol`` (1e-6) and every layer's gradient
to ``--grad_rtol`` (1e-4) relative to the largest entry of the reference gradient; the script stops otherwise.

Speed: after ``--warmup`` passes of each, ``--repeats`` rounds that time one forward+backward of every
implementation in turn (the order rotates each round, so machine noise hits all of them alike); the median is
reported in ms, with the speed-up ``reference ms / ms`` (goal ≥ 10×). Gradients are reset to ``None`` before each
pass, as ``Trainer`` does, so allocating the gradient is part of the time of every implementation.

Peak extra memory of one forward+backward, one fresh subprocess per implementation. The parameters and their
``.grad`` buffers (zeros) exist beforehand, so neither is counted, and one untimed forward+backward runs first so that
one-time allocations (thread pools, cached blur matrices) are not counted either. Then

* CPU: the process runs with ``MALLOC_MMAP_THRESHOLD_=65536`` and ``MALLOC_TRIM_THRESHOLD_=0``, so glibc hands
  every freed buffer back to the OS and the resident set follows the live tensors. The peak resident set (VmHWM of
  ``/proc/self/status``) is reset by writing ``5`` to ``/proc/self/clear_refs``, the resident set (VmRSS) is read as
  the baseline, the loss runs forward+backward once, and extra = VmHWM − baseline. Where the reset is refused, the
  baseline is the VmHWM before the pass (the JSON's ``memory_method`` says ``hwm-delta``), which can only
  under-estimate.
* CUDA: ``torch.cuda.reset_peak_memory_stats()``, then ``max_memory_allocated() − memory_allocated()`` around the
  pass.

The extra bytes are reported in MiB and as a multiple of the largest target layer's weight (one 3072 × 768 float32
weight = 9 MiB; goal ≤ 2×). The extra includes the gradient the loss returns before autograd adds it into ``.grad``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
from _common import default_output, device_info, device_line, synchronize, write_json
from torch import nn
from transformers.pytorch_utils import Conv1D

from hf_topo import TopoConfig, TopoRegularizer

#: (implementation, layer type) of each row, the reference first.
CASES: tuple[tuple[str, str], ...] = (("reference", "Linear"), ("hf_topo", "Linear"), ("hf_topo", "Conv1D"))
SPEEDUP_GOAL = 10.0
MEMORY_GOAL_WEIGHTS = 2.0


#: ``--compiled`` adds this case: an experiment, not the library's kernel (see :func:`compiled_loss`).
COMPILED_CASE = ("compiled", "Conv1D")


def label(impl: str, layer_type: str) -> str:
    if impl == "compiled":
        return f"experiment: gather blur + torch.compile ({layer_type})"
    return "reference topoloss 0.0.2" if impl == "reference" else f"hf_topo ({layer_type})"


def compiled_loss(stack: Stack, args: argparse.Namespace) -> Callable[[], torch.Tensor]:
    """An experiment (``--compiled``): the sparse blur as a fixed-width gather (each unit's ≤ K blur entries, padded
    with zero weights) in plain differentiable PyTorch, compiled with ``torch.compile`` so that the gather, the blur,
    the three reductions and the backward fuse into a few kernels per layer. Measures what a fused kernel could gain
    where per-operator overheads dominate (a GPU); not used by the library."""
    from hf_topo.regularizers.laplacian_pyramid import _sparse_blur
    from hf_topo.sheet import most_square_shape

    height, width = most_square_shape(args.units)
    blur = _sparse_blur(height, width, args.factor, args.factor, "bilinear")
    if blur is None:
        raise ValueError("--compiled needs a blur with narrow rows (bilinear).")
    units = args.units
    counts = torch.diff(blur.offsets, append=blur.offsets.new_tensor([blur.indices.numel()]))
    width_k = int(counts.max())
    rows_of_entries = torch.repeat_interleave(torch.arange(units), counts)
    slots = torch.arange(blur.indices.numel()) - blur.offsets[rows_of_entries]
    index = torch.arange(units)[:, None].repeat(1, width_k)  # padding: the unit itself, with weight 0
    weight = torch.zeros(units, width_k)
    index[rows_of_entries, slots] = blur.indices
    weight[rows_of_entries, slots] = blur.values
    index, weight = index.to(args.device), weight.to(args.device)

    @torch.compile(dynamic=False)
    def layer_loss(rows: torch.Tensor) -> torch.Tensor:  # (units, depth)
        rows = rows.float()
        blurred = (rows[index] * weight[..., None]).sum(1)
        dot = (rows * blurred).sum(-1)
        norm_c = rows.square().sum(-1).sqrt().clamp_min(1e-8)
        norm_b = blurred.square().sum(-1).sqrt().clamp_min(1e-8)
        return 1.0 - (dot / (norm_c * norm_b)).mean()

    def loss() -> torch.Tensor:
        values = [layer_loss(layer.weight.T if isinstance(layer, Conv1D) else layer.weight) for layer in stack.layers]
        return torch.stack(values).mean()

    return loss


class Stack(nn.Module):
    """``layers.0`` … ``layers.{n-1}``: the target layers and nothing else."""

    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)


def build_stack(layer_type: str, args: argparse.Namespace) -> Stack:
    """``args.layers`` layers with ``args.units`` outputs and ``args.inputs`` inputs, the same weights for any type."""
    torch.manual_seed(args.seed)
    linears = [nn.Linear(args.inputs, args.units) for _ in range(args.layers)]
    if layer_type == "Linear":
        return Stack(linears).to(args.device)
    convs = []
    for linear in linears:
        conv = Conv1D(args.units, args.inputs)  # weight (inputs, units): the transpose of nn.Linear's
        with torch.no_grad():
            conv.weight.copy_(linear.weight.T)
            conv.bias.copy_(linear.bias)
        convs.append(conv)
    return Stack(convs).to(args.device)


def make_loss(impl: str, stack: Stack, args: argparse.Namespace) -> Callable[[], torch.Tensor]:
    """A closure returning the mean TopoLoss over every layer of ``stack`` (a differentiable scalar)."""
    names = [f"layers.{i}" for i in range(len(stack.layers))]
    if impl == "compiled":
        return compiled_loss(stack, args)
    if impl == "reference":
        from topoloss import LaplacianPyramid
        from topoloss import TopoLoss as ReferenceTopoLoss

        reference = ReferenceTopoLoss(
            [LaplacianPyramid(layer_name=name, factor_h=args.factor, factor_w=args.factor) for name in names]
        )
        return lambda: reference.compute(stack)
    ours = TopoRegularizer(TopoConfig(target_modules=names, factor_h=args.factor, factor_w=args.factor))
    return lambda: ours(stack)


def linear_layout_grads(stack: Stack) -> list[torch.Tensor]:
    """Every layer's weight gradient in ``nn.Linear`` orientation ``(units, inputs)``."""
    return [layer.weight.grad.T if isinstance(layer, Conv1D) else layer.weight.grad for layer in stack.layers]


def check_parity(stacks: dict[tuple[str, str], Stack], args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Loss value and gradients of every implementation against the reference's (one forward+backward each)."""
    values, grads = {}, {}
    for case, stack in stacks.items():
        stack.zero_grad(set_to_none=True)
        value = make_loss(case[0], stack, args)()
        value.backward()
        values[case], grads[case] = value.item(), linear_layout_grads(stack)
        stack.zero_grad(set_to_none=True)
    reference = CASES[0]
    parity = {}
    for case in stacks:
        grad_error = max(
            ((g - r).abs().max() / r.abs().max()).item() for g, r in zip(grads[case], grads[reference], strict=True)
        )
        parity[label(*case)] = {
            "value": values[case],
            "abs_value_diff": abs(values[case] - values[reference]),
            "grad_rel_error": grad_error,
        }
    return parity


def time_all(stacks: dict[tuple[str, str], Stack], args: argparse.Namespace) -> dict[tuple[str, str], list[float]]:
    """Seconds of each forward+backward, ``args.repeats`` per implementation, in rotating interleaved rounds."""
    losses = {case: make_loss(case[0], stack, args) for case, stack in stacks.items()}
    order = list(stacks)
    times: dict[tuple[str, str], list[float]] = {case: [] for case in order}
    for round_index in range(args.warmup + args.repeats):
        shift = round_index % len(order)
        for case in order[shift:] + order[:shift]:
            stacks[case].zero_grad(set_to_none=True)
            synchronize(args.device)
            start = time.perf_counter()
            losses[case]().backward()
            synchronize(args.device)
            if round_index >= args.warmup:
                times[case].append(time.perf_counter() - start)
    return times


def _proc_status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {key} line; peak memory can only be measured on Linux.")


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current resident set (Linux ≥ 4.0); False where that is not permitted."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def memory_child(impl: str, layer_type: str, args: argparse.Namespace) -> None:
    """In a fresh process: print as JSON the peak extra bytes of one forward+backward (see the module docstring)."""
    stack = build_stack(layer_type, args)
    for param in stack.parameters():
        param.grad = torch.zeros_like(param)
    loss = make_loss(impl, stack, args)
    loss().backward()  # one-time allocations happen here, before the baseline
    gc.collect()
    if args.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        loss().backward()
        torch.cuda.synchronize()
        extra, method = torch.cuda.max_memory_allocated() - before, "cuda-max-allocated"
    else:
        reset = _reset_peak_rss()
        before_kib = _proc_status_kib("VmRSS" if reset else "VmHWM")
        loss().backward()
        extra = (_proc_status_kib("VmHWM") - before_kib) * 1024
        method = "clear_refs-reset" if reset else "hwm-delta"
    print(json.dumps({"extra_bytes": extra, "method": method}))


def measure_memory(impl: str, layer_type: str, args: argparse.Namespace) -> dict:
    """Run :func:`memory_child` in a subprocess with glibc set to return freed memory to the OS."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    cmd = [sys.executable, os.path.abspath(__file__), "--memory_child", impl, layer_type]
    for option in ("device", "layers", "units", "inputs", "factor", "seed"):
        cmd += [f"--{option}", str(getattr(args, option))]
    cmd += ["--threads", str(torch.get_num_threads())]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"memory measurement of {label(impl, layer_type)} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_table(results: dict) -> None:
    config = results["config"]
    print(
        f"TopoLoss forward+backward, {config['layers']} × ({config['units']} × {config['inputs']}) float32, "
        f"factor {config['factor']:g}; {device_line(results['device_info'])}\n"
    )
    print(
        f"| implementation | ms (median of {config['repeats']}) | speed-up | loss value | |Δ value| "
        "| max grad rel. error | peak extra memory | × one weight |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in results["rows"]:
        memory = (
            ("n/a", "n/a")
            if row["peak_extra_mib"] is None
            else (f"{row['peak_extra_mib']:.1f} MiB", f"{row['peak_extra_weights']:.2f}×")
        )
        print(
            f"| {row['implementation']} | {row['ms_median']:.1f} | {row['speedup']:.2f}× | {row['value']:.7f} "
            f"| {row['abs_value_diff']:.1e} | {row['grad_rel_error']:.1e} | {memory[0]} | {memory[1]} |"
        )
    goals = results["goals"]
    print(
        f"\nGoals: speed-up ≥ {SPEEDUP_GOAL:g}×: {'met' if goals['speedup_met'] else 'NOT met'}; peak extra memory ≤ "
        f"{MEMORY_GOAL_WEIGHTS:g}× the largest target weight ({results['weight_mib']:.1f} MiB): "
        + ("not measured" if goals["memory_met"] is None else "met" if goals["memory_met"] else "NOT met")
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--layers", type=int, default=12, help="number of target layers (GPT-2-124M: 12)")
    parser.add_argument("--units", type=int, default=3072, help="output units per layer (GPT-2 c_fc: 3072)")
    parser.add_argument("--inputs", type=int, default=768, help="inputs per unit, the sheet depth (GPT-2: 768)")
    parser.add_argument("--factor", type=float, default=3.0, help="blur downsampling factor φh = φw")
    parser.add_argument("--repeats", type=int, default=10, help="timed passes per implementation")
    parser.add_argument("--warmup", type=int, default=2, help="untimed passes per implementation first")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--value_tol", type=float, default=1e-6, help="largest |Δ loss| accepted vs the reference")
    parser.add_argument("--grad_rtol", type=float, default=1e-4, help="largest max|Δgrad| / max|grad| accepted")
    parser.add_argument("--skip_memory", action="store_true", help="time only, no peak-memory subprocesses")
    parser.add_argument("--output", default=default_output(__file__), help="results JSON")
    parser.add_argument(
        "--compiled",
        action="store_true",
        help="also time an experiment: the blur as a gather in plain PyTorch under torch.compile (see compiled_loss)",
    )
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="also profile one forward+backward of each implementation (torch.profiler) "
        "and write its operator table here: where the time goes, and how many operators and kernels each launches",
    )
    parser.add_argument("--memory_child", nargs=2, metavar=("IMPL", "LAYER_TYPE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible to torch.")
    return args


def write_profile(stacks: dict[tuple[str, str], Stack], args: argparse.Namespace) -> None:
    """One profiled forward+backward per implementation (after the timed rounds): operator counts and the top
    operators by self time, CPU and (on a GPU) device, written to ``args.profile``."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
    sort_by = "self_cuda_time_total" if args.device == "cuda" else "self_cpu_time_total"
    sections = []
    for case, stack in stacks.items():
        loss = make_loss(case[0], stack, args)
        stack.zero_grad(set_to_none=True)
        synchronize(args.device)
        with profile(activities=activities) as prof:
            loss().backward()
            synchronize(args.device)
        events = prof.key_averages()
        operators = sum(event.count for event in events if event.key.startswith("aten::"))
        kernels = sum(event.count for event in prof.events() if event.device_type.name == "CUDA")
        header = f"## {label(*case)}: {operators} aten operator calls, {kernels} device kernels/copies"
        print(header)
        sections.append(header + "\n" + events.table(sort_by=sort_by, row_limit=15, max_name_column_width=50))
        stack.zero_grad(set_to_none=True)
    with open(args.profile, "w", encoding="utf-8") as handle:
        handle.write("\n\n".join(sections) + "\n")
    print(f"profile written to {args.profile}")


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(*args.memory_child, args)
        return

    cases = CASES + ((COMPILED_CASE,) if args.compiled else ())
    stacks = {case: build_stack(case[1], args) for case in cases}
    parity = check_parity(stacks, args)
    for name, check in list(parity.items())[1:]:
        print(
            f"parity {name}: |Δ value| = {check['abs_value_diff']:.1e} (≤ {args.value_tol:g}), "
            f"max grad rel. error = {check['grad_rel_error']:.1e} (≤ {args.grad_rtol:g})"
        )
    failed = [
        name
        for name, check in parity.items()
        if check["abs_value_diff"] > args.value_tol or check["grad_rel_error"] > args.grad_rtol
    ]
    if failed:
        sys.exit(f"hf_topo disagrees with the reference for {failed}; not timing.")
    print()

    times = time_all(stacks, args)
    if args.profile:
        write_profile(stacks, args)
    del stacks
    gc.collect()
    weight_bytes = args.units * args.inputs * 4
    reference_ms = statistics.median(times[CASES[0]]) * 1e3
    rows = []
    for case in cases:
        ms = statistics.median(times[case]) * 1e3
        memory = None if args.skip_memory else measure_memory(*case, args)
        rows.append(
            {
                "implementation": label(*case),
                "layer_type": case[1],
                "ms_median": ms,
                "ms_all": [t * 1e3 for t in times[case]],
                "speedup": reference_ms / ms,
                **parity[label(*case)],
                "peak_extra_bytes": None if memory is None else memory["extra_bytes"],
                "peak_extra_mib": None if memory is None else memory["extra_bytes"] / 2**20,
                "peak_extra_weights": None if memory is None else memory["extra_bytes"] / weight_bytes,
                "memory_method": None if memory is None else memory["method"],
            }
        )
    ours = [row for row in rows[1:] if not row["implementation"].startswith("experiment")]  # the library
    results = {
        "benchmark": "TopoLoss forward+backward, hf_topo vs topoloss 0.0.2",
        "device_info": device_info(args.device),
        "config": {k: v for k, v in vars(args).items() if k not in ("memory_child", "output")},
        "weight_mib": weight_bytes / 2**20,
        "rows": rows,
        "goals": {
            "speedup_min": SPEEDUP_GOAL,
            "speedup_met": all(row["speedup"] >= SPEEDUP_GOAL for row in ours),
            "memory_max_weights": MEMORY_GOAL_WEIGHTS,
            "memory_met": None
            if args.skip_memory
            else all(row["peak_extra_weights"] <= MEMORY_GOAL_WEIGHTS for row in ours),
        },
    }
    print_table(results)
    write_json(args.output, results)


if __name__ == "__main__":
    main()
