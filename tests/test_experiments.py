"""hf_topo.experiments.families and .recipes: one families table, the settings each family trains with."""

import pytest

from hf_topo.experiments.families import FAMILIES, family_by_short_name, family_recipe
from hf_topo.experiments.recipes import small_cpu_recipe
from hf_topo.presets import topolm_targets

RECIPE = dict(
    train_file="train.txt", validation_file="validation.txt", output_dir="out", tau=2.0, max_steps=10, batch_size=4,
    learning_rate=1e-3, block_size=32, seed=0, vocab_size=300, config_overrides="n_embd=32,n_layer=2",
)  # fmt: skip


def test_one_table_names_every_family_once_in_both_spellings():
    assert list(FAMILIES) == ["baseline", "toponet", "toponet_input", "toponet_bias", "ws", "as", "topolm"]
    shorts = [family.short for family in FAMILIES.values()]
    assert len(set(shorts)) == len(shorts)
    assert family_by_short_name("topo") is FAMILIES["toponet"] and family_by_short_name("none").regularizer is None
    with pytest.raises(KeyError):
        family_by_short_name("lp")


def test_each_family_trains_its_regularizer_with_its_own_settings():
    losses = {name: family_recipe(name, **RECIPE)["topo_loss_type"] for name in FAMILIES}
    assert losses == {
        "baseline": "laplacian_pyramid", "toponet": "laplacian_pyramid", "toponet_input": "laplacian_pyramid",
        "toponet_bias": "laplacian_pyramid", "ws": "weight_similarity", "as": "activation_similarity",
        "topolm": "spatial_correlation",
    }  # fmt: skip
    assert family_recipe("ws", **RECIPE)["topo_distance"] == "correlation"  # Truong & Hasson's choice
    assert family_recipe("ws", **RECIPE, topo_distance="euclidean")["topo_distance"] == "euclidean"  # the recipe wins
    assert family_recipe("toponet_input", **RECIPE)["topo_sheet"] == "input"
    assert family_recipe("toponet_bias", **RECIPE)["topo_include_bias"] is True
    assert "topo_target_modules" not in family_recipe("toponet", **RECIPE)


def test_topolm_trains_on_its_sites_in_the_recipes_architecture():
    from hf_topo.models import apply_overrides, preset_config

    settings = family_recipe("topolm", "outputs", **RECIPE)
    sites = topolm_targets(apply_overrides(preset_config("tiny-gpt2", 300, 32), RECIPE["config_overrides"]), "outputs")
    targets = sites["target_modules"]
    assert settings["topo_target_modules"] == ([f"re:{targets}"] if isinstance(targets, str) else targets)
    assert settings["topo_sheet"] == sites["sheet"]
    model_args, data_args, training_args = small_cpu_recipe(**settings)
    assert training_args.topo_loss_type == "spatial_correlation" and training_args.tau == 2.0
    assert model_args.block_size == 32 and data_args.train_file == "train.txt"


def test_an_unknown_recipe_setting_is_refused():
    with pytest.raises(TypeError, match="unknown setting 'topo_sheets'"):
        small_cpu_recipe(**family_recipe("toponet", **RECIPE, topo_sheets="input"))
