"""The authors' vision TopoNets → transformers (hf_topo.convert.resnet/vit/toponet, hf-topo convert-toponet).

The references are torchvision's ResNet-18/50 (v1.5) with the authors' blur-pool wrapper and torchvision's ViT,
restated in ``_torchvision_models`` with torchvision's module names (torchvision itself cannot be imported here),
randomly initialised (BatchNorm statistics included, so that they matter), saved in the authors' two file formats
(a bare state dict ``all_topo_tau_<τ>.pt``; a training-script dict ``tau_<τ>.pt`` whose ``"model"`` holds the state
dict, next to an ``argparse.Namespace``), converted with the real command and compared on logits, in this process and
in a fresh one that loads the saved folder with ``AutoModelForImageClassification``.
"""

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from _scripts import offline_env
from _torchvision_models import (
    VisionTransformer,
    apply_blurpool,
    image_batch,
    randomize_batchnorm,
    randomize_vit,
    resnet18,
    resnet50,
)

from hf_topo import TopoConfig
from hf_topo.cli import convert_toponet
from hf_topo.convert import CONVERSION_KEY, checkpoint_filename, load_checkpoint
from hf_topo.convert import convert_toponet as convert_file
from hf_topo.convert.resnet import _hf_name
from hf_topo.vision.blurpool_resnet import BlurPoolConv2d, BlurPoolResNetForImageClassification
from hf_topo.vision.imagenet import imagenet_class_names, imagenet_synsets
from hf_topo.vision.paper_models import paper_vision_config

TOLERANCE = 1e-4


def _logits(model, images):
    with torch.no_grad():
        output = model(images)
    return output.logits if hasattr(output, "logits") else output


def _fresh_process_logits(folder: Path, images: torch.Tensor, tmp_path: Path, import_hf_topo: bool) -> torch.Tensor:
    """Load ``folder`` with AutoModelForImageClassification in a new interpreter and return its logits."""
    torch.save(images, tmp_path / "images.pt")
    script = textwrap.dedent(
        f"""
        import sys, torch
        {"import hf_topo" if import_hf_topo else ""}
        from transformers import AutoModelForImageClassification
        model = AutoModelForImageClassification.from_pretrained(sys.argv[1]).eval()
        with torch.no_grad():
            torch.save(model(torch.load(sys.argv[2])).logits, sys.argv[3])
        print(type(model).__name__)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(folder), str(tmp_path / "images.pt"), str(tmp_path / "logits.pt")],
        env=offline_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(tmp_path / "logits.pt")


def _authors_resnet18(seed: int = 0, num_classes: int = 1000):
    torch.manual_seed(seed)
    return randomize_batchnorm(apply_blurpool(resnet18(num_classes=num_classes, width=16)), seed).eval()


# ---- the blur-pool class -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset,builder", [("resnet-18", resnet18), ("resnet-50", resnet50)])
def test_blurpool_convolutions_sit_where_the_authors_put_them(preset, builder):
    """At full size, the blur-pool class blurs exactly the convolutions that the authors' wrapper wraps (6 in each)."""
    authors = apply_blurpool(builder())
    blurred_keys = {key for key in authors.state_dict() if key.endswith(".blur_filter")}
    model = BlurPoolResNetForImageClassification(paper_vision_config(preset, blurpool=True))
    ours = {name for name, module in model.named_modules() if isinstance(module, BlurPoolConv2d)}
    assert len(blurred_keys) == len(ours) == 6
    assert {_hf_name(key).removesuffix(".blur_filter") for key in blurred_keys} == ours
    assert all(
        name.startswith("resnet.encoder.stages.") for name in ours
    )  # the stem (3 input channels) is not blurred
    # the same parameters as torchvision's model: the blur is a buffer
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in authors.parameters())


def test_blurpool_conv_is_a_depthwise_binomial_blur_then_the_convolution():
    torch.manual_seed(0)
    conv = BlurPoolConv2d(4, 6, 3, stride=2, padding=1, bias=False)
    x = torch.randn(2, 4, 9, 9)
    kernel = torch.tensor([1.0, 2.0, 1.0])
    kernel = torch.outer(kernel, kernel) / 16
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    blurred = sum(
        kernel[i, j] * padded[:, :, i : i + 9, j : j + 9] for i in range(3) for j in range(3)
    )  # the blur written out: each channel on its own, zero padding 1
    expected = torch.nn.functional.conv2d(blurred, conv.weight, stride=2, padding=1)
    assert torch.allclose(conv(x), expected, atol=1e-6)
    assert conv.state_dict().keys() == {"weight", "blur_filter"}


