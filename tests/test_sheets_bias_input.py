"""The input and bias sheets of TopoLoss: value and gradient parity with the reference `topoloss` 0.0.2's
`LaplacianPyramidOnInput` and `LaplacianPyramidOnBias` (Linear, and GPT-2's Conv1D through the equivalent Linear),
in the trainer, in the saved metadata (read back in a fresh process) and on the card."""

import json
import subprocess
import sys

import pytest
import torch
from _scripts import offline_env
from _training import training_args
from topoloss import LaplacianPyramid, LaplacianPyramidOnBias, LaplacianPyramidOnInput
from topoloss import TopoLoss as ReferenceTopoLoss
from torch import nn

from hf_topo import TopoConfig, TopoRegularizer, TopoTrainer, as_cortical_sheet, bias_map_loss
from hf_topo.hub.card import toponet_card

FACTORS = {"factor_h": 2.0, "factor_w": 3.0}  # unequal, so that a swap of the two would show


class _TwoLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(48, 60)  # input sheet 6×8 (depth 60), output sheet 6×10
        self.fc2 = nn.Linear(60, 42)  # input sheet 6×10 (depth 42), output sheet 6×7

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def _reference(model, entry_classes, names=("fc1", "fc2")):
    """The reference's value, averaged over its entry classes. Its TopoLoss keys per-layer values by layer name (a
    second entry of the same layer replaces the first), so each class is evaluated on its own."""
    values = [ReferenceTopoLoss([cls(layer_name=n, **FACTORS) for n in names]).compute(model) for cls in entry_classes]
    return sum(values) / len(values)


def _grads(model):
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(
    "settings, entry_classes",
    [
        ({"sheet": "input"}, [LaplacianPyramidOnInput]),
        ({"include_bias": True}, [LaplacianPyramid, LaplacianPyramidOnBias]),
    ],
)
def test_linear_sheets_match_topoloss_in_value_and_gradient(settings, entry_classes):
    torch.manual_seed(0)
    model = _TwoLayers()
    nn.init.normal_(model.fc1.bias)  # a bias that is not all zeros: its map has a direction
    nn.init.normal_(model.fc2.bias)
    reference = _reference(model, entry_classes)
    reference.backward()
    expected = _grads(model)
    model.zero_grad()
    ours = TopoRegularizer(TopoConfig(target_modules=["fc1", "fc2"], **FACTORS, **settings))(model)
    ours.backward()
    assert ours.item() == pytest.approx(reference.item(), abs=1e-6)
    got = _grads(model)
    assert set(got) == set(expected) == (
        {"fc1.weight", "fc2.weight", "fc1.bias", "fc2.bias"} if settings.get("include_bias") else {"fc1.weight", "fc2.weight"}
    )  # fmt: skip
    for name, grad in expected.items():
        assert torch.allclose(got[name], grad, atol=1e-7, rtol=1e-4), name


@pytest.mark.parametrize(
    "settings, entry_classes",
    [
        ({"sheet": "input"}, [LaplacianPyramidOnInput]),
        ({"include_bias": True}, [LaplacianPyramid, LaplacianPyramidOnBias]),
    ],
)
def test_conv1d_sheets_match_topoloss_on_the_equivalent_linear(make_gpt2, settings, entry_classes):
    gpt2 = make_gpt2(n_embd=36)  # c_fc: Conv1D 36 → 144, c_proj: Conv1D 144 → 36
    for block in gpt2.transformer.h:
        nn.init.normal_(block.mlp.c_fc.bias)
    conv = gpt2.transformer.h[0].mlp.c_fc
    linear = nn.Linear(36, 144)
    with torch.no_grad():
        linear.weight.copy_(conv.weight.T)  # Conv1D stores (in, out), Linear (out, in)
        linear.bias.copy_(conv.bias)
    holder = nn.Module()
    holder.fc = linear
    reference = _reference(holder, entry_classes, names=("fc",))
    reference.backward()
    ours = TopoRegularizer(TopoConfig(target_modules=[r"h.0.mlp.c_fc"], **FACTORS, **settings))(gpt2)
    ours.backward()
    assert ours.item() == pytest.approx(reference.item(), abs=1e-6)
    assert torch.allclose(conv.weight.grad, linear.weight.grad.T, atol=1e-7, rtol=1e-4)
    if settings.get("include_bias"):
        assert torch.allclose(conv.bias.grad, linear.bias.grad, atol=1e-7, rtol=1e-4)


