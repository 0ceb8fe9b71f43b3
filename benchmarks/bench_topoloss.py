"""TopoLoss forward+backward: hf_topo vs the reference ``topoloss`` package, timed in the same run.

    python benchmarks/bench_topoloss.py                    # default threads, then 1 thread; GPT-2 and ResNet-18
    python benchmarks/bench_topoloss.py --threads 1 --repeats 20
    python benchmarks/bench_topoloss.py --device cuda      # on a GPU

Two workloads, identical weights for every implementation (same seed):

* ``gpt2``: GPT-2-124M's 12 ``c_fc`` layers (``--layers`` × ``--units`` × ``--inputs``), as ``nn.Linear(768, 3072)``
  for the reference ``topoloss.TopoLoss([LaplacianPyramid(...)])`` and for hf_topo, and as transformers' ``Conv1D``
  holding the transposed weights (GPT-2's real layout) for hf_topo (the reference has no Conv1D: its row uses the
  reference's ``nn.Linear`` time);
* ``resnet18``: ResNet-18's 19 residual-block convolutions (torchvision's shapes: per stage two blocks of two 3×3
  convolutions, and the 1×1 downsampling convolution of stages 2–4), as ``nn.Conv2d`` (no torchvision needed).

Each workload also times hf_topo's grouped loss on PyTorch operators only (``HF_TOPO_NATIVE_KERNELS=0``: what runs
where its CPU kernels cannot be built, and on GPUs) and hf_topo's per-layer kernel (``sheet_cosine_loss`` layer by
layer, what ``TopoRegularizer`` ran before it grouped layers by sheet geometry), for comparison. On CUDA each
workload also has hf_topo's forward+backward captured once in a ``torch.cuda.CUDAGraph`` and replayed (one graph
launch per call instead of one launch per operator; see ``graphed_pass``): what a training loop captured as a graph,
or ``torch.compile(mode="reduce-overhead")``, gets. Its gradients are rewritten in place in the graph's memory.

Parity first: the loss values must agree with the reference to ``--value_tol`` (1e-6) and every layer's gradient
to ``--grad_rtol`` (1e-4) relative to the largest entry of the reference gradient; the script stops otherwise,
except for the comparison-only rows (per-layer kernel, ``--compiled``), which are then reported under
``disagreed_not_timed`` with their errors and not timed.

Speed, for each ``--threads`` setting in turn (default: torch's default, then 1): after ``--warmup`` passes of each,
``--repeats`` rounds that time one forward+backward of every implementation in turn (the order rotates each round,
so machine noise hits all of them alike); the median is reported in ms (wall clock, and CPU seconds of the process
beside it), with the speed-up ``reference ms / ms`` (goal ≥ 10×). Gradients are reset to ``None`` before each
pass, as ``Trainer`` does, so allocating the gradient is part of the time of every implementation.

The memory-traffic bound, timed in the same rounds: a plain pass that reads every target weight once and writes its
gradient once (``w.grad = w * 2``, into a fresh tensor like the loss's gradient). TopoLoss cannot do less: it must
read the weights and write their gradients. Each hf_topo row reports its time as a multiple of that bound (goal ≤ 3×).

Operator count: one forward+backward of each implementation under ``torch.profiler`` (CPU activity), counting the
``aten::`` operator calls at the top level (no ``aten::`` ancestor: what the Python code launches; goal ≤ 300 for the
12 GPT-2 layers) and all of them (nested calls included). On the CPU the JSON also counts hf_topo's GPU path
(``gpu_path_operators_on_cpu``: the stacked dense blur, forced on the CPU; counted, not timed), the host's share
of a GPU call, measurable without a GPU. The machine's load average (``os.getloadavg()``) is
recorded before and after each thread setting: on a shared machine read the ratios, not the absolute times.

Peak extra memory of one forward+backward (``--memory``; GPT-2 workload), one fresh subprocess per implementation. The
parameters and their ``.grad`` buffers (zeros) exist beforehand, so neither is counted, and one untimed
forward+backward runs first so that one-time allocations (thread pools, cached blur matrices) are not counted either.
Then

* CPU: the process runs with ``MALLOC_MMAP_THRESHOLD_=65536`` and ``MALLOC_TRIM_THRESHOLD_=0``, so glibc hands
  every freed buffer back to the OS and the resident set follows the live tensors. The peak resident set (VmHWM of
  ``/proc/self/status``) is reset by writing ``5`` to ``/proc/self/clear_refs``, the resident set (VmRSS) is read as
  the baseline, the loss runs forward+backward once, and extra = VmHWM − baseline. Where the reset is refused, the
  baseline is the VmHWM before the pass (the JSON's ``memory_method`` says ``hwm-delta``), which can only
  under-estimate.
* CUDA: ``torch.cuda.reset_peak_memory_stats()``, then ``max_memory_allocated() − memory_allocated()`` around the
  pass.

The extra bytes are reported in MiB and as a multiple of the largest target layer's weight (one 3072 × 768 float32
weight = 9 MiB). The extra includes the gradient the loss returns before autograd adds it into ``.grad``.
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
from _common import default_output, device_info, synchronize, write_json
from torch import nn
from transformers.pytorch_utils import Conv1D

from hf_topo import TopoConfig, TopoRegularizer
from hf_topo.regularizers.native import NATIVE_KERNELS_ENV, native_kernels_status

#: Per workload, (implementation, layer type) of each row, the reference first.
WORKLOADS: dict[str, tuple[tuple[str, str], ...]] = {
    "gpt2": (
        ("reference", "Linear"),
        ("hf_topo", "Linear"),
        ("hf_topo", "Conv1D"),
        ("pytorch_ops", "Linear"),
        ("pytorch_ops", "Conv1D"),
        ("per_layer", "Linear"),
        ("per_layer", "Conv1D"),
    ),
    "resnet18": (("reference", "Conv2d"), ("hf_topo", "Conv2d"), ("pytorch_ops", "Conv2d"), ("per_layer", "Conv2d")),
}
SPEEDUP_GOAL = 10.0
BOUND_GOAL = 3.0
OPERATOR_GOAL = 300
MEMORY_GOAL_WEIGHTS = 2.0
#: ``--compiled`` adds this case to the gpt2 workload: an experiment, not the library's kernel (see compiled_loss).
COMPILED_CASE = ("compiled", "Conv1D")
#: On CUDA, hf_topo's forward+backward is also captured once in a CUDA graph and replayed (see graphed_pass).
CUDA_GRAPH_CASES: dict[str, tuple[tuple[str, str], ...]] = {
    "gpt2": (("cuda_graph", "Linear"), ("cuda_graph", "Conv1D")),
    "resnet18": (("cuda_graph", "Conv2d"),),
}

#: ResNet-18's residual-block convolutions (torchvision's resnet18): (in, out, kernel) per stage, two blocks of two
#: 3×3 convolutions each, and a 1×1 downsampling convolution in the first block of stages 2–4: 19 layers.
RESNET18_CONVS: tuple[tuple[int, int, int], ...] = tuple(
    conv
    for in_ch, out_ch in ((64, 64), (64, 128), (128, 256), (256, 512))
    for conv in (
        (in_ch, out_ch, 3),
        (out_ch, out_ch, 3),
        *(((in_ch, out_ch, 1),) if in_ch != out_ch else ()),
        (out_ch, out_ch, 3),
        (out_ch, out_ch, 3),
    )
)


def label(impl: str, layer_type: str) -> str:
    if impl == "cuda_graph":
        return f"hf_topo captured in one CUDA graph, replayed ({layer_type})"
    if impl == "compiled":
        return f"experiment: gather blur + torch.compile ({layer_type})"
    if impl == "per_layer":
        return f"hf_topo per-layer kernel, before grouping ({layer_type})"
    if impl == "pytorch_ops":
        return f"hf_topo on PyTorch operators only, {NATIVE_KERNELS_ENV}=0 ({layer_type})"
    return f"reference topoloss 0.0.2 ({layer_type})" if impl == "reference" else f"hf_topo ({layer_type})"


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
    """The workload's layers: GPT-2's ``args.layers`` layers with ``args.units`` outputs and ``args.inputs`` inputs
    (the same weights for any type), or ResNet-18's 19 residual-block convolutions."""
    torch.manual_seed(args.seed)
    if layer_type == "Conv2d":
        convs = [nn.Conv2d(c_in, c_out, k, bias=False) for c_in, c_out, k in RESNET18_CONVS]
        return Stack(convs).to(args.device)
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
    config = TopoConfig(target_modules=names, factor_h=args.factor, factor_w=args.factor)
    ours = PerLayerTopoLoss(config) if impl == "per_layer" else TopoRegularizer(config)
    if impl == "pytorch_ops":
        return lambda: without_native_kernels(lambda: ours(stack))
    return lambda: ours(stack)