# ---- parity: the real command on the authors' file formats ----------------------------------------------------------


@pytest.mark.slow  # a fresh process or a training run: the fast lane leaves it to CI
def test_resnet18_file_converts_to_the_same_logits_and_loads_in_a_fresh_process(tmp_path, capsys):
    reference = _authors_resnet18()
    path = tmp_path / "all_topo_tau_10.0.pt"
    torch.save(reference.state_dict(), path)  # the authors' format: a bare state dict
    out = tmp_path / "converted"
    convert_toponet.main([str(path), "--output_dir", str(out)])
    printed = capsys.readouterr().out
    assert "BlurPoolResNetForImageClassification" in printed and "τ=10" in printed and "19 layers" in printed

    images = image_batch(64, n=3)
    expected = _logits(reference, images)
    assert expected.std() > 0.1  # logits that a wrong BatchNorm or blur mapping would change
    logits = _fresh_process_logits(out, images, tmp_path, import_hf_topo=True)
    assert (logits - expected).abs().max() <= TOLERANCE

    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "hf_topo_blurpool_resnet" and config["blurpool_min_channels"] == 16
    assert config["id2label"]["0"] == "tench, Tinca tinca" and len(config["id2label"]) == 1000
    assert config[CONVERSION_KEY]["checkpoint"] == "all_topo_tau_10.0.pt" and config[CONVERSION_KEY]["blurpool"]
    topo = TopoConfig.from_pretrained(out)
    assert topo.tau == 10.0 and not topo.inferred
    assert len(topo.layers) == 19  # 16 block convolutions + 3 shortcut projections
    assert "resnet.encoder.stages.1.layers.0.shortcut.convolution" in topo.layers
    assert not any("embedder" in name for name in topo.layers)
    stage_1 = topo.layers["resnet.encoder.stages.1.layers.0.layer.0.convolution"]
    assert (stage_1.height * stage_1.width, stage_1.depth) == (32, 16 * 9)  # 32 channels, 16 inputs × 3×3

    # torchvision's ImageNet evaluation transform is saved with it: shorter side to 256, central 224 crop, ImageNet's
    # mean and std (a uniform image checks the normalization, a 400×300 one the shape)
    from PIL import Image
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(out)
    pixels = processor(Image.new("RGB", (400, 300), (255, 128, 0)), return_tensors="pt").pixel_values
    assert tuple(pixels.shape) == (1, 3, 224, 224)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    expected_pixels = (torch.tensor([255, 128, 0]) / 255 - mean) / std
    assert torch.allclose(pixels[0, :, 100, 100], expected_pixels, atol=1e-3)


def test_resnet50_and_plain_resnet_files_convert_to_the_same_logits(tmp_path):
    torch.manual_seed(1)
    reference = randomize_batchnorm(apply_blurpool(resnet50(num_classes=10, width=16, layers=[1, 2, 1, 1])), 1).eval()
    path = tmp_path / "all_topo_tau_30.0.pt"
    torch.save(reference.state_dict(), path)
    model = convert_file(path)
    images = image_batch(64, n=2, seed=1)
    assert type(model).__name__ == "BlurPoolResNetForImageClassification"
    assert model.config.layer_type == "bottleneck" and model.config.depths == [1, 2, 1, 1]
    assert (_logits(model, images) - _logits(reference, images)).abs().max() <= TOLERANCE
    topo = TopoConfig.from_pretrained(model)
    assert topo.tau == 30.0 and len(topo.layers) == 5 * 3 + 4  # every bottleneck convolution, 4 shortcuts
    assert model.config.id2label[0] == "LABEL_0"  # not ImageNet's 1000 classes: no ImageNet names

    plain = randomize_batchnorm(resnet18(num_classes=1000, width=16), 2).eval()  # torchvision's, no blur-pool
    torch.save({"model": plain.state_dict(), "epoch": 88}, tmp_path / "plain.pt")  # wrapped in a dict this time
    converted = convert_file(tmp_path / "plain.pt", tau=1.0)
    assert type(converted).__name__ == "ResNetForImageClassification"
    assert (_logits(converted, images) - _logits(plain, images)).abs().max() <= TOLERANCE
    assert getattr(converted.config, CONVERSION_KEY)["epoch"] == 88


