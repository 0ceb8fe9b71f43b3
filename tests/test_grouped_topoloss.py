"""TopoLoss computed per sheet geometry (hf_topo.regularizers.grouped) against the per-layer kernel and the reference
``topoloss`` 0.0.2: values and gradients for Linear, GPT-2 Conv1D and Conv2d sheets, mixed geometries, watched
layers, the bias map, LoRA, and capture by ``torch.compile(fullgraph=True)``. Every test runs three times: on hf_topo's
CPU kernels (``hf_topo.regularizers.native``, built here on first use), on PyTorch operators alone
(``HF_TOPO_NATIVE_KERNELS=0``: the sparse ``embedding_bag`` path), and on the dense path that GPUs take (stacked
sheets, separable blur products), switched on for the CPU here."""

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model
from topoloss import LaplacianPyramid
from topoloss import TopoLoss as ReferenceTopoLoss
from topoloss.losses.laplacian_pyramid import laplacian_pyramid_loss as reference_loss
from torch import nn
from transformers.pytorch_utils import Conv1D

from hf_topo import TopoConfig, TopoRegularizer
from hf_topo.regularizers import grouped as grouped_module
from hf_topo.regularizers.grouped import grouped_blur, grouped_sheet_cosine_losses, grouped_weight_losses
from hf_topo.regularizers.laplacian_pyramid import sheet_cosine_loss
from hf_topo.regularizers.native import NATIVE_KERNELS_ENV, native_kernels_available, native_kernels_status

GRAD_TOL = 2e-5  # gradient error relative to max |grad|: float32 rounding of two computation orders
VALUE_TOL = 1e-6


@pytest.fixture(autouse=True, params=["native", "pytorch", "dense"])
def kernel_path(request, monkeypatch):
    """The grouped loss on hf_topo's CPU kernels, on PyTorch operators only, then on the GPUs' dense path."""
    if request.param == "native":
        monkeypatch.delenv(NATIVE_KERNELS_ENV, raising=False)
        # No skip: a machine that runs the tests builds the kernels (a C++ compiler and ninja, see the README).
        assert native_kernels_available(), native_kernels_status()
    else:
        monkeypatch.setenv(NATIVE_KERNELS_ENV, "0")
        assert not native_kernels_available()
    if request.param == "dense":
        monkeypatch.setattr(grouped_module, "_dense_blur_wanted", lambda device: True)
    return request.param


def _per_layer_path(monkeypatch):
    """Make TopoRegularizer.compute take its per-layer loop (the path before grouping)."""
    monkeypatch.setattr(TopoRegularizer, "_laplacian_pyramid_by_geometry", lambda self, model, with_grad: None)


def _values_and_grads(topo, model, names):
    model.zero_grad(set_to_none=True)
    mean, per_layer = topo.compute(model)
    mean.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return mean.item(), {n: v.item() for n, v in per_layer.items()}, grads


@pytest.mark.parametrize(
    "height, width, depth, factor_h, factor_w, mode",
    [
        (8, 16, 12, 3, 3, "bilinear"),  # the paper's blur: a selection then a 4-entry upsampling
        (10, 12, 9, 2.5, 1.7, "bilinear"),  # non-integer factors: the downsampling mixes rows too
        (12, 12, 7, 2, 2, "nearest"),
        (9, 12, 5, 3, 3, "area"),
        (12, 16, 6, 3, 3, "bicubic"),
        (1, 13, 6, 1, 2, "bilinear"),  # a 1 × 13 sheet (prime unit count), blurred along its width only
    ],
)
@pytest.mark.parametrize("units_first", [True, False])
def test_grouped_equals_the_per_layer_kernel(height, width, depth, factor_h, factor_w, mode, units_first, rel_err):
    torch.manual_seed(0)
    shape = (height, width, depth) if units_first else (depth, height, width)
    sheets = [torch.randn(shape, requires_grad=True) for _ in range(3)]
    blur = grouped_blur(height, width, factor_h, factor_w, mode)
    assert blur is not None
    values = grouped_sheet_cosine_losses(sheets, units_first, blur)
    (values * torch.tensor([1.0, -2.0, 0.5])).sum().backward()  # distinct upstream gradients per layer
    for sheet, value, weight in zip(sheets, values, (1.0, -2.0, 0.5), strict=True):
        copy_ = sheet.detach().clone().requires_grad_(True)
        expected = sheet_cosine_loss(copy_, units_first, factor_h, factor_w, mode)
        (weight * expected).backward()
        assert value.item() == pytest.approx(expected.item(), abs=VALUE_TOL)
        assert rel_err(sheet.grad, copy_.grad) < GRAD_TOL


