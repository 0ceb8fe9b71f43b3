"""The paper's vision architectures (hf_topo.vision.paper_models) and where TopoLoss goes in them
(hf_topo.presets.vision_targets): torchvision's shapes, the paper's 19 ResNet-18 layers, the TDANN-like 8."""

import pytest
import torch
from transformers import AutoModelForImageClassification

from hf_topo import TopoConfig
from hf_topo.presets import vision_targets
from hf_topo.targets import find_target_modules
from hf_topo.topo_regularizer import TopoRegularizer
from hf_topo.vision.paper_models import paper_vision_config

# torchvision's published parameter counts (the `num_params` of resnet18 / resnet50 / vit_b_32's IMAGENET1K_V1 weights)
TORCHVISION_PARAMETERS = {"resnet-18": 11_689_512, "resnet-50": 25_557_032, "vit-b-32": 88_224_232}


@pytest.fixture(scope="module")
def paper_models():
    torch.manual_seed(0)
    models = {
        preset: AutoModelForImageClassification.from_config(paper_vision_config(preset))
        for preset in TORCHVISION_PARAMETERS
    }
    models["resnet-18-blurpool"] = AutoModelForImageClassification.from_config(
        paper_vision_config("resnet-18", blurpool=True)
    )
    return models


def test_presets_have_torchvisions_shapes_and_imagenets_classes(paper_models):
    for preset, expected in TORCHVISION_PARAMETERS.items():
        model = paper_models[preset]
        assert sum(p.numel() for p in model.parameters()) == expected, preset
        assert model.config.num_labels == 1000 and model.config.id2label[1] == "goldfish, Carassius auratus"
    vit = paper_models["vit-b-32"].config
    assert (vit.hidden_act, vit.layer_norm_eps, vit.image_size, vit.patch_size) == ("gelu", 1e-6, 224, 32)
    blurpool = paper_models["resnet-18-blurpool"]
    assert type(blurpool).__name__ == "BlurPoolResNetForImageClassification"
    assert sum(p.numel() for p in blurpool.parameters()) == TORCHVISION_PARAMETERS["resnet-18"]
    images = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert paper_models["vit-b-32"].eval()(images).logits.shape == (1, 1000)
    with pytest.raises(ValueError, match="multiple of 32"):
        paper_vision_config("vit-b-32", image_size=100)
    with pytest.raises(ValueError, match="Unknown vision preset 'resnet-34'"):
        paper_vision_config("resnet-34")


@pytest.mark.parametrize(
    "preset,placement,count",
    [
        ("resnet-18", "paper", 19),  # 16 block convolutions + 3 shortcut projections: the paper's "19 in total"
        ("resnet-18", "tdann", 8),  # one per residual block: the 8 sites of A.3
        ("resnet-18-blurpool", "paper", 19),
        ("resnet-50", "paper", 52),
        ("resnet-50", "tdann", 16),
        ("vit-b-32", "paper", 12),
        ("vit-b-32", "mlp_input", 12),
    ],
)
def test_placements_find_the_papers_layers(paper_models, preset, placement, count):
    model = paper_models[preset]
    targets = vision_targets(model, placement)
    layers = find_target_modules(model, targets)
    assert len(layers) == count
    if placement == "tdann":
        last = "layer.2" if preset == "resnet-50" else "layer.1"
        assert all(name.endswith(f"{last}.convolution") for name in layers)
    if preset.startswith("vit"):
        suffix = "mlp.fc2" if placement == "paper" else "mlp.fc1"
        assert all(name.endswith(suffix) for name in layers)
        assert all(
            tuple(module.weight.shape) == ((768, 3072) if placement == "paper" else (3072, 768))
            for module in layers.values()
        )


def test_toponet_config_on_the_paper_layers_gives_a_loss_and_a_record(paper_models):
    model = paper_models["resnet-18-blurpool"]
    regularizer = TopoRegularizer(TopoConfig(target_modules=vision_targets(model), tau=10.0))
    loss = regularizer(model)
    assert torch.isfinite(loss) and loss.requires_grad
    record = regularizer.config_for(model)
    sheet = record.layers["resnet.encoder.stages.3.layers.1.layer.1.convolution"]
    assert (sheet.height * sheet.width, sheet.depth) == (512, 512 * 9)
    with pytest.raises(ValueError, match="placement='tdann' is not one of"):
        vision_targets(paper_models["vit-b-32"], "tdann")
    with pytest.raises(ValueError, match="No vision placement is known for model_type='gpt2'"):
        from transformers import GPT2Config

        vision_targets(GPT2Config())


@pytest.mark.parametrize("preset,layers", [("resnet-18", 19), ("resnet-50", 52), ("vit-b-32", 12)])
def test_pretrain_presets_are_the_papers_shapes_for_the_folders_classes(preset, layers):
    """`hf-topo pretrain --model_preset resnet-18 --train_dir DIR` builds the paper's architecture with the folder's
    classes, and its default targets (the family's TARGET_PRESETS) are the paper's layers."""
    from hf_topo.presets import VISION_MODEL_PRESETS, default_target_modules
    from hf_topo.vision.models import vision_preset_config

    assert preset in VISION_MODEL_PRESETS
    config = vision_preset_config(preset, ["cat", "dog", "owl"], image_size=224)
    reference = paper_vision_config(preset)
    assert config.num_labels == 3 and config.id2label == {0: "cat", 1: "dog", 2: "owl"}
    assert type(config) is type(reference)
    assert {k: v for k, v in config.to_dict().items() if "label" not in k} == {
        k: v for k, v in reference.to_dict().items() if "label" not in k
    }
    model = AutoModelForImageClassification.from_config(config)
    topo = TopoConfig(target_modules=default_target_modules(model))
    assert len(TopoRegularizer(topo).layers(model)) == layers
