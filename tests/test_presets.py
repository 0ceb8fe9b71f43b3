"""The per-family defaults (hf_topo.presets)."""

import pytest

from hf_topo import presets
from hf_topo.presets import ATTENTION_TARGETS, TARGET_PRESETS, default_target_modules


def test_every_family_with_lora_targets_has_a_topographic_layer():
    assert set(ATTENTION_TARGETS) <= set(TARGET_PRESETS)


def test_default_target_modules(make_gpt2, tiny_llama):
    assert default_target_modules(make_gpt2()) == ["mlp.c_fc"]
    assert default_target_modules(tiny_llama) == ["mlp.up_proj"]
    default_target_modules(make_gpt2()).append("attn.c_proj")  # a copy: the table is untouched
    assert presets.TARGET_PRESETS["gpt2"] == ["mlp.c_fc"]


def test_unknown_family_lists_the_known_ones(make_gpt2):
    model = make_gpt2()
    model.config.model_type = "bert"
    with pytest.raises(ValueError, match=r"model_type='bert'; pass target_modules=.*known families: gpt2, gpt_neo"):
        default_target_modules(model)
