"""hf_topo.analysis.image_activations: one response per image and unit, checked against the layers run by hand."""

import pytest
import torch

from hf_topo.analysis import topographic_layers
from hf_topo.analysis.image_activations import collect_image_activations, image_unit_responses
from hf_topo.config import TopoConfig
from hf_topo.presets import TARGET_PRESETS
from hf_topo.vision.models import build_vision_model


def _model(preset: str):
    torch.manual_seed(0)
    model = build_vision_model(preset, ["a", "b", "c"], image_size=32)
    family = "resnet" if "resnet" in preset else "vit"
    return model, TopoConfig(target_modules=TARGET_PRESETS[family], tau=1.0)


def test_conv_units_are_spatial_means_of_output_channels():
    model, config = _model("tiny-resnet")
    layers = topographic_layers(model, config)
    pixels = torch.randn(7, 3, 32, 32)
    responses = collect_image_activations(model, pixels, layers, batch_size=3, progress=False)
    shortcut = model.resnet.encoder.stages[0].layers[0].shortcut.convolution
    model.eval()
    with torch.no_grad():
        by_hand = shortcut(model.resnet.embedder(pixels)).mean(dim=(2, 3))
    name = "resnet.encoder.stages.0.layers.0.shortcut.convolution"
    assert responses[name].shape == (7, shortcut.out_channels)
    torch.testing.assert_close(responses[name], by_hand, rtol=1e-5, atol=1e-6)
    assert all(r.shape[0] == 7 for r in responses.values())


def test_vit_units_are_token_means_and_batches_agree():
    model, config = _model("tiny-vit")
    model.train()
    layers = topographic_layers(model, config)
    pixels = torch.randn(5, 3, 32, 32)
    whole = collect_image_activations(model, pixels, layers, batch_size=5, progress=False)
    assert model.training, "the model's training mode must be restored"
    split = collect_image_activations(model, [pixels[:2], {"pixel_values": pixels[2:]}], layers, progress=False)
    for name in whole:
        torch.testing.assert_close(whole[name], split[name], rtol=1e-5, atol=1e-6)
    model.eval()
    with torch.no_grad():
        block = model.vit.layers[0]
        captured = {}
        handle = block.mlp.fc2.register_forward_hook(lambda m, i, o: captured.setdefault("out", o))
        model(pixel_values=pixels)
        handle.remove()
    torch.testing.assert_close(whole["vit.layers.0.mlp.fc2"], captured["out"].mean(dim=1), rtol=1e-5, atol=1e-6)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="height, width"):
        image_unit_responses(torch.zeros(2, 3, 4, 5, 6), "x")
    model, config = _model("tiny-resnet")
    layers = topographic_layers(model, config)
    with pytest.raises(ValueError, match=r"\(n_images, channels, height, width\)"):
        collect_image_activations(model, torch.zeros(3, 32, 32), layers, progress=False)
    with pytest.raises(ValueError, match="No images"):
        collect_image_activations(model, [], layers, progress=False)
    from hf_topo.analysis import collect_activations

    with pytest.raises(TypeError, match="collect_image_activations"):
        collect_activations(model, torch.zeros(1, 4, dtype=torch.long), layers, progress=False)