def test_input_sheet_layout_and_bias_map_function(make_gpt2):
    gpt2 = make_gpt2()  # n_embd 32: c_fc Conv1D 32 → 128
    topo = TopoRegularizer(TopoConfig(target_modules=["mlp.c_fc"], sheet="input", factor_h=2, factor_w=2))
    sheet = topo.layers(gpt2)[0].sheet
    assert (sheet.shape, sheet.units) == ((4, 8, 128), "input")
    conv = gpt2.transformer.h[0].mlp.c_fc
    # input unit i of the Conv1D is row i of its (in, out) weight: at (i // 8, i % 8), holding its 128 weights
    assert torch.equal(as_cortical_sheet(conv, units="input")[1, 3], conv.weight[1 * 8 + 3])
    smooth = torch.ones(6, 9)
    assert bias_map_loss(smooth, **FACTORS).item() == pytest.approx(0.0, abs=1e-6)
    checker = torch.tensor([[(-1.0) ** (i + j) for j in range(9)] for i in range(6)])
    assert bias_map_loss(checker, **FACTORS).item() > 0.5


def test_bad_settings_fail_clearly(tiny_llama):
    with pytest.raises(ValueError, match=r"sheet='inputs' is not supported; choose one of \('output', 'input'\)"):
        TopoConfig(sheet="inputs")
    with pytest.raises(ValueError, match=r"include_bias=True .* does not apply to loss='weight_similarity'"):
        TopoConfig(loss="weight_similarity", include_bias=True)
    with pytest.raises(ValueError, match=r"does not apply to loss='laplacian_pyramid' with sheet='input'"):
        TopoConfig(sheet="input", include_bias=True)
    with pytest.raises(
        ValueError, match=r"'model.layers.0.mlp.up_proj' .*include_bias=True, but the layer has no bias"
    ):
        TopoRegularizer(TopoConfig(target_modules=["mlp.up_proj"], include_bias=True, factor_h=2, factor_w=2)).layers(
            tiny_llama
        )
    conv = nn.Module()
    conv.conv = nn.Conv2d(3, 16, 3)
    with pytest.raises(ValueError, match=r"an input sheet is defined for Linear and Conv1D layers only"):
        TopoRegularizer(TopoConfig(target_modules=["conv"], sheet="input", factor_h=1, factor_w=1)).layers(conv)


@pytest.mark.slow
@pytest.mark.parametrize("settings", [{"topo_sheet": "input"}, {"topo_include_bias": True}])
def test_trainer_logs_saves_and_a_fresh_process_reads_the_setup(tmp_path, make_gpt2, token_dataset, settings):
    args = training_args(tmp_path, max_steps=2, topo_factor_h=2.0, topo_factor_w=2.0, **settings)
    trainer = TopoTrainer(model=make_gpt2(), args=args, train_dataset=token_dataset(32))
    trainer.train()
    trainer.save_model()
    logged = [h for h in trainer.state.log_history if "topo_loss" in h]
    assert len(logged) == 2 and {"topo_loss/h.0.mlp.c_fc", "topo_loss/h.1.mlp.c_fc"} <= set(logged[0])
    read = subprocess.run(
        [sys.executable, "-c", "import json, sys; from transformers import AutoModelForCausalLM; "
         "from hf_topo import TopoConfig, TopoRegularizer; m = AutoModelForCausalLM.from_pretrained(sys.argv[1]); "
         "c = TopoConfig.from_pretrained(m); print(json.dumps([c.to_dict(), TopoRegularizer(c)(m).item()]))", str(tmp_path)],
        env=offline_env(), capture_output=True, text=True, check=True,
    )  # fmt: skip
    record, value = json.loads(read.stdout)
    expected_units = "input" if "topo_sheet" in settings else "output"
    assert (record["sheet"], record["include_bias"]) == (expected_units, "topo_include_bias" in settings)
    assert record["layers"]["transformer.h.1.mlp.c_fc"]["units"] == expected_units
    assert value == pytest.approx(trainer.topo_loss(trainer.model).item(), abs=1e-6)  # the same loss, reloaded
    card = str(toponet_card(trainer.model.config))
    assert ("units on the sheet" in card) == ("topo_sheet" in settings)
    assert ("bias map" in card) == ("topo_include_bias" in settings)
