"""Finding topographic layers (hf_topo.targets): PEFT target_modules semantics on GPT-2, GPT-NeoX, Llama and PEFT models."""

import copy

import pytest
from peft import LoraConfig, get_peft_model
from topoloss import LaplacianPyramid
from topoloss import TopoLoss as ReferenceTopoLoss
from transformers import (
    AutoModelForCausalLM,
    GPTNeoConfig,
    MistralConfig,
    Qwen2Config,
)

from hf_topo import TARGET_PRESETS, TopoConfig, TopoRegularizer, find_target_modules
from hf_topo.targets import base_model_name, candidate_layer_names, matches_pattern


def test_suffix_matching(tiny_gpt2):
    assert list(find_target_modules(tiny_gpt2, ["mlp.c_fc"])) == [
        "transformer.h.0.mlp.c_fc",
        "transformer.h.1.mlp.c_fc",
    ]
    # A suffix matches whole name components only: "c_fc" matches, "fc" does not.
    assert list(find_target_modules(tiny_gpt2, ["c_fc"])) == ["transformer.h.0.mlp.c_fc", "transformer.h.1.mlp.c_fc"]
    with pytest.raises(ValueError, match=r"target_modules=\['fc'\] matches no"):
        find_target_modules(tiny_gpt2, ["fc"])
    # A full name, and several entries (returned in model order).
    assert list(find_target_modules(tiny_gpt2, ["transformer.h.1.mlp.c_fc"])) == ["transformer.h.1.mlp.c_fc"]
    assert list(find_target_modules(tiny_gpt2, ["h.1.mlp.c_fc", "h.0.attn.c_attn"])) == [
        "transformer.h.0.attn.c_attn",
        "transformer.h.1.mlp.c_fc",
    ]


def test_regex_matching_is_a_fullmatch(tiny_gpt2):
    assert list(find_target_modules(tiny_gpt2, r".*\.1\.mlp\.c_(fc|proj)")) == [
        "transformer.h.1.mlp.c_fc",
        "transformer.h.1.mlp.c_proj",
    ]
    # A regex must match the whole name (re.fullmatch, as PEFT): "c_fc" alone matches no full name.
    with pytest.raises(ValueError, match=r"target_modules='c_fc' matches no"):
        find_target_modules(tiny_gpt2, "c_fc")
    # A regex that also matches containers and non-sheet leaves keeps only the sheet layers.
    assert list(find_target_modules(tiny_gpt2, r"transformer\.h\.0\..*")) == [
        "transformer.h.0.attn.c_attn",
        "transformer.h.0.attn.c_proj",
        "transformer.h.0.mlp.c_fc",
        "transformer.h.0.mlp.c_proj",
    ]
    assert matches_pattern("transformer.h.3.mlp.c_fc", ["mlp.c_fc"])
    assert not matches_pattern("transformer.h.3.mlp.c_fc2", ["mlp.c_fc"])
    assert matches_pattern("transformer.h.3.mlp.c_fc", r"transformer\.h\.\d+\.mlp\.c_fc")
    assert not matches_pattern("transformer.h.3.mlp.c_fc", r"h\.\d+\.mlp\.c_fc")


def test_no_match_lists_candidates(tiny_gpt2):
    with pytest.raises(ValueError) as info:
        TopoRegularizer(target_modules=["mlp.fc_in"]).layers(tiny_gpt2)
    message = str(info.value)
    assert "target_modules=['mlp.fc_in'] matches no Linear/Conv1D/Conv2d layer of GPT2LMHeadModel" in message
    assert "Candidates: 'attn.c_attn', 'attn.c_proj', 'mlp.c_fc', 'mlp.c_proj'" in message
    with pytest.raises(ValueError, match=r"watch_modules=\['nothing'\] matches no .*'mlp.c_fc'"):
        TopoRegularizer(TopoConfig(watch_modules=["nothing"])).layers(tiny_gpt2)


