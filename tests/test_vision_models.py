"""hf_topo.vision.models: the tiny image-classification presets, their topographic layers, saving and loading."""

import pytest
import torch
from transformers import AutoModelForImageClassification

from hf_topo import TopoConfig, TopoRegularizer
from hf_topo.presets import MODEL_PRESETS, TARGET_PRESETS, VISION_MODEL_PRESETS, default_target_modules
from hf_topo.vision.models import build_vision_model, vision_preset_config

LABELS = ["cat", "dog", "owl"]


@pytest.mark.parametrize(
    "preset, sheets",
    [
        ("tiny-resnet", [(8, 8)] * 3 + [(8, 16)] * 3 + [(16, 16)] * 3),
        ("tiny-vit", [(8, 8)] * 4),
    ],
)
def test_tiny_presets_topographic_layers_forward_and_reload(preset, sheets, tmp_path):
    assert preset in MODEL_PRESETS and preset in VISION_MODEL_PRESETS
    model = build_vision_model(preset, LABELS, image_size=16)
    layers = TopoRegularizer(TopoConfig(target_modules=default_target_modules(model))).layers(model)
    assert [layer.sheet.shape[:2] for layer in layers] == sheets
    if preset == "tiny-resnet":  # the two convolutions of each block and the shortcut projection of each stage
        assert sorted({name.split(".layers.0.")[1] for name in (layer.name for layer in layers)}) == [
            "layer.0.convolution",
            "layer.1.convolution",
            "shortcut.convolution",
        ]
        assert TARGET_PRESETS["resnet"][0].startswith("re:")
    pixels = torch.randn(2, 3, 16, 16)
    model.eval()
    logits = model(pixel_values=pixels).logits
    assert logits.shape == (2, 3)
    model.save_pretrained(tmp_path)
    again = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    assert again.config.id2label == {0: "cat", 1: "dog", 2: "owl"}
    torch.testing.assert_close(again(pixel_values=pixels).logits, logits)


def test_unknown_preset_and_a_vit_size_it_cannot_patch():
    with pytest.raises(ValueError, match="Unknown image-classification preset model_preset='resnet-1000'"):
        vision_preset_config("resnet-1000", LABELS)
    with pytest.raises(ValueError, match="image_size=18 is not a multiple of 4; pass e.g. 16"):
        vision_preset_config("tiny-vit", LABELS, image_size=18)