def without_native_kernels(compute: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``compute()`` with hf_topo's CPU kernels switched off (the loss's backward follows its forward's choice)."""
    previous = os.environ.get(NATIVE_KERNELS_ENV)
    os.environ[NATIVE_KERNELS_ENV] = "0"
    try:
        return compute()
    finally:
        if previous is None:
            del os.environ[NATIVE_KERNELS_ENV]
        else:
            os.environ[NATIVE_KERNELS_ENV] = previous


class PerLayerTopoLoss(TopoRegularizer):
    """hf_topo's per-layer path (one ``sheet_cosine_loss`` per layer, the kernel before grouping), for comparison."""

    def _laplacian_pyramid_by_geometry(self, model, with_grad):
        return None


def bound_pass(stack: Stack) -> Callable[[], None]:
    """The memory-traffic bound: read every weight once and write its gradient once (a fresh tensor)."""
    weights = [layer.weight for layer in stack.layers]

    def run() -> None:
        for weight in weights:
            weight.grad = weight.detach().mul(2.0)

    return run


def linear_layout_grads(stack: Stack) -> list[torch.Tensor]:
    """Every layer's weight gradient in ``nn.Linear``/``Conv2d`` orientation ``(units, ...)``."""
    return [layer.weight.grad.T if isinstance(layer, Conv1D) else layer.weight.grad for layer in stack.layers]


def check_parity(
    stacks: dict[tuple[str, str], Stack], passes: dict[tuple[str, str], Callable[[], torch.Tensor]]
) -> dict[str, dict[str, float]]:
    """Loss value and gradients of every implementation against the reference's (one forward+backward each)."""
    values, grads = {}, {}
    for case, stack in stacks.items():
        stack.zero_grad(set_to_none=True)
        value = passes[case]()
        values[case], grads[case] = value.item(), linear_layout_grads(stack)
        stack.zero_grad(set_to_none=True)
    reference = next(iter(stacks))
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


BOUND = ("bound", "read weights + write gradients")

#: Rows timed for comparison only (not a path the library runs): one that disagrees with the reference is reported
#: with its errors and left out of the timing instead of stopping the run.
COMPARISON_ONLY = ("per_layer", "compiled")


def backward_pass(loss: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    """One forward+backward of ``loss``; returns the loss value."""

    def run() -> torch.Tensor:
        value = loss()
        value.backward()
        return value

    return run


def graphed_pass(stack: Stack, args: argparse.Namespace) -> Callable[[], torch.Tensor]:
    """hf_topo's forward+backward captured once in a ``torch.cuda.CUDAGraph`` and replayed: the whole call becomes
    one graph launch (what ``torch.compile(mode="reduce-overhead")`` or a training loop captured as a graph gets).
    Three eager passes on a side stream first (the allocator and cuBLAS warm up outside the capture). The gradients
    live in the graph's memory: each replay rewrites them in place and they are set as ``.grad`` again afterwards
    (so a replay allocates nothing, unlike the eager rows, which allocate fresh gradients)."""
    loss = make_loss("hf_topo", stack, args)
    weights = [layer.weight for layer in stack.layers]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            stack.zero_grad(set_to_none=True)
            loss().backward()
    torch.cuda.current_stream().wait_stream(side)
    stack.zero_grad(set_to_none=True)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_value = loss()
        static_value.backward()
    static_grads = [weight.grad for weight in weights]

    def run() -> torch.Tensor:
        graph.replay()
        for weight, grad in zip(weights, static_grads, strict=True):
            weight.grad = grad
        return static_value

    return run


def make_pass(case: tuple[str, str], stack: Stack, args: argparse.Namespace) -> Callable[[], torch.Tensor]:
    """One forward+backward of ``case``'s implementation on ``stack``, returning the loss value."""
    if case[0] == "cuda_graph":
        return graphed_pass(stack, args)
    return backward_pass(make_loss(case[0], stack, args))


def time_all(
    stacks: dict[tuple[str, str], Stack],
    passes: dict[tuple[str, str], Callable[[], torch.Tensor]],
    args: argparse.Namespace,
) -> dict[tuple[str, str], tuple[list[float], list[float]]]:
    """(wall seconds, process CPU seconds) of each forward+backward, ``args.repeats`` per implementation and for the
    bound pass (on the first hf_topo stack's weights), in rotating interleaved rounds."""
    runs: dict[tuple[str, str], Callable[[], object]] = dict(passes)
    bound_stack = stacks[next(case for case in stacks if case[0] == "hf_topo")]
    runs[BOUND] = bound_pass(bound_stack)
    owners = {**stacks, BOUND: bound_stack}
    order = list(runs)
    times: dict[tuple[str, str], tuple[list[float], list[float]]] = {case: ([], []) for case in order}
    for round_index in range(args.warmup + args.repeats):
        shift = round_index % len(order)
        for case in order[shift:] + order[:shift]:
            owners[case].zero_grad(set_to_none=True)
            synchronize(args.device)
            start, start_cpu = time.perf_counter(), time.process_time()
            runs[case]()
            synchronize(args.device)
            if round_index >= args.warmup:
                times[case][0].append(time.perf_counter() - start)
                times[case][1].append(time.process_time() - start_cpu)
    bound_stack.zero_grad(set_to_none=True)
    return times


def count_operators(stack: Stack, run: Callable[[], object], args: argparse.Namespace, table_file=None) -> dict:
    """aten operator calls of one forward+backward under torch.profiler: top level (no aten ancestor) and all."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
    stack.zero_grad(set_to_none=True)
    synchronize(args.device)
    with profile(activities=activities) as prof:
        run()
        synchronize(args.device)
    stack.zero_grad(set_to_none=True)
    top_level = every = 0
    for event in prof.events():
        if not event.name.startswith("aten::"):
            continue
        every += 1
        parent = event.cpu_parent
        while parent is not None and not parent.name.startswith("aten::"):
            parent = parent.cpu_parent
        top_level += parent is None
    kernels = sum(event.count for event in prof.events() if event.device_type.name == "CUDA")
    if table_file is not None:
        sort_by = "self_cuda_time_total" if args.device == "cuda" else "self_cpu_time_total"
        table_file.append(prof.key_averages().table(sort_by=sort_by, row_limit=15, max_name_column_width=50))
    return {"aten_top_level": top_level, "aten_all": every, "device_kernels": kernels}


def gpu_path_operators(workload: str, args: argparse.Namespace) -> dict[str, dict]:
    """Top-level operators of hf_topo's GPU path (stacked dense blur, or the sparse one where it launches fewer),
    run on the CPU with that path forced: the count a GPU's host pays for, measurable without a GPU (the issue's
    stand-in where none is lent). Not timed: CPU time says nothing about a GPU."""
    import hf_topo.regularizers.grouped as grouped

    small = argparse.Namespace(**{**vars(args), "inputs": min(args.inputs, 64), "device": "cpu"})
    counts = {}
    wanted, previous = grouped._dense_blur_wanted, os.environ.get(NATIVE_KERNELS_ENV)
    grouped._dense_blur_wanted = lambda device: True
    os.environ[NATIVE_KERNELS_ENV] = "0"
    try:
        for _, layer_type in WORKLOADS[workload]:
            if layer_type in counts:
                continue
            stack = build_stack(layer_type, small if workload == "gpt2" else args)
            run = make_pass(("hf_topo", layer_type), stack, args)
            run()  # warm: the geometry's blur structures are built on first use
            counts[layer_type] = count_operators(stack, run, small)
    finally:
        grouped._dense_blur_wanted = wanted
        if previous is None:
            del os.environ[NATIVE_KERNELS_ENV]
        else:
            os.environ[NATIVE_KERNELS_ENV] = previous
    return counts


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


def run_workload(workload: str, args: argparse.Namespace, profile_sections: list[str]) -> dict:
    """Parity, timed rounds, operator counts (and memory) of one workload at the current thread count."""
    cases = WORKLOADS[workload] + ((COMPILED_CASE,) if args.compiled and workload == "gpt2" else ())
    if args.device == "cuda":
        cases += CUDA_GRAPH_CASES[workload]
    stacks = {case: build_stack(case[1], args) for case in cases}
    passes, failures, disagreed = {}, {}, {}
    for case, stack in stacks.items():
        try:
            passes[case] = make_pass(case, stack, args)
        except RuntimeError as error:  # a capture the CUDA graph refuses: report it, time the rest
            if case[0] != "cuda_graph":
                raise
            failures[label(*case)] = f"{type(error).__name__}: {error}"
            print(f"{label(*case)} could not be captured, not timed: {failures[label(*case)]}")
    cases = tuple(case for case in cases if case in passes)
    stacks = {case: stacks[case] for case in cases}
    parity = check_parity(stacks, passes)
    for name, check in list(parity.items())[1:]:
        print(
            f"parity {name}: |Δ value| = {check['abs_value_diff']:.1e} (≤ {args.value_tol:g}), "
            f"max grad rel. error = {check['grad_rel_error']:.1e} (≤ {args.grad_rtol:g})"
        )
    failed = [
        case
        for case in cases
        if parity[label(*case)]["abs_value_diff"] > args.value_tol
        or parity[label(*case)]["grad_rel_error"] > args.grad_rtol
    ]
    if any(case[0] not in COMPARISON_ONLY for case in failed):
        sys.exit(f"hf_topo disagrees with the reference for {[label(*case) for case in failed]}; not timing.")
    for case in failed:  # a comparison row (not what the library runs): reported with its errors, not timed
        disagreed[label(*case)] = parity[label(*case)]
        print(f"{label(*case)} disagrees with the reference, not timed (a comparison row, not the library's path)")
    cases = tuple(case for case in cases if case not in failed)
    stacks = {case: stacks[case] for case in cases}
    times = time_all(stacks, passes, args)
    operators = {}
    for case, stack in stacks.items():
        sections: list[str] | None = [] if args.profile else None
        operators[case] = count_operators(stack, passes[case], args, sections)
        if sections:
            profile_sections.append(f"## {workload}, {label(*case)}: {operators[case]}\n{sections[0]}")
    weight_bytes = max(layer.weight.numel() for layer in stacks[cases[0]].layers) * 4
    weights_bytes = sum(layer.weight.numel() for layer in stacks[cases[0]].layers) * 4
    del stacks, passes
    gc.collect()
    reference_ms = statistics.median(times[cases[0]][0]) * 1e3
    bound_ms = statistics.median(times[BOUND][0]) * 1e3
    bound_cpu_ms = statistics.median(times[BOUND][1]) * 1e3
    rows = []
    for case in cases:
        ms, cpu_ms = (statistics.median(t) * 1e3 for t in times[case])
        measure = args.memory and workload == "gpt2" and case[0] in ("reference", "hf_topo", "pytorch_ops")
        memory = measure_memory(*case, args) if measure else None
        rows.append(
            {
                "implementation": label(*case),
                "layer_type": case[1],
                "ms_median": ms,
                "cpu_ms_median": cpu_ms,
                "ms_all": [t * 1e3 for t in times[case][0]],
                "speedup": reference_ms / ms,
                "bound_multiple": ms / bound_ms,
                "cpu_bound_multiple": cpu_ms / bound_cpu_ms,
                **parity[label(*case)],
                **operators[case],
                "peak_extra_bytes": None if memory is None else memory["extra_bytes"],
                "peak_extra_mib": None if memory is None else memory["extra_bytes"] / 2**20,
                "peak_extra_weights": None if memory is None else memory["extra_bytes"] / weight_bytes,
                "memory_method": None if memory is None else memory["method"],
            }
        )
    ours = [row for row in rows if row["implementation"].startswith("hf_topo (")]  # the library, grouped
    return {
        "layers": len(RESNET18_CONVS) if workload == "resnet18" else args.layers,
        "weights_mib": weights_bytes / 2**20,
        "largest_weight_mib": weight_bytes / 2**20,
        "bound_ms_median": bound_ms,
        "bound_cpu_ms_median": bound_cpu_ms,
        "bound_ms_all": [t * 1e3 for t in times[BOUND][0]],
        "rows": rows,
        "not_captured": failures,
        "disagreed_not_timed": disagreed,
        "gpu_path_operators_on_cpu": gpu_path_operators(workload, args) if args.device == "cpu" else None,
        "goals": {
            "speedup_met": all(row["speedup"] >= SPEEDUP_GOAL for row in ours),
            "bound_met": all(row["bound_multiple"] <= BOUND_GOAL for row in ours),
            "operators_met": all(row["aten_top_level"] <= OPERATOR_GOAL for row in ours)
            if workload == "gpt2"
            else None,
            "memory_met": None
            if not (args.memory and workload == "gpt2")
            else all(row["peak_extra_weights"] <= MEMORY_GOAL_WEIGHTS for row in ours),
        },
    }


def print_table(workload: str, result: dict, threads: int, repeats: int) -> None:
    print(
        f"\n{workload}: {result['layers']} layers, {result['weights_mib']:.1f} MiB of float32 weights, "
        f"{threads} torch thread(s); bound (read weights + write gradients) {result['bound_ms_median']:.1f} ms"
    )
    print(
        f"| implementation | ms (median of {repeats}) | CPU ms | speed-up | × bound | aten ops (top level / all) "
        "| |Δ value| | max grad rel. error | peak extra memory |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in result["rows"]:
        memory = "n/a" if row["peak_extra_mib"] is None else f"{row['peak_extra_mib']:.1f} MiB"
        print(
            f"| {row['implementation']} | {row['ms_median']:.1f} | {row['cpu_ms_median']:.1f} | {row['speedup']:.2f}× "
            f"| {row['bound_multiple']:.1f}× | {row['aten_top_level']} / {row['aten_all']} "
            f"| {row['abs_value_diff']:.1e} | {row['grad_rel_error']:.1e} | {memory} |"
        )
    print(f"goals: {result['goals']}")
    for layer_type, counts in (result["gpu_path_operators_on_cpu"] or {}).items():
        print(f"GPU path of hf_topo ({layer_type}), run on the CPU: {counts['aten_top_level']} top-level operators")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--layers", type=int, default=12, help="number of GPT-2 target layers (GPT-2-124M: 12)")
    parser.add_argument("--units", type=int, default=3072, help="output units per layer (GPT-2 c_fc: 3072)")
    parser.add_argument("--inputs", type=int, default=768, help="inputs per unit, the sheet depth (GPT-2: 768)")
    parser.add_argument("--factor", type=float, default=3.0, help="blur downsampling factor φh = φw")
    parser.add_argument("--repeats", type=int, default=10, help="timed passes per implementation")
    parser.add_argument("--warmup", type=int, default=2, help="untimed passes per implementation first")
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=None,
        help="torch.set_num_threads settings, run in turn (default: torch's default, then 1)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--value_tol", type=float, default=1e-6, help="largest |Δ loss| accepted vs the reference")
    parser.add_argument("--grad_rtol", type=float, default=1e-4, help="largest max|Δgrad| / max|grad| accepted")
    parser.add_argument("--memory", action="store_true", help="also measure peak extra memory (GPT-2 workload)")
    parser.add_argument("--output", default=default_output(__file__), help="results JSON")
    parser.add_argument(
        "--compiled",
        action="store_true",
        help="also time an experiment: the blur as a gather in plain PyTorch under torch.compile (see compiled_loss)",
    )
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="also write the operator table (top operators by self time) of each implementation's profiled pass here",
    )
    parser.add_argument("--memory_child", nargs=2, metavar=("IMPL", "LAYER_TYPE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible to torch.")
    return args


def main() -> None:
    args = parse_args()
    if args.memory_child:
        if args.threads:
            torch.set_num_threads(args.threads[0])
        memory_child(*args.memory_child, args)
        return
    # On a GPU the host threads only launch kernels: one setting (torch's default) unless --threads says otherwise.
    thread_settings = args.threads or (
        [torch.get_num_threads()] if args.device == "cuda" else [torch.get_num_threads(), 1]
    )
    runs, profile_sections = [], []
    for threads in thread_settings:
        torch.set_num_threads(threads)
        load_before = os.getloadavg()
        print(f"=== {threads} torch thread(s); load average {load_before}")
        workloads = {name: run_workload(name, args, profile_sections) for name in args.workloads}
        for name, result in workloads.items():
            print_table(name, result, threads, args.repeats)
        runs.append(
            {
                "threads": threads,
                "loadavg_before": load_before,
                "loadavg_after": os.getloadavg(),
                "workloads": workloads,
            }
        )
    if args.profile:
        with open(args.profile, "w", encoding="utf-8") as handle:
            handle.write("\n\n".join(profile_sections) + "\n")
        print(f"profile written to {args.profile}")
    results = {
        "benchmark": "TopoLoss forward+backward, hf_topo vs topoloss 0.0.2, GPT-2-124M c_fc and ResNet-18 convs",
        "device_info": device_info(args.device),
        # "loaded", or why the "hf_topo" rows ran on PyTorch operators (hf_topo.regularizers.native)
        "native_kernels": native_kernels_status() if args.device == "cpu" else "not used on " + args.device,
        "config": {k: v for k, v in vars(args).items() if k not in ("memory_child", "output")},
        "goals": {
            "speedup_min": SPEEDUP_GOAL,
            "bound_multiple_max": BOUND_GOAL,
            "aten_top_level_max_gpt2": OPERATOR_GOAL,
            "memory_max_weights": MEMORY_GOAL_WEIGHTS,
        },
        "runs": runs,
    }
    write_json(args.output, results)


if __name__ == "__main__":
    main()
