"""Model presets (hf_topo.models): architectures and the sheets TopoLoss lays over them; check_model_source."""

import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from hf_topo import TopoConfig, TopoRegularizer
from hf_topo.loading import check_model_source
from hf_topo.models import apply_overrides, build_model, preset_config
from hf_topo.presets import MODEL_PRESETS, default_target_modules


@pytest.mark.parametrize(
    "preset, n_layers, sheet",
    [
        ("tiny-gpt2", 4, (16, 32, 128)),
        ("gpt2-124m", 12, (48, 64, 768)),
        ("gpt-neo-125m", 12, (48, 64, 768)),
        ("tiny-gpt-neo", 4, (16, 32, 128)),
        ("tiny-gpt-neox", 4, (16, 32, 128)),
        ("tiny-llama", 4, (16, 32, 128)),
    ],
)
def test_preset_sheets(preset, n_layers, sheet):
    config = preset_config(preset, vocab_size=50257, block_size=128)
    with torch.device("meta"):  # shapes only: no memory for the 125M-parameter presets
        model = AutoModelForCausalLM.from_config(config)
    layers = TopoRegularizer(TopoConfig(target_modules=default_target_modules(model))).layers(model)
    assert len(layers) == n_layers
    assert {layer.sheet.shape for layer in layers} == {sheet}
    assert layers[0].sheet.layer_type == ("Conv1D" if "gpt2" in preset else "Linear")


@pytest.mark.parametrize("preset", ["tiny-gpt-neo", "tiny-gpt-neox", "tiny-llama"])
def test_tiny_family_presets_train_and_reload(preset, tmp_path):
    """The tiny presets of the other families: a forward with labels, a finite loss, save and load back."""
    model = build_model(preset, vocab_size=64, block_size=16)
    tokens = torch.randint(0, 64, (2, 16))
    loss = model(input_ids=tokens, labels=tokens).loss
    assert torch.isfinite(loss) and abs(loss.item() - math.log(64)) < 1.0  # untrained: near uniform
    model.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(again) is type(model) and again.config.max_position_embeddings == 16
    torch.testing.assert_close(again(tokens).logits, model(tokens).logits)


def test_gpt2_124m_has_124m_parameters():
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(preset_config("gpt2-124m", vocab_size=50257, block_size=1024))
    assert round(sum(p.numel() for p in model.parameters()) / 1e6) == 124


def test_overrides_and_unknown_preset():
    model = build_model("tiny-gpt2", vocab_size=100, block_size=16, config_overrides="n_embd=32,n_layer=2")
    assert model.config.n_embd == 32 and model.config.n_layer == 2 and model.config.vocab_size == 100
    with pytest.raises(ValueError, match="no attribute 'n_emb'"):
        apply_overrides(preset_config("tiny-gpt2", 100, 16), "n_emb=3")
    with pytest.raises(ValueError, match="Unknown model preset"):
        preset_config("gpt5", 100, 16)
    assert set(MODEL_PRESETS) == {
        "tiny-gpt2",
        "gpt2-124m",
        "gpt-neo-125m",
        "tiny-gpt-neo",
        "tiny-gpt-neox",
        "tiny-llama",
        "tiny-resnet",
        "tiny-vit",
        "resnet-18",
        "resnet-50",
        "vit-b-32",
    }
    with pytest.raises(ValueError, match="model_preset='tiny-resnet' is an image classifier.*train_dir="):
        preset_config("tiny-resnet", 100, 16)


def test_check_model_source_names_what_is_wrong_with_a_model_folder(tmp_path, tiny_gpt2):
    tiny_gpt2.save_pretrained(tmp_path / "model")
    check_model_source(tmp_path / "model")  # config.json and model.safetensors: loadable
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    (tmp_path / "weightless").mkdir()
    (tmp_path / "weightless" / "config.json").write_bytes((tmp_path / "model" / "config.json").read_bytes())
    (tmp_path / "empty").mkdir()
    for source, error, message in [
        (tmp_path / "missing", FileNotFoundError, "missing' does not exist"),
        ("./missing", FileNotFoundError, "does not exist"),
        (tmp_path / "model" / "config.json", ValueError, "is a file; .*pass .*model"),
        (tmp_path / "empty", ValueError, "not a saved model folder \\(no config.json"),
        (tmp_path / "adapter", ValueError, "is a LoRA adapter folder.*merged"),
        (tmp_path / "weightless", ValueError, "has a config.json but no weights.*save_pretrained"),
        ("someone/no-such-model", ValueError, "Cannot load a model from 'someone/no-such-model'.*Hub did not provide"),
    ]:
        with pytest.raises(error, match=message):
            check_model_source(source)