def test_grouped_equals_the_reference_on_each_sheet(rel_err):
    """12 sheets of GPT-2-like geometry (shrunk depth), against ``topoloss``'s own function per sheet."""
    torch.manual_seed(1)
    sheets = [torch.randn(48, 64, 24, requires_grad=True) for _ in range(4)]
    values = grouped_sheet_cosine_losses(sheets, True, grouped_blur(48, 64))
    values.mean().backward()
    copies = [s.detach().clone().requires_grad_(True) for s in sheets]
    expected = torch.stack([reference_loss(c, factor_h=3, factor_w=3) for c in copies])
    expected.mean().backward()
    assert torch.allclose(values, expected, atol=VALUE_TOL, rtol=0)
    for sheet, copy_ in zip(sheets, copies, strict=True):
        assert rel_err(sheet.grad, copy_.grad) < GRAD_TOL


@pytest.mark.parametrize("units_first", [True, False])
def test_mixed_depths_in_any_order_and_in_chunks(units_first, kernel_path, monkeypatch, rel_err):
    """Sheets of one geometry and three depths, not sorted by depth, stacked two at a time on the dense path:
    values, gradients and the sheets themselves (read, never written) as the per-layer kernel has them."""
    torch.manual_seed(3)
    depths = [7, 3, 7, 11, 3, 7]
    shapes = [(6, 10, depth) if units_first else (depth, 6, 10) for depth in depths]
    sheets = [torch.randn(shape, requires_grad=True) for shape in shapes]
    originals = [sheet.detach().clone() for sheet in sheets]
    # Two 6×10×7 float32 sheets per stack: the run of 7-deep sheets is split in two.
    monkeypatch.setattr(grouped_module, "_DENSE_CHUNK_BYTES", 2 * 60 * 7 * 4)
    if kernel_path == "dense":  # four stacks for six sheets: the dense path is forced (it would choose sparse)
        assert grouped_module._blur_path(sheets, grouped_blur(6, 10), units_first) == "sparse"
        monkeypatch.setattr(grouped_module, "_blur_path", lambda sheets, blur, units_first: "dense")
    blur = grouped_blur(6, 10)
    weights = torch.linspace(-1.0, 2.0, len(sheets))
    values = grouped_sheet_cosine_losses(sheets, units_first, blur)
    (values * weights).sum().backward()
    if kernel_path == "dense":
        order = grouped_module._depth_order(sheets, blur.units)
        assert order == [0, 2, 5, 1, 4, 3]
        chunks = grouped_module._dense_chunks([sheets[index] for index in order], blur.units)
        assert chunks == [(0, 2), (2, 3), (3, 5), (5, 6)]  # 7-deep: two, then one; 3-deep: both; 11-deep
    for sheet, original, value, weight in zip(sheets, originals, values, weights, strict=True):
        assert torch.equal(sheet.detach(), original)
        copy_ = original.clone().requires_grad_(True)
        expected = sheet_cosine_loss(copy_, units_first, 3.0, 3.0, "bilinear")
        (weight * expected).backward()
        assert value.item() == pytest.approx(expected.item(), abs=VALUE_TOL)
        assert rel_err(sheet.grad, copy_.grad) < GRAD_TOL


def test_grad_only_for_sheets_that_need_it():
    torch.manual_seed(2)
    trained = torch.randn(8, 16, 4, requires_grad=True)
    frozen = torch.randn(8, 16, 4)
    values = grouped_sheet_cosine_losses([trained, frozen], True, grouped_blur(8, 16))
    values.sum().backward()
    assert trained.grad is not None and frozen.grad is None
    assert values[1].item() == pytest.approx(sheet_cosine_loss(frozen, True).item(), abs=VALUE_TOL)


def test_bf16_sheets_match_float32():
    torch.manual_seed(3)
    sheet = torch.randn(16, 8, 24).bfloat16().requires_grad_(True)  # Conv1D layout (depth, h, w)
    value = grouped_sheet_cosine_losses([sheet], False, grouped_blur(8, 24))
    value.sum().backward()
    assert sheet.grad.dtype == torch.bfloat16
    float_sheet = sheet.detach().float().requires_grad_(True)
    expected = sheet_cosine_loss(float_sheet, False)
    expected.backward()
    assert value.item() == pytest.approx(expected.item(), abs=1e-6)
    assert torch.allclose(sheet.grad.float(), float_sheet.grad, rtol=1e-2, atol=1e-2 * float_sheet.grad.abs().max())