@pytest.mark.slow  # a fresh process or a training run: the fast lane leaves it to CI
def test_vit_file_with_a_namespace_converts_to_the_same_logits_and_loads_in_a_fresh_process(tmp_path):
    torch.manual_seed(2)
    reference = randomize_vit(
        VisionTransformer(image_size=64, patch_size=16, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=64)
    ).eval()
    checkpoint = {  # torchvision's reference train.py: model, optimizer, lr_scheduler, epoch, args
        "model": reference.state_dict(),
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.003, "params": [0, 1]}]},
        "lr_scheduler": {"last_epoch": 299},
        "epoch": 299,
        "args": argparse.Namespace(model="vit_b_32", lr=0.003, epochs=300, label_smoothing=0.11, lr_steps=[16, 22]),
    }
    path = tmp_path / "tau_10.0.pt"
    torch.save(checkpoint, path)
    with pytest.raises(ValueError, match="n_head=12 does not divide"):  # args.model names vit_b_32: 12 heads
        convert_file(path)
    out = tmp_path / "vit"
    convert_toponet.main([str(path), "--output_dir", str(out), "--n_head", "4"])

    images = image_batch(64, n=3, seed=2)
    expected = _logits(reference, images)
    logits = _fresh_process_logits(out, images, tmp_path, import_hf_topo=False)  # a plain ViT: no hf_topo needed
    assert (logits - expected).abs().max() <= TOLERANCE

    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "vit" and config["hidden_act"] == "gelu" and config["layer_norm_eps"] == 1e-6
    record = config[CONVERSION_KEY]
    assert record["epoch"] == 299 and record["training_config"]["model"] == "vit_b_32"
    assert record["training_config"]["lr_steps"] == [16, 22]
    topo = TopoConfig.from_pretrained(out)
    assert topo.tau == 10.0 and sorted(topo.layers) == ["vit.layers.0.mlp.fc2", "vit.layers.1.mlp.fc2"]


@pytest.mark.slow
def test_vit_b_32_shapes_and_older_mlp_names(tmp_path):
    """Full vit_b_32 keys (12 heads inferred from args.model) and torchvision's older ``mlp.linear_1/2`` names."""
    torch.manual_seed(3)
    reference = VisionTransformer().eval()  # vit_b_32: 224px, 32px patches, 12 × 768, MLP 3072
    state_dict = {
        key.replace("mlp.0.", "mlp.linear_1.").replace("mlp.3.", "mlp.linear_2."): value
        for key, value in reference.state_dict().items()
    }
    path = tmp_path / "tau_10.0.pt"
    torch.save({"model": state_dict, "args": argparse.Namespace(model="vit_b_32")}, path)
    model = convert_file(path)
    config = model.config
    assert (config.image_size, config.patch_size, config.hidden_size, config.num_hidden_layers) == (224, 32, 768, 12)
    assert (config.num_attention_heads, config.intermediate_size, config.num_labels) == (12, 3072, 1000)
    images = image_batch(224, n=1, seed=3)
    assert (_logits(model, images) - _logits(reference, images)).abs().max() <= TOLERANCE
    sheet = TopoConfig.from_pretrained(model).layers["vit.layers.0.mlp.fc2"]
    assert (sheet.height, sheet.width, sheet.depth) == (24, 32, 3072)


# ---- where the file comes from: the authors' Hub repos --------------------------------------------------------------


