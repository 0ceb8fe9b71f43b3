"""analyze_model / report / summary / card / hf-topo analyze on image classifiers, against computations by hand.

The unit responses are read here with forward hooks (a Conv2d channel's spatial mean, a ViT feature's token mean),
the accuracy from the logits, the pruning with ``torch.nn.utils.prune.l1_unstructured``, Moran's I with NumPy.
"""

import copy
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from _images import write_image_folder
from _references import morans_i_numpy
from torch.nn.utils import prune

from hf_topo.analysis import (
    AnalysisSettings,
    AnalysisSummary,
    ImageBatch,
    SweepSummary,
    analyze_model,
    effective_dimensionality,
    evaluate_accuracy,
    pruning_sweep,
    smoothness,
    topographic_layers,
    unit_weights,
    write_report,
)
from hf_topo.config import TopoConfig
from hf_topo.downsampling import downsample_model, parameter_count
from hf_topo.hub.card import analysis_rows, toponet_card
from hf_topo.presets import TARGET_PRESETS
from hf_topo.vision.models import build_vision_model

CLASSES = ["c0", "c1", "c2"]
CURVE = dict(max_pairs=2000, min_pairs_per_bin=1, n_bins=8, near_distance=2.0, seed=0)


def _model(preset: str, seed: int = 0):
    """A tiny vision model with its TopoConfig attached (the model's own topography, as a trained TopoNet has)."""
    torch.manual_seed(seed)
    model = build_vision_model(preset, CLASSES, image_size=32).eval()
    family = "resnet" if "resnet" in preset else "vit"
    TopoConfig(target_modules=TARGET_PRESETS[family], tau=1.0).attach_to(model.config)
    return model


def _images(n: int = 30, seed: int = 0) -> ImageBatch:
    generator = torch.Generator().manual_seed(seed)
    return ImageBatch(torch.randn(n, 3, 32, 32, generator=generator), torch.arange(n) % 3)


def _settings(**overrides) -> AnalysisSettings:
    values = dict(
        batch_size=7, max_pairs=2000, min_pairs_per_bin=1, n_bins=8, morans_permutations=19, pruning_fractions=[],
        noise_sigmas=[], downsampling_factors=[], sweeps=["pruning", "noise", "downsampling"],
    )  # fmt: skip
    return AnalysisSettings(**(values | overrides))


@torch.no_grad()
def _responses_by_hand(model, images: ImageBatch, layers) -> dict[str, torch.Tensor]:
    """Each layer's output read with a plain forward hook and summarised per image: the mean over space (Conv2d,
    (B, C, H, W)) or over tokens (ViT Linear, (B, T, F))."""
    outputs, handles = {}, []
    for layer in layers:
        hook = lambda module, args, out, name=layer.name: outputs.__setitem__(name, out)  # noqa: E731
        handles.append(layer.module.register_forward_hook(hook))
    logits = model(pixel_values=images.pixel_values).logits
    for handle in handles:
        handle.remove()
    reduce = {4: (2, 3), 3: (1,)}
    responses = {name: out.mean(dim=reduce[out.ndim]).float() for name, out in outputs.items()}
    return responses | {"logits": logits}


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["tiny-resnet", "tiny-vit"])
def test_activation_measures_equal_the_functions_on_responses_read_by_hand(preset):
    model = _model(preset)
    images = _images()
    analysis = analyze_model(model, images=images, settings=_settings(), label="topo", progress=False)
    layers = topographic_layers(model)
    by_hand = _responses_by_hand(model, images, layers)
    assert analysis.perplexity is None and analysis.n_activation_samples == len(images)
    assert analysis.accuracy == pytest.approx((by_hand["logits"].argmax(-1) == images.labels).double().mean().item())
    assert [layer.name for layer in analysis.layers] == [layer.name for layer in layers]
    for layer in layers:
        responses = by_hand[layer.name]
        assert responses.shape == (len(images), layer.sheet.height * layer.sheet.width)
        expected = smoothness(responses, layer.sheet, **CURVE)
        assert analysis.smoothness[layer.name].score == pytest.approx(expected.score, abs=1e-5)
        assert analysis.smoothness[layer.name].robust_score == pytest.approx(expected.robust_score, abs=1e-5)
        assert analysis.effective_dimensionality[layer.name] == pytest.approx(
            effective_dimensionality(responses), rel=1e-4
        )
        maps = responses.reshape(len(images), layer.sheet.height, layer.sheet.width).double().numpy()
        assert analysis.morans_i[layer.name] == pytest.approx(np.mean([morans_i_numpy(m) for m in maps]), abs=1e-5)
        assert 0.0 <= analysis.morans_tests[layer.name].p_value <= 1.0
        assert layer.name in analysis.weight_smoothness  # the units' weights: kernels (Conv2d) or rows (Linear)
    assert analysis.skipped == {}


