"""``hf-topo analyze`` on image classifiers: the images of a class-subfolder folder as the model sees them, and the
run that analyses the model (and its baseline) on them.

:func:`load_analysis_images` reads a folder of class subfolders (checked by :func:`hf_topo.vision.data.check_image_folder`)
with the model's evaluation transform (:class:`~hf_topo.vision.augmentation.EvalTransform`: shorter side to
``size / 0.875``, central ``size × size`` crop, the normalisation of the image processor saved with the model), the
way its validation images were read in training. A class folder is mapped to the model's label of the same name
(``id2label``, case-insensitive; for a model with ImageNet's 1000 classes a WordNet synset id such as ``n01440764``
also names its class), so the accuracy is the model's own top-1 accuracy on those images.
:func:`analyze_saved_image_models` is what ``hf-topo analyze --image_dir`` runs
(:func:`hf_topo.analysis.analyze_model` with ``images=``, then :func:`hf_topo.analysis.write_report`).

    from transformers import AutoModelForImageClassification
    from hf_topo.analysis import AnalysisSettings, analyze_model
    from hf_topo.vision.analyze import load_analysis_images

    model = AutoModelForImageClassification.from_pretrained("outputs/resnet-topo")
    images = load_analysis_images("images/val", model, "outputs/resnet-topo", max_images=512)
    analysis = analyze_model(model, images=images, settings=AnalysisSettings(pruning_fractions=[0, 0.5, 0.9]))
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict

import torch
from PIL import Image
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoImageProcessor, AutoModelForImageClassification

from ..analysis.activations import topographic_layers
from ..analysis.image_inputs import ImageBatch
from ..analysis.report import AnalysisSettings, analyze_model, write_report
from ..analysis.run import AnalyzeArguments, check_analyze_arguments, is_image_classifier, save_downsampled
from ..config import TopoConfig
from ..errors import InputError, parameter
from ..loading import check_model_source
from .augmentation import EvalTransform
from .data import check_image_folder, image_processor_for
from .imagenet import imagenet_synsets

__all__ = ["eval_transform_for", "load_analysis_images", "analyze_saved_image_models"]

logger = logging.getLogger(__name__)


def eval_transform_for(model: nn.Module, model_source: str | None = None, image_size: int | None = None):
    """The :class:`~hf_topo.vision.augmentation.EvalTransform` of ``model``: the size and normalisation of the image
    processor saved with it (``model_source``), else ``image_size`` (default: ``config.image_size``, ViT's) with the
    family's normalisation (:func:`hf_topo.vision.data.image_processor_for`)."""
    size = image_size
    if size is None and model_source is not None:
        try:
            saved = AutoImageProcessor.from_pretrained(model_source)
            sizes = dict(saved.size)
            size = sizes.get("shortest_edge") or sizes.get("height")
        except (OSError, ValueError, AttributeError, TypeError):
            size = None
    if size is None:
        size = getattr(model.config, "image_size", None)
    if size is None:
        raise InputError(
            f"The input size of {model_source or type(model).__name__} is unknown (no image processor saved with it, "
            f"no config.image_size): pass {parameter('image_size', 'PIXELS')}, the size it was trained on."
        )
    processor = image_processor_for(model, int(size), model_source)
    return EvalTransform(int(size), processor.image_mean, processor.image_std)


def _class_indices(model: nn.Module, classes: list[str], image_dir: str) -> list[int]:
    """The model's class index of each folder class: by label name, or by ImageNet synset id for a 1000-class
    ImageNet model."""
    id2label = {int(i): str(name) for i, name in (getattr(model.config, "id2label", None) or {}).items()}
    by_name = {name.lower(): i for i, name in id2label.items()}
    synsets = {}
    if len(id2label) == 1000:
        synsets = {synset: i for i, synset in enumerate(imagenet_synsets())}
    indices, unknown = [], []
    for name in classes:
        index = by_name.get(name.lower(), synsets.get(name))
        if index is None:
            unknown.append(name)
        indices.append(index)
    if unknown:
        shown = ", ".join(list(id2label.values())[:8]) + (", ..." if len(id2label) > 8 else "")
        raise InputError(
            f"{parameter('image_dir', repr(image_dir))} has classes the model does not know ({', '.join(unknown[:5])}"
            f"{', ...' if len(unknown) > 5 else ''}): accuracy needs each class subfolder named after one of the "
            f"model's labels ({shown}){' or its ImageNet synset id' if synsets else ''}."
        )
    return indices


def load_analysis_images(
    image_dir: str,
    model: nn.Module,
    model_source: str | None = None,
    max_images: int | None = 1024,
    image_size: int | None = None,
    progress: bool = False,
) -> ImageBatch:
    """The images of ``image_dir`` (one subfolder per class) as the model sees them, with its class indices.

    Args:
        image_dir: a folder of class subfolders, checked by :func:`hf_topo.vision.data.check_image_folder` (every
            image decoded once; a bad folder is an error naming the fix).
        model: the image classifier (its ``id2label`` maps the class folders to label indices).
        model_source: its folder or Hub id, whose saved image processor gives the size and normalisation
            (:func:`eval_transform_for`).
        max_images: at most this many images, taken in turn from each class (the first files of each, sorted), so
            the classes stay balanced; ``None`` reads them all.
        image_size: the input side, when no image processor is saved with the model.
    """
    if max_images is not None and max_images < 1:
        raise InputError(f"{parameter('max_images', max_images)} must be at least 1 (or None for every image).")
    summary = check_image_folder(image_dir, "image_dir")
    indices = _class_indices(model, summary.classes, image_dir)
    transform = eval_transform_for(model, model_source, image_size)
    by_class: list[list[str]] = [[] for _ in summary.classes]
    for path in summary.files:  # files are grouped by class, in sorted order
        by_class[summary.classes.index(os.path.basename(os.path.dirname(path)))].append(path)
    chosen: list[tuple[str, int]] = []
    for rank in range(max(len(files) for files in by_class)):  # round robin: classes stay balanced under the cap
        for class_position, files in enumerate(by_class):
            if rank < len(files):
                chosen.append((files[rank], indices[class_position]))
    if max_images is not None:
        chosen = chosen[:max_images]
    pixels = []
    for path, _ in tqdm(chosen, desc="Reading images", disable=not progress):
        with Image.open(path) as image:
            pixels.append(transform(image))
    logger.info("%d images of %d classes from %s", len(chosen), len(summary.classes), image_dir)
    return ImageBatch(torch.stack(pixels), torch.tensor([label for _, label in chosen]))


def analyze_saved_image_models(args: AnalyzeArguments, settings: AnalysisSettings) -> dict:
    """``hf-topo analyze --image_dir``: analyse the saved image classifier ``args.model`` (and ``args.baseline`` on
    the same layers and sheets) on the images of ``args.image_dir`` (at most ``args.max_images``, classes in turn)
    and write ``report.json`` and the figures to ``args.output_dir``; returns the report.

    The folder, the classes and every image are checked before any model runs. Accuracy and the accuracy-scored
    sweeps use every image read; so do the activation measures (one response per image and unit: a convolution's
    output channel averaged over space, a ViT feature over tokens). The language-only inputs (``stimuli_a``/``b``,
    ``blimp_dir``, ``temporal_windows``) are refused.
    """
    check_analyze_arguments(args)
    if args.image_dir is None:
        raise InputError(f"An image classifier is analysed on images: pass {parameter('image_dir', 'FOLDER')}.")
    language_only = [name for name in ("stimuli_a", "stimuli_b", "blimp_dir") if getattr(args, name) is not None]
    language_only += ["temporal_windows"] if settings.temporal_windows else []
    if language_only:
        raise InputError(
            f"{args.model} is analysed on images: {', '.join(parameter(name) for name in language_only)} apply to "
            "language models only. Leave them out."
        )
    torch.manual_seed(settings.seed)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    for name in ("model", "baseline"):
        source = getattr(args, name)
        if source is None:
            continue
        check_model_source(source)
        if not is_image_classifier(source):
            raise InputError(
                f"{parameter(name, repr(source))} is not an image classifier (its config.json names no "
                f"*ForImageClassification architecture): {parameter('image_dir')} is for image classifiers; analyse "
                f"a language model on {parameter('text_file')} or {parameter('dataset')}."
            )
    model = AutoModelForImageClassification.from_pretrained(args.model, dtype=torch.float32).to(device)
    images = load_analysis_images(
        args.image_dir, model, args.model, args.max_images, args.image_size, progress=args.progress
    )
    topographic_layers(model, None, args.layers)  # checks the layers (and attaches inferred sheets if none)
    topography = TopoConfig.from_pretrained(model)
    baseline = None
    if args.baseline is not None:  # kept on the CPU until its turn; its layers must take the model's sheets
        baseline = AutoModelForImageClassification.from_pretrained(args.baseline, dtype=torch.float32)
        if baseline.config.id2label != model.config.id2label:
            raise InputError(
                f"{parameter('baseline', repr(args.baseline))} has other labels than {args.model}: a baseline is the "
                "same classifier trained without TopoLoss, scored on the same images and classes."
            )
        try:
            topographic_layers(baseline, topography, args.layers)
        except ValueError as err:
            raise ValueError(
                f"The baseline {args.baseline} cannot be analysed on the layers and sheets of {args.model}: {err} "
                "A baseline is the same architecture trained without TopoLoss (e.g. its τ=0 twin)."
            ) from None
    common = dict(settings=settings, layer_names=args.layers, progress=args.progress, images=images)
    analysis = analyze_model(model, label=args.model_label, **common)
    baseline_analysis = None
    if baseline is not None:
        baseline_analysis = analyze_model(
            baseline.to(device), label=args.baseline_label, topography=topography, **common
        )
        del baseline
    metadata = {
        "model": args.model,
        "baseline": args.baseline,
        "images": {
            "image_dir": args.image_dir,
            "n_images": len(images),
            "max_images": args.max_images,
            "image_size": int(images.pixel_values.shape[-1]),
            "classes": sorted({model.config.id2label[int(i)] for i in images.labels.unique()}),
        },
        "settings": asdict(settings),
        "topography": topography.to_dict(),
        "device": device,
    }
    if args.save_downsampled is not None:
        metadata["downsampled"] = save_downsampled(model, analysis, args)
        try:
            processor = AutoImageProcessor.from_pretrained(args.model)
            processor.save_pretrained(metadata["downsampled"]["path"])
        except OSError:
            logger.warning("%s has no image processor to save beside the downsampled model.", args.model)
    return write_report(analysis, args.output_dir, baseline_analysis, metadata)
