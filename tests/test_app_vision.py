"""The TopoNet explorer on vision TopoNets (hf_topo.app): a ResNet's Conv2d sheets and a ViT's mlp.fc2 sheets, their
responses to an image and weight maps against independent references, bad input, and the real Gradio app's API."""

import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import ResNetConfig, ResNetForImageClassification, ViTConfig, ViTForImageClassification
from transformers.models.convnext.image_processing_pil_convnext import ConvNextImageProcessorPil
from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

from hf_topo import TopoConfig, TopoRegularizer
from hf_topo.app import TopoNetExplorer
from hf_topo.lora import CONVOLUTION_TARGETS

CLASSES = ["ant", "bee", "cat", "dog"]
CONV = "resnet.encoder.stages.1.layers.0.layer.1.convolution"  # 32 output channels: a 4 × 8 sheet


def _resnet(seed: int, tau: float) -> ResNetForImageClassification:
    torch.manual_seed(seed)
    config = ResNetConfig(
        embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic", num_labels=len(CLASSES),
        id2label=dict(enumerate(CLASSES)), label2id={c: i for i, c in enumerate(CLASSES)},
    )  # fmt: skip
    model = ResNetForImageClassification(config)
    TopoRegularizer(TopoConfig(tau=tau, target_modules=CONVOLUTION_TARGETS["resnet"])).config_for(model).attach_to(
        model.config
    )
    return model.eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny ResNet TopoNet (τ=1) and its τ=0 twin, saved with their image processor."""
    root = tmp_path_factory.mktemp("vision-app")
    processor = ConvNextImageProcessorPil(size={"shortest_edge": 32}, crop_pct=1.0)
    for name, seed, tau in (("toponet", 0, 1.0), ("baseline", 1, 0.0)):
        _resnet(seed, tau).save_pretrained(root / name)
        processor.save_pretrained(root / name)
    return root


@pytest.fixture(scope="module")
def explorer(saved, tmp_path_factory):
    return TopoNetExplorer.from_pretrained(
        saved / "toponet", baseline=saved / "baseline", output_dir=tmp_path_factory.mktemp("pngs")
    )


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (40, 48, 3)).astype(np.uint8)
    path = tmp_path_factory.mktemp("image") / "image.png"
    Image.fromarray(pixels).save(path)
    return path


def _layer_output(model, module, pixel_values) -> torch.Tensor:
    """The reference: ``module``'s output from a hook written here."""
    captured = []
    handle = module.register_forward_hook(lambda m, i, o: captured.append(o.detach()))
    try:
        with torch.no_grad():
            logits = model(pixel_values=pixel_values).logits
    finally:
        handle.remove()
    return captured[0], logits