def test_a_conv_units_weight_is_its_flattened_kernel_in_sheet_order():
    model = _model("tiny-resnet")
    layer = topographic_layers(model)[3]  # an 8 × 16 sheet: rows and columns differ
    conv = layer.module
    assert isinstance(conv, torch.nn.Conv2d) and (layer.sheet.height, layer.sheet.width) == (8, 16)
    weights = unit_weights(layer)
    assert weights.shape == (conv.out_channels, conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1])
    torch.testing.assert_close(weights, conv.weight.detach().reshape(conv.out_channels, -1))


@torch.no_grad()
def _accuracy_by_hand(model, images: ImageBatch) -> float:
    return (model(pixel_values=images.pixel_values).logits.argmax(-1) == images.labels).double().mean().item()


@pytest.mark.parametrize("preset", [pytest.param("tiny-resnet", marks=pytest.mark.slow), "tiny-vit"])
def test_pruning_sweep_is_scored_by_accuracy_of_the_model_pruned_with_torch(preset):
    model = _model(preset)
    images = _images(24, seed=3)
    layers = topographic_layers(model)
    sweep = pruning_sweep(model, images, [0.0, 0.3, 0.7], layers, batch_size=5, progress=False)
    assert sweep.metric == "accuracy" and sweep.reference == pytest.approx(_accuracy_by_hand(model, images))
    for fraction, score, delta in zip(sweep.x, sweep.score, sweep.delta, strict=True):
        pruned = copy.deepcopy(model)
        for layer in topographic_layers(pruned):
            prune.l1_unstructured(layer.module, "weight", amount=fraction)
        assert score == pytest.approx(_accuracy_by_hand(pruned, images)), fraction
        assert delta == pytest.approx(score - sweep.reference)
    assert sweep.accuracy == sweep.score and sweep.to_dict()["delta_accuracy"] == sweep.delta
    with pytest.raises(AttributeError, match="scores accuracy"):
        sweep.perplexity  # noqa: B018
    for before, after in zip(model.state_dict().values(), _model(preset).state_dict().values(), strict=True):
        torch.testing.assert_close(before, after)  # the sweep restored the weights


@torch.no_grad()
def test_a_resnet_with_every_topographic_kernel_pruned_predicts_one_class_for_all_images():
    model = _model("tiny-resnet")
    images = _images(30, seed=5)
    layers = topographic_layers(model)  # every convolution of every residual block
    sweep = pruning_sweep(model, images, [1.0], layers, progress=False)
    pruned = copy.deepcopy(model)
    for layer in topographic_layers(pruned):
        layer.module.weight.zero_()
    predictions = pruned(pixel_values=images.pixel_values).logits.argmax(-1)
    assert (predictions == predictions[0]).all()  # the blocks' outputs no longer depend on the image
    assert sweep.score[0] == pytest.approx((images.labels == predictions[0]).double().mean().item())
    assert sweep.score[0] == pytest.approx(1 / 3)  # labels cycle over the 3 classes: a constant guess is chance


@pytest.mark.slow
def test_downsampling_sweep_points_are_the_downsampled_models_accuracy_and_size():
    model = _model("tiny-resnet")
    images = _images(24, seed=7)
    analysis = analyze_model(
        model, images=images, settings=_settings(downsampling_factors=[1, 2], sweeps=["downsampling"]), progress=False
    )
    targets = [layer.name for layer in analysis.layers]
    for key, gains in (("downsampling", True), ("downsampling_paper", False)):
        sweep = analysis.sweeps[key]
        assert sweep.metric == "accuracy" and sweep.x == [1.0, 2.0]
        smaller = downsample_model(model, factors=(2, 2), target_modules=targets, gains=gains)
        assert sweep.score[1] == pytest.approx(_accuracy_by_hand(smaller.eval(), images))
        assert sweep.parameters_kept[1] == pytest.approx(parameter_count(smaller) / parameter_count(model))
        assert sweep.score[0] == pytest.approx(analysis.accuracy)  # φ = 1 changes nothing (per-unit gains of 1)


