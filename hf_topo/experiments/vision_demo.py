"""The offline vision demo: a ``tiny-resnet`` TopoNet and its τ = 0 twin on real handwritten digits, on CPU.

    hf-topo demo --domain vision                       # outputs/demo_vision/summary.{json,md}, sheet_maps.png
    hf-topo demo --domain vision --tau 10 --max_steps 600

The data set is scikit-learn's ``load_digits`` (UCI's optical recognition of handwritten digits: 1,797 grayscale
8 × 8 images of the digits 0–9 by 43 writers), which ships inside scikit-learn's wheel: nothing is downloaded at run
time, and it is the only real labelled image set a common package installs. scikit-learn is the optional extra
``vision-demo`` (``pip install hf_topo[vision-demo]``). Every fifth image of each class is held out; the rest are
written as PNGs into ``<output_dir>/data/{train,validation}/<digit>/`` and trained on through ``hf-topo pretrain
--train_dir`` (:func:`hf_topo.pretraining.pretrain`), upscaled to ``--image_size`` by the standard augmentation.

Both models share the data, seed and recipe; only τ differs. The demo saves both models (loadable with
``AutoModelForImageClassification``), prints and saves (``summary.json``, ``summary.md``) their held-out top-1 and
top-5 accuracy, TopoLoss and the weight smoothness of their topographic convolutions
(:func:`hf_topo.analysis.smoothness.weight_smoothness`), and ``sheet_maps.png``: the first principal component of
each unit's weights on its cortical sheet, for the last convolution of each stage, TopoNet above its twin.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field

from ..errors import InputError, parameter

logger = logging.getLogger(__name__)

__all__ = ["VisionDemoArguments", "digits_split", "run_vision_demo", "train_vision_model", "write_digits_folders"]


@dataclass
class VisionDemoArguments:
    """The vision demo's recipe and output."""

    output_dir: str = field(default="outputs/demo_vision", metadata={"help": "Where both models and the report go."})
    tau: float = field(default=5.0, metadata={"help": "τ of the TopoNet (its twin has τ=0)."})
    max_steps: int = field(default=300, metadata={"help": "Optimizer steps per model."})
    batch_size: int = field(default=64, metadata={"help": "Images per step (training and evaluation)."})
    image_size: int = field(default=32, metadata={"help": "Side of the model input: the 8×8 digits are upscaled."})
    learning_rate: float = field(default=2e-3, metadata={"help": "Peak learning rate (AdamW, cosine, 5 % warm-up)."})
    seed: int = field(default=0, metadata={"help": "Seed of both models (initialization, data order, augmentation)."})
    data_dir: str | None = field(
        default=None,
        metadata={"help": "A folder with train/ and validation/ class folders to use instead of the digits."},
    )


def digits_split(validation_every: int = 5):
    """scikit-learn's handwritten digits and the demo's fixed split: ``(images, labels, is_validation)``.

    ``images`` ``(1797, 8, 8)`` float64 with the data set's pixel values 0–16, ``labels`` ``(1797,)`` int, and
    ``is_validation`` ``(1797,)`` bool: image ``i`` of each class (in the data set's order) is held out when
    ``i % validation_every == 0`` (364 of 1,797 for 5). The split has no randomness: every run holds out the same
    images.

    Raises:
        ImportError: scikit-learn is not installed (the message says how to install it).
    """
    import numpy as np

    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise ImportError(
            "The handwritten digits ship inside scikit-learn: install it with `pip install 'hf_topo[vision-demo]'` "
            "(or `pip install scikit-learn`)."
        ) from err
    digits = load_digits()
    labels = digits.target.astype(np.int64)
    seen: dict[int, int] = {}
    is_validation = np.zeros(len(labels), dtype=bool)
    for index, label in enumerate(labels.tolist()):
        is_validation[index] = seen.get(label, 0) % validation_every == 0
        seen[label] = seen.get(label, 0) + 1
    return digits.images, labels, is_validation


def write_digits_folders(data_dir: str, validation_every: int = 5) -> tuple[str, str]:
    """scikit-learn's digits as PNG class folders: ``(train_dir, validation_dir)`` under ``data_dir``.

    The split of :func:`digits_split` (image ``i`` of each class goes to validation when ``i % validation_every ==
    0``: 364 of 1,797), the rest to training. Pixel values 0–16 are scaled to 0–255 (8-bit grayscale, converted to
    RGB when loaded).

    Raises:
        ImportError: scikit-learn is not installed (the message says how to install it).
    """
    import numpy as np
    from PIL import Image

    raw, labels, is_validation = digits_split(validation_every)
    images = np.round(raw * (255.0 / 16.0)).astype(np.uint8)  # (1797, 8, 8)
    dirs = {split: os.path.join(data_dir, split) for split in ("train", "validation")}
    for index, (image, label, held_out) in enumerate(zip(images, labels, is_validation, strict=True)):
        folder = os.path.join(dirs["validation" if held_out else "train"], str(int(label)))
        os.makedirs(folder, exist_ok=True)
        Image.fromarray(image, mode="L").save(os.path.join(folder, f"{index:04d}.png"))
    return dirs["train"], dirs["validation"]