def test_a_conv_units_response_is_its_channel_averaged_over_space(explorer, saved, image):
    responses = explorer.image_responses(Image.open(image), CONV)
    assert set(responses) == {"TopoNet", "baseline"}
    processor = ConvNextImageProcessorPil.from_pretrained(saved / "toponet")
    pixel_values = processor(Image.open(image).convert("RGB"), return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (1, 3, 32, 32)
    for label, model in (("TopoNet", explorer.model), ("baseline", explorer.baseline)):
        module = dict(model.named_modules())[CONV]
        output, logits = _layer_output(model, module, pixel_values)  # (1, 32, 4, 4)
        assert output.shape == (1, 32, 4, 4)
        got = responses[label].map
        assert got.shape == (4, 8)
        for c in (0, 3, 8, 31):  # channel c sits at row c // 8, column c % 8
            assert got[c // 8, c % 8].item() == pytest.approx(output[0, c].mean().item(), abs=1e-6)
        probabilities = logits[0].softmax(-1)
        best = int(probabilities.argmax())
        assert responses[label].top_classes[0] == (CLASSES[best], pytest.approx(probabilities[best].item()))
    assert not torch.allclose(responses["TopoNet"].map, responses["baseline"].map)
    # a path and an array are the same image
    for same in (image, np.asarray(Image.open(image))):
        torch.testing.assert_close(explorer.image_responses(same, CONV)["TopoNet"].map, responses["TopoNet"].map)


def test_a_conv_weight_map_is_the_first_principal_component_of_its_kernels(explorer):
    maps = explorer.weight_maps(CONV)
    for label, model in (("TopoNet", explorer.model), ("baseline", explorer.baseline)):
        kernels = dict(model.named_modules())[CONV].weight.detach().double().numpy().reshape(32, -1)  # (32, 32·3·3)
        assert kernels.shape == (32, 288)
        centered = kernels - kernels.mean(axis=0)
        _, _, vt = np.linalg.svd(centered, full_matrices=False)
        reference = (centered @ vt[0]).reshape(4, 8)
        ours = maps[label].double().numpy()
        sign = np.sign((ours * reference).sum())
        np.testing.assert_allclose(sign * ours, reference, rtol=1e-4, atol=1e-6)


def test_a_vit_units_response_is_its_output_averaged_over_the_tokens(tmp_path, image):
    torch.manual_seed(0)
    model = ViTForImageClassification(
        ViTConfig(
            image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, num_labels=3,
        )
    ).eval()  # fmt: skip
    TopoRegularizer(TopoConfig(tau=1.0, target_modules=["mlp.fc2"])).config_for(model).attach_to(model.config)
    processor = ViTImageProcessorPil(size={"height": 32, "width": 32})
    explorer = TopoNetExplorer(model, image_processor=processor, output_dir=tmp_path)
    assert explorer.layer_names == ["vit.layers.0.mlp.fc2", "vit.layers.1.mlp.fc2"]
    got = explorer.image_responses(image, "layers.1.mlp.fc2")["TopoNet"].map
    pixel_values = processor(Image.open(image).convert("RGB"), return_tensors="pt")["pixel_values"]
    output, _ = _layer_output(model, model.vit.layers[1].mlp.fc2, pixel_values)  # (1, 17 tokens, 32)
    assert output.shape == (1, 17, 32)
    torch.testing.assert_close(got.flatten(), output[0].mean(dim=0))
    assert "averaged over the tokens" in explorer.note and explorer.weight_maps("layers.0.mlp.fc2")[
        "TopoNet"
    ].shape == (
        4,
        8,
    )


def test_vision_bad_input_says_what_to_do(explorer, saved):
    with pytest.raises(ValueError, match="Upload an image first"):
        explorer.image_responses(None, CONV)
    with pytest.raises(ValueError, match="reads images, not text"):
        explorer.token_responses("the fox", CONV)
    with pytest.raises(ValueError, match="not a topographic layer"):
        explorer.image_responses(np.zeros((8, 8, 3), np.uint8), "stages.9.convolution")
    with pytest.raises(ValueError, match="pass its image_processor"):
        TopoNetExplorer(explorer.model)
    assert "channel's feature map averaged over space" in explorer.note


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _png_pixels(path) -> np.ndarray:
    with Image.open(path) as png:
        assert png.format == "PNG"
        return np.asarray(png.convert("L"), dtype=np.float64)


@pytest.mark.slow
def test_the_vision_api_through_gradio_client(explorer, image):
    from gradio_client import Client, handle_file

    from hf_topo.app import launch_explorer

    port = _free_port()
    demo = launch_explorer(explorer, port=port, prevent_thread_lock=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        assert set(client.view_api(print_info=False, return_format="dict")["named_endpoints"]) == {
            "/image_responses",
            "/weights",
        }
        figure, download, message = client.predict(CONV, handle_file(str(image)), api_name="/image_responses")
        assert message.startswith(f"Responses on {CONV} (each channel's feature map averaged over space)")
        assert "Top classes — TopoNet: " in message and Path(download).is_file()
        assert _png_pixels(figure).std() > 10
        figure, _, message = client.predict("stages.0.layers.0.layer.0.convolution", api_name="/weights")
        assert _png_pixels(figure).std() > 10 and "principal component" in message
        # bad input: a message, no figure, no exception
        assert client.predict(CONV, None, api_name="/image_responses")[:2] == (None, None)
        assert "Upload an image first" in client.predict(CONV, None, api_name="/image_responses")[2]
    finally:
        demo.close()


def test_push_space_dry_run_of_a_vision_toponet_speaks_of_images(saved, tmp_path):
    from hf_topo.cli.arguments import run_command
    from hf_topo.cli.push import main

    folder = tmp_path / "space"
    argv = ["--space", "--model", str(saved / "toponet"), "--repo_id", "me/topo-tiny-resnet", "--dry_run"]
    assert run_command(main, argv + ["--output_dir", str(folder)], prog="hf-topo push") == 0
    readme = (folder / "README.md").read_text()
    assert "response to an uploaded image" in readme and "response to a text" not in readme
    assert "TopoNetExplorer.from_pretrained(MODEL" in (folder / "app.py").read_text()