@pytest.mark.slow
def test_report_summary_and_card_of_an_image_classifier(tmp_path):
    model, baseline = _model("tiny-resnet"), _model("tiny-resnet", seed=1)
    images = _images(18)
    settings = _settings(pruning_fractions=[0.0, 0.5], noise_sigmas=[0.0, 0.5], downsampling_factors=[1, 2])
    settings.sweeps = list(settings.sweeps) + ["substitution"]
    topo = analyze_model(model, images=images, settings=settings, label="TopoNet", progress=False)
    base = analyze_model(
        baseline, images=images, settings=settings, label="baseline", progress=False,
        topography=TopoConfig.from_pretrained(model),
    )  # fmt: skip
    report = write_report(topo, tmp_path, base)
    assert set(report["figures"]) == {"sheet_maps", "smoothness_curve", "pruning", "noise", "downsampling"}
    assert all((tmp_path / name).stat().st_size > 1000 for name in report["figures"].values())
    assert "substitution" in report["model"]["skipped"]  # token perturbations do not apply to images
    summary = AnalysisSummary.from_report(json.loads((tmp_path / "report.json").read_text()))
    assert summary.accuracy == pytest.approx(topo.accuracy) and summary.perplexity is None
    assert summary.sweeps["pruning"].metric == "accuracy"
    pruned = topo.sweeps["pruning"]
    assert summary.delta("pruning", 0.5) == pytest.approx(pruned.score[1] - pruned.score[0])
    assert summary.delta_accuracy("pruning", 0.5) == summary.delta("pruning", 0.5)
    assert summary.delta_perplexity("pruning", 0.5) is None
    flat = report["summary"]
    assert flat["pruned_50pct_delta_accuracy"] == pytest.approx(summary.delta("pruning", 0.5))
    assert "pruned_50pct_delta_perplexity" not in flat and flat["accuracy"] == pytest.approx(topo.accuracy)
    assert report["model"]["sweeps"]["pruning"]["reference_accuracy"] == pytest.approx(topo.accuracy)
    rows = dict(analysis_rows(summary))
    assert rows["top-1 accuracy on the analysis images"] == f"{topo.accuracy:.4g}"
    pruning_row = next(label for label in rows if "L1 pruning" in label)
    assert pruning_row.startswith("Δ top-1 accuracy") and "50 %" in rows[pruning_row]
    assert not any("perplexity" in label for label in rows)
    card = toponet_card(
        model, results={"analysis": summary}, figures=[f"figures/{f}" for f in report["figures"].values()]
    )
    assert (
        "Top-1 accuracy under L1 pruning of the weights" in card.text and "Δ top-1 accuracy, L1 pruning" in card.text
    )
    assert "perplexity" not in card.text.lower()


def test_a_summary_written_before_the_metric_was_named_reads_as_perplexity():
    old = {"kind": "pruning", "x_label": "f", "points": [{"x": 0.5, "perplexity": 12.0, "delta_perplexity": 2.0}]}
    sweep = SweepSummary.from_dict(old)
    assert sweep.metric == "perplexity" and sweep.points[0].score == 12.0 and sweep.points[0].delta == 2.0
    legacy_result = {"kind": "noise", "x_label": "σ", "x": [0.0], "perplexity": [9.0], "delta_perplexity": [0.0]}
    assert SweepSummary.from_sweep(legacy_result).points[0].score == 9.0
    with pytest.raises(ValueError, match="metric"):
        SweepSummary("pruning", "f", [], metric="bleu")