def test_hub_file_names_and_taus_of_the_authors_repos(tmp_path):
    assert checkpoint_filename(0.5, repo_id="murtylab/topo-resnet18-imagenet") == "all_topo_tau_0.5.pt"
    assert checkpoint_filename(30, repo_id="murtylab/topo-resnet50-imagenet") == "all_topo_tau_30.0.pt"
    assert checkpoint_filename(10, repo_id="murtylab/topo-vit-b-32-imagenet") == "tau_10.0.pt"
    assert checkpoint_filename(50, repo_id="murtylab/topo-nanogpt-fineweb10B") == "tau_50.0.pt"
    out = tmp_path / "never"
    with pytest.raises(ValueError, match=r"no TopoNet of tau=3\b.*ResNet-18 TopoNets of τ 0\.5, 1, 5, 10, 20, 50"):
        convert_toponet.main(["murtylab/topo-resnet18-imagenet", "--tau", "3", "--output_dir", str(out)])
    with pytest.raises(ValueError, match=r"no TopoNet of tau=1\b.*τ 30"):
        convert_toponet.main(["murtylab/topo-resnet50-imagenet", "--tau", "1", "--output_dir", str(out)])
    with pytest.raises(
        ValueError, match=r"Cannot fetch tau_10\.0\.pt of the Hub repo murtylab/topo-vit-b-32-imagenet"
    ):
        convert_toponet.main(["murtylab/topo-vit-b-32-imagenet", "--tau", "10", "--output_dir", str(out)])  # offline
    assert not out.exists()


