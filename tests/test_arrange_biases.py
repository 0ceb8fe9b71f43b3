"""arrange_units moves the biases of the expansion layers with their units, in every family.

The models of the other arrangement tests keep transformers' initial biases, which are all zero: a bias that stayed
where it was would leave their logits unchanged. Here every bias of the MLP is drawn at random first, so the logits
check sees it, and each bias is compared entry by entry with the original permuted by the reported permutation.
"""

import pytest
import torch
from conftest import build_causal_lm, build_gpt2

from hf_topo import arrange_units

# family → (builder, expansion layers permuted together (the target first), contraction layer)
FAMILIES = {
    "gpt2": (lambda: build_gpt2(), ("mlp.c_fc",), "mlp.c_proj"),
    "gpt_neo": (lambda: build_causal_lm("gpt_neo"), ("mlp.c_fc",), "mlp.c_proj"),
    "gpt_neox": (lambda: build_causal_lm("gpt_neox"), ("mlp.dense_h_to_4h",), "mlp.dense_4h_to_h"),
    # Llama's MLP has no biases unless mlp_bias=True; with it, up_proj, gate_proj and down_proj all carry one.
    "llama": (lambda: build_causal_lm("llama", mlp_bias=True), ("mlp.up_proj", "mlp.gate_proj"), "mlp.down_proj"),
}
IDS = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(7))


def _randomize_mlp_biases(model, layers: tuple[str, ...]) -> None:
    generator = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.endswith(layers):
                assert module.bias is not None, f"{name} has no bias: the test would check nothing"
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_the_expansion_biases_move_with_their_units_and_the_logits_stay(family):
    build, expansion, contraction = FAMILIES[family]
    model, original = build().eval(), build().eval()
    for m in (model, original):  # the same random biases in both
        _randomize_mlp_biases(m, (*expansion, contraction))
    with torch.no_grad():
        logits = original(input_ids=IDS).logits

    report = arrange_units(model, objective="topoloss", max_rounds=5, progress=False)

    assert len(report.layers) == 2
    for name, layer in report.layers.items():
        prefix = name[: -len(expansion[0])]
        perm = layer.permutation
        assert not torch.equal(perm, torch.arange(perm.numel())), "the arrangement moved no unit: nothing checked"
        for suffix in expansion:
            moved, before = model.get_submodule(prefix + suffix).bias, original.get_submodule(prefix + suffix).bias
            assert before.abs().min() > 0  # random, not zero
            assert torch.equal(moved, before[perm]), f"{prefix + suffix}: bias not permuted with the units"
        # the contraction layer's bias belongs to its outputs (the residual stream), which do not move
        assert torch.equal(
            model.get_submodule(prefix + contraction).bias, original.get_submodule(prefix + contraction).bias
        )
    with torch.no_grad():
        error = (model(input_ids=IDS).logits - logits).abs().max().item()
    assert error <= 1e-5 * max(1.0, logits.abs().max().item())