def test_bad_image_inputs_are_refused():
    model = _model("tiny-vit")
    with pytest.raises(ValueError, match="exactly one input"):
        analyze_model(model, progress=False)
    with pytest.raises(ValueError, match="one class index per image"):
        ImageBatch(torch.zeros(3, 3, 32, 32), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="stimuli applies to language models"):
        analyze_model(model, images=_images(4), stimuli=(["a"], ["b"]), progress=False)
    with pytest.raises(TypeError, match="pixel_values"):
        analyze_model(model, images=torch.zeros(4, 3, 32, 32), progress=False)
    images = _images(6, seed=2)
    rows = [
        {"pixel_values": p, "labels": int(label)} for p, label in zip(images.pixel_values, images.labels, strict=True)
    ]
    from_rows = analyze_model(model, images=rows, settings=_settings(morans_permutations=0), progress=False)
    assert from_rows.accuracy == pytest.approx(evaluate_accuracy(model, images)) == _accuracy_by_hand(model, images)


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    from transformers.models.convnext.image_processing_pil_convnext import ConvNextImageProcessorPil

    root = tmp_path_factory.mktemp("vision-analyze")
    paths = {}
    for name, seed in (("toponet", 0), ("baseline", 1)):
        _model("tiny-resnet", seed).save_pretrained(root / name)
        ConvNextImageProcessorPil(size={"shortest_edge": 32}, crop_pct=0.875).save_pretrained(root / name)
        paths[name] = root / name
    paths["images"] = write_image_folder(root / "images", classes=3, per_class=4, size=(40, 36))
    return paths


READ_REPORT = """
import json, os, sys
report = json.load(open(sys.argv[1]))
import hf_topo
from transformers import AutoModelForImageClassification
from hf_topo.analysis import AnalysisSummary
model, baseline = (AnalysisSummary.from_report(report, which) for which in ("model", "baseline"))
smaller_dir = report["metadata"]["downsampled"]["path"]
smaller = AutoModelForImageClassification.from_pretrained(smaller_dir)
print(json.dumps({"accuracy": model.accuracy, "baseline_accuracy": baseline.accuracy, "metric":
    model.sweeps["pruning"].metric, "delta": model.delta("pruning", 0.5), "n": model.n_activation_samples,
    "layers": sorted(report["model"]["layers"]), "figures": report["figures"], "images": report["metadata"]["images"],
    "smoothness": {k: v["smoothness"] for k, v in report["model"]["layers"].items()},
    "downsampled": {"parameters": sum(p.numel() for p in smaller.parameters()), "recorded":
    report["metadata"]["downsampled"]["parameters"], "kept": report["metadata"]["downsampled"]["parameters_kept"],
    "sweep_kept": model.sweeps["downsampling"].at(2.0).parameters_kept,
    "processor": os.path.exists(os.path.join(smaller_dir, "preprocessor_config.json"))}}))
"""


@pytest.mark.slow
def test_hf_topo_analyze_on_an_image_folder_end_to_end(saved_models, tmp_path):
    from PIL import Image
    from transformers import AutoModelForImageClassification

    from hf_topo.vision.augmentation import EvalTransform

    out = tmp_path / "report"
    command = [
        "hf-topo", "analyze", "--model", str(saved_models["toponet"]), "--baseline", str(saved_models["baseline"]),
        "--image_dir", str(saved_models["images"]), "--max_images", "9", "--output_dir", str(out),
        "--batch_size", "4", "--max_pairs", "2000", "--min_pairs_per_bin", "1", "--n_bins", "8",
        "--morans_permutations", "9", "--pruning_fractions", "0", "0.5", "--noise_sigmas", "0", "0.5",
        "--downsampling_factors", "1", "2", "--sweeps", "pruning", "noise", "downsampling", "--progress", "false",
        "--save_downsampled", "2",
    ]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy(), timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "| accuracy |" in run.stdout and "Δ accuracy, pruning 50 %" in run.stdout
    read = subprocess.run(
        [sys.executable, "-c", READ_REPORT, str(out / "report.json")], capture_output=True, text=True, timeout=300
    )
    assert read.returncode == 0, read.stderr[-3000:]
    found = json.loads(read.stdout)
    # by hand: the first 3 images of each class (--max_images 9, classes in turn), the eval transform with the saved
    # processor's normalisation, the model
    saved = json.loads((saved_models["toponet"] / "preprocessor_config.json").read_text())
    transform = EvalTransform(32, saved["image_mean"], saved["image_std"])
    files = [(saved_models["images"] / f"c{k}" / f"{i}.png", k) for k in range(3) for i in range(3)]
    pixels = torch.stack([transform(Image.open(path)) for path, _ in files])
    labels = torch.tensor([k for _, k in files])
    model = AutoModelForImageClassification.from_pretrained(saved_models["toponet"]).eval()
    assert found["accuracy"] == pytest.approx(_accuracy_by_hand(model, ImageBatch(pixels, labels)))
    assert found["metric"] == "accuracy" and found["n"] == 9 and found["baseline_accuracy"] is not None
    assert found["images"]["n_images"] == 9 and found["images"]["classes"] == CLASSES
    assert set(found["figures"]) == {"sheet_maps", "smoothness_curve", "pruning", "noise", "downsampling"}
    assert all((out / name).exists() for name in found["figures"].values())
    downsampled = found["downsampled"]  # saved with its processor, loaded in a fresh process, the size recorded
    assert downsampled["processor"] and downsampled["parameters"] == downsampled["recorded"] < parameter_count(model)
    assert downsampled["kept"] == pytest.approx(downsampled["sweep_kept"])  # the sweep's φ = 2 model (gains)
    layers = topographic_layers(model)
    responses = _responses_by_hand(model, ImageBatch(pixels, labels), layers)
    for layer in layers:
        expected = smoothness(responses[layer.name], layer.sheet, **CURVE).score
        assert found["smoothness"][layer.name] == pytest.approx(expected, abs=1e-4)