def test_malformed_patterns(tiny_gpt2):
    with pytest.raises(ValueError, match=r"target_modules='mlp.\(c_fc' is not a valid regular expression"):
        find_target_modules(tiny_gpt2, "mlp.(c_fc")
    for bad in ([], [""], ["mlp.c_fc", 3]):
        with pytest.raises(ValueError, match="must be a non-empty list of module-name suffixes or one regex"):
            find_target_modules(tiny_gpt2, bad)


def test_unsupported_matches_are_type_errors(tiny_gpt2):
    with pytest.raises(TypeError, match=r"cannot carry a cortical sheet: transformer.wte \(Embedding\)"):
        TopoRegularizer(target_modules=["wte"]).layers(tiny_gpt2)
    # A suffix naming a container (the whole MLP block) is not a layer either.
    with pytest.raises(TypeError, match=r"transformer.h.0.mlp \(GPT2MLP\)"):
        find_target_modules(tiny_gpt2, ["mlp"])


def test_gpt_neox(tiny_neox, rel_err):
    topo = TopoRegularizer(target_modules=["mlp.dense_h_to_4h"])
    layers = topo.layers(tiny_neox)
    names = ["gpt_neox.layers.0.mlp.dense_h_to_4h", "gpt_neox.layers.1.mlp.dense_h_to_4h"]
    assert [layer.name for layer in layers] == names
    assert all(layer.sheet.layer_type == "Linear" and layer.sheet.shape == (8, 12, 32) for layer in layers)
    value = topo(tiny_neox)
    reference = ReferenceTopoLoss([LaplacianPyramid(n, factor_h=3, factor_w=3) for n in names]).compute(tiny_neox)
    assert 0.05 < value.item() < 1 and abs(value.item() - reference.item()) <= 1e-6
    value.backward()
    assert all(layer.module.weight.grad.abs().sum() > 0 for layer in layers)


@pytest.mark.parametrize("target", ["mlp.up_proj", "mlp.gate_proj"])
def test_llama(tiny_llama, target):
    topo = TopoRegularizer(target_modules=[target])
    layers = topo.layers(tiny_llama)
    names = [f"model.layers.{i}.{target}" for i in range(2)]
    assert [layer.name for layer in layers] == names
    assert all(layer.sheet.layer_type == "Linear" and layer.sheet.shape == (10, 12, 32) for layer in layers)
    value = topo(tiny_llama)
    reference = ReferenceTopoLoss([LaplacianPyramid(n, factor_h=3, factor_w=3) for n in names]).compute(tiny_llama)
    assert 0.05 < value.item() < 1 and abs(value.item() - reference.item()) <= 1e-6
    # Both Llama MLP expansions at once, by regex.
    both = TopoRegularizer(target_modules=r"model\.layers\.\d+\.mlp\.(up|gate)_proj").layers(tiny_llama)
    assert len(both) == 4


def _family_model(family):
    small = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=96)
    configs = {
        "gpt_neo": lambda: GPTNeoConfig(
            vocab_size=64, hidden_size=32, num_layers=2, num_heads=2, attention_types=[[["global"], 2]]
        ),
        "qwen2": lambda: Qwen2Config(num_key_value_heads=2, **small),
        "mistral": lambda: MistralConfig(num_key_value_heads=2, **small),
    }
    return AutoModelForCausalLM.from_config(configs[family]())


@pytest.mark.parametrize(
    "preset, model_fixture, sheet",
    [
        ("gpt2", "tiny_gpt2", ("Conv1D", (8, 16, 32))),
        ("gpt_neo", None, ("Linear", (8, 16, 32))),
        ("gpt_neox", "tiny_neox", ("Linear", (8, 12, 32))),
        ("llama", "tiny_llama", ("Linear", (10, 12, 32))),
        ("llama_gate", "tiny_llama", ("Linear", (10, 12, 32))),
        ("qwen2", None, ("Linear", (8, 12, 32))),
        ("mistral", None, ("Linear", (8, 12, 32))),
    ],
)
def test_presets_find_one_expansion_layer_per_block(preset, model_fixture, sheet, request):
    model = request.getfixturevalue(model_fixture) if model_fixture else _family_model(preset)
    layers = TopoRegularizer(target_modules=TARGET_PRESETS[preset]).layers(model)
    assert len(layers) == 2
    assert [(layer.sheet.layer_type, layer.sheet.shape) for layer in layers] == [sheet, sheet]
    assert [int(layer.name.split(".")[-3]) for layer in layers] == [0, 1]  # block index before "mlp.<name>"