def _cpu_seconds() -> float:
    """CPU time used by this process so far (user + system, all threads)."""
    return sum(os.times()[:2])


def train_vision_model(
    output_dir: str,
    train_dir: str,
    validation_dir: str,
    *,
    tau: float,
    max_steps: int = 300,
    batch_size: int = 64,
    image_size: int = 32,
    learning_rate: float = 2e-3,
    seed: int = 0,
    model_preset: str = "tiny-resnet",
    **training_overrides,
) -> dict:
    """Train one image classifier of the vision demo's recipe (AdamW, cosine, 5 % warm-up, weight decay 0.05, no
    checkpoints or evaluation during training, one CPU) on class folders through
    :func:`hf_topo.pretraining.pretrain`; returns its ``metrics.json`` with ``wall_time_s``.

    Args:
        output_dir: where the model is saved.
        train_dir, validation_dir: class folders (e.g. from :func:`write_digits_folders`).
        tau: TopoLoss (or ``topo_loss_type``'s) strength; 0 for the baseline twin.
        max_steps, batch_size, image_size, learning_rate, seed: the recipe; the seed sets the initialization, the
            data order and the augmentation, so two models of one seed differ only in their regularizer.
        model_preset: a vision preset (:data:`hf_topo.presets.VISION_MODEL_PRESETS`).
        **training_overrides: further fields of :class:`~hf_topo.trainer.TopoTrainingArguments` (e.g.
            ``topo_loss_type="weight_similarity"``, ``topo_distance="correlation"``).
    """
    from ..pretraining import DataArguments, ModelArguments, pretrain
    from ..trainer import TopoTrainingArguments

    model_args = ModelArguments(model_preset=model_preset)
    data_args = DataArguments(train_dir=train_dir, validation_dir=validation_dir, image_size=image_size)
    settings = dict(
        output_dir=output_dir, tau=tau, max_steps=max_steps, per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size, learning_rate=learning_rate, lr_scheduler_type="cosine",
        warmup_steps=max(1, max_steps // 20), weight_decay=0.05, logging_steps=max(1, max_steps // 30),
        save_strategy="no", eval_strategy="no", report_to="none", seed=seed, dataloader_num_workers=0, use_cpu=True,
        disable_tqdm=True,
    )  # fmt: skip
    training_args = TopoTrainingArguments(**(settings | training_overrides))
    start = time.perf_counter()
    metrics = pretrain(model_args, data_args, training_args)
    metrics["wall_time_s"] = time.perf_counter() - start
    return metrics


def _train_one(args: VisionDemoArguments, train_dir: str, validation_dir: str, name: str, tau: float) -> dict:
    return train_vision_model(
        os.path.join(args.output_dir, name), train_dir, validation_dir, tau=tau, max_steps=args.max_steps,
        batch_size=args.batch_size, image_size=args.image_size, learning_rate=args.learning_rate, seed=args.seed,
    )  # fmt: skip


def sheet_measures(model_dir: str) -> dict:
    """A saved vision TopoNet's topographic layers: weight smoothness (paper's and robust score) per layer and their
    means, and the weight-PC1 map of the last convolution of each stage (``{layer: (h, w) list}``)."""
    from transformers import AutoModelForImageClassification

    from ..analysis.maps import weight_pc1_map
    from ..analysis.smoothness import weight_smoothness
    from ..config import TopoConfig
    from ..targets import short_layer_name
    from ..topo_regularizer import TopoRegularizer

    model = AutoModelForImageClassification.from_pretrained(model_dir)
    layers = TopoRegularizer(TopoConfig.from_pretrained(model)).layers(model)
    per_layer = {}
    for layer in layers:
        result = weight_smoothness(layer)
        per_layer[short_layer_name(layer.name)] = {
            "smoothness": result.score,
            "robust_smoothness": result.robust_score,
        }
    last_of_stage: dict[str, object] = {}
    for layer in layers:  # ordered: the last one seen of a stage is its last convolution
        if ".shortcut." not in layer.name:
            last_of_stage[layer.name.split(".layers.")[0]] = layer
    maps = {short_layer_name(layer.name): weight_pc1_map(layer).tolist() for layer in last_of_stage.values()}
    mean = {key: sum(v[key] for v in per_layer.values()) / len(per_layer) for key in next(iter(per_layer.values()))}
    return {"per_layer": per_layer, "mean": mean, "pc1_maps": maps}


def plot_sheet_maps(measures: dict[str, dict], taus: dict[str, float], path: str) -> str:
    """``sheet_maps.png``: one row per model, one column per stage (weight PC1 on the sheet)."""
    import numpy as np

    from ..analysis.plots import pyplot, save_figure

    plt = pyplot()
    n_cols = max(len(m["pc1_maps"]) for m in measures.values())
    fig, axes = plt.subplots(len(measures), n_cols, figsize=(3.2 * n_cols, 3.0 * len(measures)), squeeze=False)
    for row, (name, m) in enumerate(measures.items()):
        for col, (layer, pc1) in enumerate(m["pc1_maps"].items()):
            ax = axes[row][col]
            image = ax.imshow(np.asarray(pc1), cmap="RdBu_r")
            stage = layer.split(".layers.")[0].replace("stages.", "stage ")
            ax.set_title(f"{name} τ={taus[name]:g}\n{stage}, last conv: weight PC1", fontsize=9)
            ax.axis("off")
            fig.colorbar(image, ax=ax, fraction=0.04)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


def run_vision_demo(args: VisionDemoArguments) -> dict:
    """Write the digits, train the TopoNet and its twin, measure and plot both; returns the summary (also written to
    ``summary.json`` and, as a table, ``summary.md`` in ``args.output_dir``)."""
    for name in ("baseline", "toponet"):  # refused before anything is trained, never overwritten
        previous = os.path.join(args.output_dir, name)
        if os.path.isdir(previous) and os.listdir(previous):
            raise InputError(
                f"{os.path.abspath(previous)} holds a previous vision demo run; pass another "
                f"{parameter('output_dir')} or remove that folder to run the demo again."
            )
    start, cpu_start = time.perf_counter(), _cpu_seconds()
    if args.data_dir is not None:
        data_dir, data_name = args.data_dir, f"the image folders of {os.path.abspath(args.data_dir)}"
        train_dir, validation_dir = os.path.join(data_dir, "train"), os.path.join(data_dir, "validation")
    else:
        data_dir = os.path.join(args.output_dir, "data")
        data_name = "sklearn.datasets.load_digits (1,797 8x8 digits, 10 classes; every 5th image per class held out)"
        if os.path.isdir(data_dir) and os.listdir(data_dir):  # written by an earlier demo into this folder
            train_dir, validation_dir = os.path.join(data_dir, "train"), os.path.join(data_dir, "validation")
        else:
            train_dir, validation_dir = write_digits_folders(data_dir)
    logger.info("Data: %s in %s", data_name, os.path.abspath(data_dir))
    results: dict[str, dict] = {}
    for name, tau in (("baseline", 0.0), ("toponet", args.tau)):
        logger.info("=== Training %s (tiny-resnet, τ=%g, %d steps) ===", name, tau, args.max_steps)
        results[name] = _train_one(args, train_dir, validation_dir, name, tau)
    measures = {name: sheet_measures(m["output_dir"]) for name, m in results.items()}
    figure = plot_sheet_maps(
        measures, {n: m["tau"] for n, m in results.items()}, os.path.join(args.output_dir, "sheet_maps.png")
    )

    keep = ("tau", "eval_accuracy", "eval_top5_accuracy", "eval_loss", "topo_loss", "topo_loss_per_layer")
    summary: dict = {"data": data_name}
    for name, m in results.items():
        summary[name] = {k: m[k] for k in keep if k in m}
        summary[name].update(
            weight_smoothness=measures[name]["mean"]["smoothness"],
            weight_smoothness_robust=measures[name]["mean"]["robust_smoothness"],
            weight_smoothness_per_layer=measures[name]["per_layer"],
            wall_time_s=m["wall_time_s"],
            n_eval_images=m["n_eval_images"],
            output_dir=m["output_dir"],
        )
    summary["figures"] = [os.path.abspath(figure)]
    summary["total_wall_time_s"] = time.perf_counter() - start
    summary["total_cpu_time_s"] = _cpu_seconds() - cpu_start  # all threads: the machine's load does not change it
    summary["settings"] = {k: getattr(args, k) for k in VisionDemoArguments.__dataclass_fields__}
    rows = [
        "| model | τ | top-1 accuracy | top-5 accuracy | TopoLoss | weight smoothness (robust) | train time (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in results:
        s = summary[name]
        rows.append(
            f"| {name} | {s['tau']:g} | {s['eval_accuracy']:.4f} | "
            f"{format(s['eval_top5_accuracy'], '.4f') if 'eval_top5_accuracy' in s else 'n/a'} | "
            f"{s['topo_loss']:.4f} | {s['weight_smoothness']:.3f} ({s['weight_smoothness_robust']:.3f}) | "
            f"{s['wall_time_s']:.0f} |"
        )
    rows += [
        "",
        f"Held-out: {summary['baseline']['n_eval_images']} images. Total time {summary['total_wall_time_s']:.0f} s "
        f"(CPU time of all threads: {summary['total_cpu_time_s']:.0f} s). "
        f"Sheet maps: {os.path.abspath(figure)}",
    ]
    with open(os.path.join(args.output_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    with open(os.path.join(args.output_dir, "summary.md"), "w") as f:
        f.write("\n".join(rows) + "\n")
    summary["table"] = rows
    return summary