def _hub_cache_with(cache: Path, repo_id: str, files: dict[str, Path], commit: str = "89abcdef" * 5):
    """huggingface_hub's cache layout (blobs, a snapshot of symlinks, refs/main), as a download leaves it."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    (repo / "blobs").mkdir()
    for name, source in files.items():
        blob = repo / "blobs" / f"blob-of-{name}"
        blob.write_bytes(source.read_bytes())
        os.symlink(os.path.relpath(blob, snapshot), snapshot / name)


def test_hub_repo_is_fetched_with_hf_hub_download_and_recorded(tmp_path, monkeypatch):
    import huggingface_hub.constants

    reference = _authors_resnet18(seed=4)
    torch.save(reference.state_dict(), tmp_path / "file.pt")
    cache = tmp_path / "hub"
    _hub_cache_with(cache, "murtylab/topo-resnet18-imagenet", {"all_topo_tau_5.0.pt": tmp_path / "file.pt"})
    _hub_cache_with(cache, "murtylab/topo-vit-b-32-imagenet", {"tau_10.0.pt": tmp_path / "file.pt"})
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))  # offline: served by this cache
    out = tmp_path / "out"
    convert_toponet.main(["murtylab/topo-resnet18-imagenet", "--tau", "5", "--output_dir", str(out)])
    config = json.loads((out / "config.json").read_text())
    assert config[CONVERSION_KEY]["source"] == "murtylab/topo-resnet18-imagenet"
    assert config[CONVERSION_KEY]["checkpoint"] == "all_topo_tau_5.0.pt"
    assert TopoConfig.from_pretrained(out).tau == 5.0
    with pytest.raises(
        ValueError, match="holds a resnet model, but its source says vit"
    ):  # a file under the wrong repo
        convert_toponet.main(["murtylab/topo-vit-b-32-imagenet", "--tau", "10", "--output_dir", str(tmp_path / "x")])


# ---- refusals ------------------------------------------------------------------------------------------------------


class PickledPayload:
    """A custom class: only full unpickling (which can run code) restores it."""

    def __init__(self):
        self.note = "not data"


def test_files_that_need_unpickling_or_are_foreign_are_refused_clearly(tmp_path):
    reference = _authors_resnet18(seed=5)
    custom = tmp_path / "all_topo_tau_1.0.pt"
    torch.save({"model": reference.state_dict(), "extra": PickledPayload()}, custom)
    with pytest.raises(ValueError, match=r"Refusing to load .*all_topo_tau_1\.0\.pt: it holds a .*PickledPayload"):
        convert_file(custom)
    hidden = tmp_path / "tau_10.0.pt"  # the allowed Namespace cannot smuggle a class in either
    torch.save({"model": reference.state_dict(), "args": argparse.Namespace(hook=PickledPayload())}, hidden)
    with pytest.raises(ValueError, match=r"weights_only=True.*arbitrary code.*re-save"):
        load_checkpoint(hidden)

    foreign = tmp_path / "foreign.pt"
    torch.save({"encoder.weight": torch.ones(3, 3), "decoder.bias": torch.zeros(3)}, foreign)
    with pytest.raises(
        ValueError, match=r"foreign\.pt is not a TopoNet checkpoint of a known family.*encoder\.weight"
    ):
        convert_file(foreign)
    with pytest.raises(ValueError, match=r"family='convnext' is not one of"):
        convert_file(custom, family="convnext")
    page = tmp_path / "page.pt"
    page.write_text("<html>Not Found</html>")
    with pytest.raises(ValueError, match=r"page\.pt is truncated or not a PyTorch checkpoint"):
        convert_toponet.main([str(page), "--output_dir", str(tmp_path / "page")])
    with pytest.raises(ValueError, match="finite τ >= 0"):
        convert_file(foreign, tau=float("nan"))


def test_resnet_files_that_do_not_fit_the_architecture_are_refused(tmp_path):
    state_dict = _authors_resnet18(seed=6).state_dict()
    moved = dict(state_dict)
    moved["layer1.0.conv1.blur_filter"] = moved["layer2.0.conv1.blur_filter"][:16]  # a blur where FFCV puts none
    torch.save(moved, tmp_path / "moved.pt")
    with pytest.raises(ValueError, match=r"blur-pool convolutions are not where.*layer1\.0\.conv1\.blur_filter"):
        convert_file(tmp_path / "moved.pt")
    other = dict(state_dict)
    other["layer2.0.conv1.blur_filter"] = torch.ones_like(other["layer2.0.conv1.blur_filter"]) / 9  # a box filter
    torch.save(other, tmp_path / "box.pt")
    with pytest.raises(ValueError, match=r"layer2\.0\.conv1\.blur_filter is not FFCV's blur filter"):
        convert_file(tmp_path / "box.pt")
    truncated = {k: v for k, v in state_dict.items() if not k.startswith("layer3.1.bn2")}
    torch.save(truncated, tmp_path / "truncated.pt")
    with pytest.raises(ValueError, match=r"missing \['resnet\.encoder\.stages\.2\.layers\.1\.layer\.1\.normalization"):
        convert_file(tmp_path / "truncated.pt")


# ---- package data and environment ---------------------------------------------------------------------------------


def test_imagenet_class_names_are_the_1000_sorted_synsets():
    synsets, names = imagenet_synsets(), imagenet_class_names()
    assert len(synsets) == len(names) == 1000 and synsets == sorted(synsets)
    assert (synsets[0], names[0]) == ("n01440764", "tench, Tinca tinca")
    assert (synsets[-1], names[-1]) == ("n15075141", "toilet tissue, toilet paper, bathroom tissue")
    assert names[207] == "golden retriever" and names.count("crane") == 2


@pytest.mark.slow
def test_a_broken_torchvision_does_not_break_conversion_or_loading(tmp_path):
    """torchvision's CUDA wheels fail to import beside a CPU torch; hf_topo neither needs nor breaks on one."""
    fake = tmp_path / "site"
    (fake / "torchvision").mkdir(parents=True)
    (fake / "torchvision" / "__init__.py").write_text(
        'raise RuntimeError("operator torchvision::nms does not exist")\n'
    )
    (fake / "torchvision-0.99.0.dist-info").mkdir()
    (fake / "torchvision-0.99.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: torchvision\nVersion: 0.99.0\n"
    )
    torch.save(_authors_resnet18(seed=7).state_dict(), tmp_path / "all_topo_tau_0.5.pt")
    env = offline_env()
    env["PYTHONPATH"] = str(fake) + os.pathsep + env["PYTHONPATH"]
    script = textwrap.dedent(
        f"""
        import importlib
        try:
            importlib.import_module("torchvision")
        except RuntimeError as err:
            print("torchvision broken:", err)
        from hf_topo.cli import convert_toponet
        convert_toponet.main([{str(tmp_path / "all_topo_tau_0.5.pt")!r}, "--output_dir", {str(tmp_path / "out")!r}])
        from transformers import AutoModelForImageClassification
        print(type(AutoModelForImageClassification.from_pretrained({str(tmp_path / "out")!r})).__name__)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "torchvision broken: operator torchvision::nms does not exist" in result.stdout
    assert result.stdout.strip().endswith("BlurPoolResNetForImageClassification")