def test_peft_models(tiny_gpt2):
    peft_model = get_peft_model(
        copy.deepcopy(tiny_gpt2), LoraConfig(r=2, target_modules=["c_fc"], fan_in_fan_out=True)
    )
    found = find_target_modules(peft_model, ["mlp.c_fc"])
    # The LoRA wrapper is the match, never its base_layer / lora_A / lora_B sub-modules.
    assert list(found) == ["base_model.model.transformer.h.0.mlp.c_fc", "base_model.model.transformer.h.1.mlp.c_fc"]
    assert all(type(m).__name__ == "Linear" and hasattr(m, "base_layer") for m in found.values())
    candidates = candidate_layer_names(peft_model)
    assert not any(part in name for name in candidates for part in ("lora_A", "lora_B", "base_layer"))
    assert "transformer.h.0.mlp.c_fc" in candidates  # base-model names, as in error messages and config.json
    assert base_model_name(peft_model, "base_model.model.transformer.h.0.mlp.c_fc") == "transformer.h.0.mlp.c_fc"
    # Only PEFT models get the prefix removed.
    assert base_model_name(tiny_gpt2, "base_model.model.x") == "base_model.model.x"
    # Adapter sub-layers are never targets, even when named explicitly.
    with pytest.raises(ValueError, match=r"target_modules=\['lora_A.default'\] matches no"):
        find_target_modules(peft_model, ["lora_A.default"])


def test_regex_resolves_the_same_layers_on_a_peft_wrapped_model(tiny_gpt2):
    # PEFT matches a regex target_modules against the names of the *base* model, and config.json records base-model
    # names. A TopoConfig with a regex (e.g. saved by a TopoTrainer run with `re:...`) must resolve the same layers
    # on the model and on its LoRA-wrapped version, as a list of suffixes does.
    regex = r"transformer\.h\.\d+\.mlp\.c_fc"
    peft_model = get_peft_model(
        copy.deepcopy(tiny_gpt2), LoraConfig(r=2, target_modules=["c_attn"], fan_in_fan_out=True)
    )
    plain = TopoRegularizer(target_modules=regex)
    assert [layer.sheet.module_name for layer in plain.layers(tiny_gpt2)] == [
        "transformer.h.0.mlp.c_fc",
        "transformer.h.1.mlp.c_fc",
    ]
    wrapped = TopoRegularizer(target_modules=regex)
    assert [layer.sheet.module_name for layer in wrapped.layers(peft_model)] == [
        "transformer.h.0.mlp.c_fc",
        "transformer.h.1.mlp.c_fc",
    ]
    assert wrapped(peft_model).item() == pytest.approx(plain(tiny_gpt2).item(), abs=1e-7)
    # A regex watch pattern too: the roles recorded in the metadata are those of the resolved layers.
    config = TopoConfig(target_modules=r"transformer\.h\.0\.mlp\.c_fc", watch_modules=r"transformer\.h\.1\.mlp\.c_fc")
    topo = TopoRegularizer(config)
    roles = {layer.sheet.module_name: layer.role for layer in topo.layers(peft_model)}
    assert roles == {"transformer.h.0.mlp.c_fc": "target", "transformer.h.1.mlp.c_fc": "watch"}
    recorded = {n: d["role"] for n, d in topo.config_for(peft_model).to_dict()["layers"].items()}
    assert recorded == roles