def test_bad_groups_are_refused():
    blur = grouped_blur(8, 16)
    with pytest.raises(ValueError, match="one height × width"):
        grouped_sheet_cosine_losses([torch.randn(8, 16, 4), torch.randn(16, 8, 4)], True, blur)
    with pytest.raises(ValueError, match=r"The sheets are 8 × 8 but the blur was built for a 8 × 16 sheet"):
        grouped_sheet_cosine_losses([torch.randn(8, 8, 4)], True, blur)
    # The same number of units in another geometry (the transpose) is another blur, not the same loss.
    with pytest.raises(ValueError, match=r"The sheets are 16 × 8 .* grouped_blur\(16, 8\)"):
        grouped_sheet_cosine_losses([torch.randn(16, 8, 4)], True, blur)
    with pytest.raises(ValueError, match="at least one"):
        grouped_sheet_cosine_losses([], True, blur)
    with pytest.raises(ValueError, match=r"shape \(100, 4\) is not a sheet of 128 units \(8 × 16\)"):
        grouped_weight_losses([torch.randn(128, 4), torch.randn(100, 4)], True, blur)
    with pytest.raises(ValueError, match="at least one"):
        grouped_weight_losses([], True, blur)


@pytest.mark.parametrize("units_first", [True, False])
def test_weights_as_stored_equal_their_sheets(units_first, kernel_path, rel_err):
    # grouped_weight_losses reads weights as stored (2-D matrices and a Conv2d-shaped weight, depths 12 and 12 and
    # 3 * 2 * 2): the same losses and gradients as their 3-D sheet views, each gradient of its weight's shape.
    torch.manual_seed(21)
    blur = grouped_blur(8, 16)
    if units_first:
        weights = [torch.randn(128, 12), torch.randn(128, 12), torch.randn(128, 3, 2, 2)]
        sheets_of = [lambda w: w.reshape(8, 16, -1)] * 3
    else:
        weights = [torch.randn(12, 128), torch.randn(12, 128), torch.randn(5, 128)]
        sheets_of = [lambda w: w.reshape(-1, 8, 16)] * 3
    weights = [w.requires_grad_(True) for w in weights]
    copies = [w.detach().clone().requires_grad_(True) for w in weights]
    values = grouped_weight_losses(weights, units_first, blur)
    expected = grouped_sheet_cosine_losses(
        [view(c) for view, c in zip(sheets_of, copies, strict=True)], units_first, blur
    )
    assert torch.allclose(values, expected, atol=VALUE_TOL, rtol=0)
    (values * torch.tensor([1.0, -2.0, 0.5])).sum().backward()
    (expected * torch.tensor([1.0, -2.0, 0.5])).sum().backward()
    for weight, copy_ in zip(weights, copies, strict=True):
        assert weight.grad.shape == weight.shape
        assert rel_err(weight.grad, copy_.grad) < GRAD_TOL


def test_wide_blur_rows_have_no_grouped_operator():
    assert grouped_blur(16, 24, 8.0, 8.0, "area") is None  # computed per layer by the dense kernel instead


class _Mixed(nn.Module):
    """Two geometries of Linear, a GPT-2 Conv1D of the first geometry, two Conv2d of one geometry."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(4)
        self.a = nn.Linear(10, 96)  # 8 × 12 × 10
        self.b = nn.Linear(10, 96)
        self.c = nn.Linear(10, 60)  # 6 × 10 × 10
        self.d = Conv1D(96, 10)  # 8 × 12 × 10, Conv1D layout
        nn.init.normal_(self.d.bias)  # transformers initializes it to zeros: a flat bias map has no gradient
        self.e = nn.Conv2d(3, 36, 3)  # 6 × 6 × 27
        self.f = nn.Conv2d(3, 36, 1)  # 6 × 6 × 3: same sheet, other depth (a ResNet's 1×1 downsampling)
        self.g = nn.Linear(10, 96)  # watched


NAMES = ["a", "b", "c", "d", "e", "f"]


@pytest.mark.parametrize("include_bias", [False, True])
def test_mixed_model_grouped_equals_per_layer(monkeypatch, include_bias, rel_err):
    model = _Mixed()
    names = ["a", "b", "c", "d"] if include_bias else NAMES  # the bias map: Linear and Conv1D layers only
    topo = TopoRegularizer(TopoConfig(target_modules=names, watch_modules=["g"], include_bias=include_bias))
    grouped = _values_and_grads(topo, model, names)
    _per_layer_path(monkeypatch)
    per_layer = _values_and_grads(topo, model, names)
    assert grouped[0] == pytest.approx(per_layer[0], abs=VALUE_TOL)
    assert list(grouped[1]) == list(per_layer[1]) == names + ["g"]
    for name in grouped[1]:
        assert grouped[1][name] == pytest.approx(per_layer[1][name], abs=VALUE_TOL)
    assert set(grouped[2]) == set(per_layer[2])
    assert "g.weight" not in grouped[2] and "g.bias" not in grouped[2]  # watched: no gradient
    assert ("a.bias" in grouped[2]) == include_bias
    for name, grad in grouped[2].items():
        assert rel_err(grad, per_layer[2][name]) < GRAD_TOL, name


def test_mixed_model_equals_the_reference(rel_err):
    """Linear and Conv2d layers of the mixed model against ``topoloss``'s TopoLoss (Conv1D: its transposed Linear)."""
    model = _Mixed()
    linear_d = nn.Linear(10, 96)
    with torch.no_grad():
        linear_d.weight.copy_(model.d.weight.T)
    reference_model = copy.deepcopy(model)
    reference_model.d = linear_d
    reference = ReferenceTopoLoss([LaplacianPyramid(name, factor_h=3, factor_w=3) for name in NAMES])
    value = reference.compute(reference_model)
    value.backward()
    ours, _, grads = _values_and_grads(TopoRegularizer(TopoConfig(target_modules=NAMES)), model, NAMES)
    assert ours == pytest.approx(value.item(), abs=VALUE_TOL)
    for name in NAMES:
        reference_grad = reference_model.get_submodule(name).weight.grad
        grad = grads[f"{name}.weight"]
        assert rel_err(grad.T if name == "d" else grad, reference_grad) < GRAD_TOL, name