def test_cli_refuses_what_an_image_classifier_cannot_take(saved_models, tmp_path):
    from hf_topo.analysis.run import AnalyzeArguments, analyze_saved_models
    from hf_topo.errors import InputError
    from hf_topo.vision.analyze import analyze_saved_image_models

    def arguments(**kwargs):
        return AnalyzeArguments(model=str(saved_models["toponet"]), output_dir=str(tmp_path), progress=False, **kwargs)

    with pytest.raises(InputError, match="image classifier: analyse it on images"):
        analyze_saved_models(arguments(text_file=str(tmp_path / "x.txt")), _settings())
    with pytest.raises(InputError, match="exactly one input"):
        analyze_saved_image_models(arguments(text_file="x.txt", image_dir=str(saved_models["images"])), _settings())
    with pytest.raises(InputError, match="apply to language models only"):
        analyze_saved_image_models(arguments(image_dir=str(saved_models["images"]), blimp_dir="blimp"), _settings())
    unknown = write_image_folder(tmp_path / "other", classes=2, per_class=1)
    (unknown / "c1").rename(unknown / "zebra")
    with pytest.raises(InputError, match="classes the model does not know"):
        analyze_saved_image_models(arguments(image_dir=str(unknown)), _settings())


@pytest.mark.parametrize("preset", ["tiny-resnet", "tiny-vit"])
def test_load_analysis_images_reads_the_folder_with_the_saved_processor(preset, tmp_path):
    from PIL import Image
    from transformers.models.convnext.image_processing_pil_convnext import ConvNextImageProcessorPil
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    from hf_topo.vision.analyze import load_analysis_images
    from hf_topo.vision.augmentation import EvalTransform

    model = _model(preset)
    if preset == "tiny-vit":
        processor = ViTImageProcessorPil(
            size={"height": 32, "width": 32}, image_mean=[0.1, 0.2, 0.3], image_std=[0.3] * 3
        )
    else:
        processor = ConvNextImageProcessorPil(size={"shortest_edge": 32}, image_mean=[0.4] * 3, image_std=[0.2] * 3)
    processor.save_pretrained(tmp_path / "model")
    folder = write_image_folder(tmp_path / "images", classes=3, per_class=3, size=(50, 40))
    images = load_analysis_images(str(folder), model, str(tmp_path / "model"), max_images=5)
    transform = EvalTransform(32, processor.image_mean, processor.image_std)  # by hand: classes in turn, sorted files
    files = [("c0", 0), ("c1", 0), ("c2", 0), ("c0", 1), ("c1", 1)]
    expected = torch.stack([transform(Image.open(folder / c / f"{i}.png")) for c, i in files])
    torch.testing.assert_close(images.pixel_values, expected)
    assert images.labels.tolist() == [CLASSES.index(c) for c, _ in files]


def test_imagenet_synset_folders_map_to_their_class_index(tmp_path):
    from hf_topo.vision.analyze import load_analysis_images
    from hf_topo.vision.imagenet import imagenet_class_names, imagenet_synsets

    torch.manual_seed(0)
    model = build_vision_model("tiny-resnet", imagenet_class_names(), image_size=32)
    folder = write_image_folder(tmp_path / "images", classes=2, per_class=1)
    (folder / "c0").rename(folder / imagenet_synsets()[7])
    (folder / "c1").rename(folder / "goldfish, Carassius auratus")  # a label name, index 1
    images = load_analysis_images(str(folder), model, image_size=32)
    assert sorted(images.labels.tolist()) == [1, 7]
