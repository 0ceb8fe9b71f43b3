"""Downsampling vision TopoNets' convolutions (A.5 for Conv2d): accuracy against the parameters kept, TopoNet vs twin.

    # the vision demo's two models (tiny-resnet on scikit-learn's digits), two seeds
    hf-topo demo --domain vision --output_dir runs/vision_seed0 --seed 0
    hf-topo demo --domain vision --output_dir runs/vision_seed1 --seed 1
    python benchmarks/bench_downsampling_vision.py \\
        --models toponet_seed0=runs/vision_seed0/toponet baseline_seed0=runs/vision_seed0/baseline \\
                 toponet_seed1=runs/vision_seed1/toponet baseline_seed1=runs/vision_seed1/baseline \\
        --eval_dir runs/vision_seed0/data/validation --factors 2 3

For every model and factor φ, the model's topographic convolutions (its record's sheets) are downsampled φ × φ on
their sheets twice, with the paper's layer (``gains=False``) and with closed-form per-unit gains (the default), and
every variant is scored on the held-out image folder with the model's own evaluation transform (resize + centre crop,
its image processor's mean and std). Also reported: L1 unstructured pruning of the same layers, removing as many
weights as the downsampling does (the paper's matched comparison, Fig. 4A). Each downsampled model is saved and
reloaded with ``AutoModelForImageClassification`` before it is scored, so the numbers are those of the files.
Results: ``benchmarks/results/bench_downsampling_vision.json`` and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import torch
from _common import default_output
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification

import hf_topo
from hf_topo import TopoConfig, TopoRegularizer, downsample_model, parameter_count
from hf_topo.vision.augmentation import EvalTransform


def load_folder(
    eval_dir: str, transform: EvalTransform, label2id: dict[str, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image of ``eval_dir``'s class folders as ``(pixel_values, labels)``, labels by the model's names."""
    images, labels = [], []
    for name in sorted(os.listdir(eval_dir)):
        folder = os.path.join(eval_dir, name)
        if not os.path.isdir(folder):
            continue
        if name not in label2id:
            raise ValueError(f"{folder}: class {name!r} is not one of the model's labels {sorted(label2id)}.")
        for file in sorted(os.listdir(folder)):
            with Image.open(os.path.join(folder, file)) as image:
                images.append(transform(image))
            labels.append(label2id[name])
    return torch.stack(images), torch.tensor(labels)


@torch.no_grad()
def accuracy(model, pixel_values: torch.Tensor, labels: torch.Tensor, batch_size: int = 128) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(labels), batch_size):
        logits = model(pixel_values=pixel_values[start : start + batch_size]).logits
        correct += (logits.argmax(-1) == labels[start : start + batch_size]).sum().item()
    return correct / len(labels)


def pruned_copy(model, layers, n_remove: int):
    """``model`` with its ``n_remove`` smallest-magnitude weights among ``layers``' set to zero (global L1)."""
    import copy

    pruned = copy.deepcopy(model)
    modules = dict(pruned.named_modules())
    weights = [modules[layer.name].weight for layer in layers]
    magnitudes = torch.cat([w.detach().abs().flatten() for w in weights])
    if n_remove <= 0:
        return pruned
    threshold = magnitudes.kthvalue(n_remove).values
    with torch.no_grad():
        for weight in weights:
            weight[weight.abs() <= threshold] = 0.0
    return pruned


def reloaded(model):
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        return AutoModelForImageClassification.from_pretrained(folder).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", required=True, help="NAME=DIR of saved image classifiers")
    parser.add_argument("--eval_dir", required=True, help="held-out folder of class subfolders")
    parser.add_argument("--factors", nargs="+", type=float, default=[2.0, 3.0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default=default_output("bench_downsampling_vision.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    results = []
    for entry in args.models:
        name, _, folder = entry.partition("=")
        model = AutoModelForImageClassification.from_pretrained(folder).eval()
        processor = AutoImageProcessor.from_pretrained(folder)
        size = getattr(processor.size, "height", None) or processor.size.shortest_edge  # ViT: height; ResNet: edge
        transform = EvalTransform(size, processor.image_mean, processor.image_std)
        pixel_values, labels = load_folder(args.eval_dir, transform, model.config.label2id)
        topo = TopoConfig.from_pretrained(model)
        layers = [layer for layer in TopoRegularizer(topo).layers(model) if layer.role == "target"]
        layer_weights = sum(layer.module.weight.numel() for layer in layers)
        row = {
            "model": name,
            "folder": os.path.abspath(folder),
            "tau": topo.tau,
            "topo_loss": TopoRegularizer(topo).evaluate(model)[0].item(),
            "layers": len(layers),
            "parameters": parameter_count(model),
            "accuracy": accuracy(model, pixel_values, labels),
            "images": len(labels),
            "factors": {},
        }
        for factor in args.factors:
            point = {}
            for variant, gains in (("paper", False), ("gains", True)):
                small = reloaded(downsample_model(model, factor, gains=gains))
                point[variant] = accuracy(small, pixel_values, labels)
                point[f"parameters_{variant}"] = parameter_count(small)
            removed = row["parameters"] - point["parameters_paper"]
            point["layer_weights_kept"] = 1 - removed / layer_weights
            point["pruned_matched"] = accuracy(pruned_copy(model, layers, removed), pixel_values, labels)
            row["factors"][f"{factor:g}"] = point
        results.append(row)
        print(f"{name}: done ({time.perf_counter() - start:.0f} s)", flush=True)
    output = {
        "benchmark": "accuracy of vision TopoNets and their τ=0 twins after downsampling their convolutions (A.5)",
        "command": f"python benchmarks/bench_downsampling_vision.py --models {' '.join(args.models)} "
        f"--eval_dir {args.eval_dir} --factors {' '.join(f'{f:g}' for f in args.factors)}",
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "hf_topo_version": hf_topo.__version__,
        "wall_time_s": time.perf_counter() - start,
        "models": results,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(output, f, indent=2)
    print(
        "\n| model | τ | TopoLoss | accuracy | φ | layer weights kept | paper's layer | + gains | L1 pruning, same count |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in results:
        for factor, point in row["factors"].items():
            print(
                f"| {row['model']} | {row['tau']:g} | {row['topo_loss']:.3f} | {row['accuracy']:.4f} | {factor} | "
                f"{100 * point['layer_weights_kept']:.1f} % | {point['paper']:.4f} | {point['gains']:.4f} | "
                f"{point['pruned_matched']:.4f} |"
            )
    print(f"\nSaved {args.output}")


if __name__ == "__main__":
    main()