def test_lora_layers_grouped_equal_per_layer(monkeypatch, tiny_gpt2, rel_err):
    peft_model = get_peft_model(
        copy.deepcopy(tiny_gpt2), LoraConfig(r=2, lora_alpha=4, target_modules=["c_fc"], fan_in_fan_out=True)
    )
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:
            nn.init.normal_(param, std=0.5)
    topo = TopoRegularizer(target_modules=["mlp.c_fc"])
    grouped = _values_and_grads(topo, peft_model, None)
    _per_layer_path(monkeypatch)
    per_layer = _values_and_grads(topo, peft_model, None)
    assert grouped[0] == pytest.approx(per_layer[0], abs=VALUE_TOL)
    assert grouped[2] and set(grouped[2]) == set(per_layer[2])
    assert all("lora_" in name for name in grouped[2])  # the frozen base weights get none
    for name, grad in grouped[2].items():
        assert rel_err(grad, per_layer[2][name]) < GRAD_TOL, name


def test_compute_without_grad_is_detached(tiny_gpt2):
    topo = TopoRegularizer(target_modules=["mlp.c_fc"])
    mean, per_layer = topo.compute(tiny_gpt2, with_grad=False)
    assert not mean.requires_grad and not any(v.requires_grad for v in per_layer.values())
    with torch.no_grad():
        assert topo.compute(tiny_gpt2)[0].item() == pytest.approx(mean.item(), abs=0)


def test_one_autograd_node_per_geometry():
    model = _Mixed()
    mean, _ = TopoRegularizer(TopoConfig(target_modules=NAMES)).compute(model)
    nodes, stack = set(), [mean.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in nodes:
            continue
        nodes.add(node)
        stack.extend(next_node for next_node, _ in node.next_functions)
    kernels = [node for node in nodes if "GroupedSheetCosineLoss" in type(node).__name__]
    assert len(kernels) == 4  # 8×12 Linear (a, b), 6×10 (c), 8×12 Conv1D (d: layouts group apart), 6×6 (e, f)
    assert len(grouped_module._CACHE) >= 3


@pytest.mark.parametrize("units_first", [True, False])
def test_capturable_by_torch_compile_without_graph_breaks(units_first, kernel_path, rel_err):
    torch.manual_seed(5)
    blur = grouped_blur(8, 12)
    weights = [torch.randn((96, 10) if units_first else (10, 96), requires_grad=True) for _ in range(3)]
    shape = (8, 12, 10) if units_first else (10, 8, 12)

    def loss(a, b, c):
        return grouped_sheet_cosine_losses([w.view(shape) for w in (a, b, c)], units_first, blur).mean()

    graphs = []

    def recording_backend(graph_module, example_inputs):
        graphs.append(graph_module.print_readable(print_output=False))
        return graph_module.forward

    compiled = torch.compile(loss, fullgraph=True, backend=recording_backend)  # fullgraph: a graph break raises
    value = compiled(*weights)
    value.backward()
    # The traced graph (forward and backward) runs the native operators exactly when the eager call does.
    assert len(graphs) == 1
    for operator in ("hf_topo.sheet_cosine_forward", "hf_topo.sheet_cosine_backward"):
        assert (operator in graphs[0]) == (kernel_path == "native"), operator
    copies = [w.detach().clone().requires_grad_(True) for w in weights]
    expected = loss(*copies)
    expected.backward()
    assert value.item() == pytest.approx(expected.item(), abs=VALUE_TOL)
    for weight, copy_ in zip(weights, copies, strict=True):
        assert rel_err(weight.grad, copy_.grad) < GRAD_TOL
