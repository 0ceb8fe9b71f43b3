"""ImageNet-1k's 1000 class names, in the order of the class indices of torchvision- and FFCV-trained models.

The classes are the 1000 WordNet synsets of ILSVRC-2012 sorted by synset id (``n01440764`` … ``n15075141``), the
order that an image folder of the training set gives (torchvision's ``ImageFolder``, which FFCV's and torchvision's
ImageNet recipes use), so index ``i`` of a converted model's logits is the ``i``-th synset. A class's name is its
WordNet lemmas (``"tench, Tinca tinca"``), as the ``id2label`` of the ImageNet models on the Hub spells them.

Source: the package data file ``imagenet_classes.tsv`` (``synset<TAB>lemmas``, 1000 lines) was made from
``timm/data/_info/imagenet_synsets.txt`` and ``imagenet_synset_to_lemma.txt`` of the ``timm`` 1.0.31 wheel on PyPI
(Apache-2.0; the lemmas are WordNet's, under the WordNet license). Two synsets share a name (``crane``: the bird
``n02012849`` and the machine ``n03126707``), so ``label2id`` has 999 distinct names for the 1000 ids.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_NUM_CLASSES",
    "IMAGENET_STD",
    "imagenet_class_names",
    "imagenet_eval_processor",
    "imagenet_id2label",
    "imagenet_synsets",
]

IMAGENET_NUM_CLASSES = 1000


@lru_cache(maxsize=1)
def _classes() -> tuple[tuple[str, str], ...]:
    text = resources.files(__package__).joinpath("imagenet_classes.tsv").read_text(encoding="utf-8")
    rows = tuple(tuple(line.split("\t", 1)) for line in text.splitlines() if line)
    if len(rows) != IMAGENET_NUM_CLASSES:  # a packaging error, not user input
        raise RuntimeError(
            f"hf_topo's imagenet_classes.tsv has {len(rows)} classes instead of 1000: reinstall hf_topo."
        )
    return rows


def imagenet_synsets() -> list[str]:
    """The 1000 WordNet synset ids of ImageNet-1k, in class-index order (``n01440764`` first)."""
    return [synset for synset, _ in _classes()]


def imagenet_class_names() -> list[str]:
    """The 1000 class names (WordNet lemmas) of ImageNet-1k, in class-index order (``"tench, Tinca tinca"`` first)."""
    return [name for _, name in _classes()]


def imagenet_id2label() -> dict[int, str]:
    """``{class index: name}`` for a model config's ``id2label``."""
    return dict(enumerate(imagenet_class_names()))


#: ImageNet's per-channel mean and standard deviation (torchvision's and FFCV's normalization).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_eval_processor(image_size: int = 224):
    """torchvision's ImageNet evaluation transform as a ``transformers`` image processor (PIL backend, no
    torchvision): the shorter side resized (bilinear) to ``image_size / 0.875`` (256 for 224), the central
    ``image_size × image_size`` crop, ImageNet's mean and std. Saved with the converted vision TopoNets."""
    from PIL import Image
    from transformers.models.convnext.image_processing_pil_convnext import ConvNextImageProcessorPil

    return ConvNextImageProcessorPil(
        size={"shortest_edge": image_size},
        crop_pct=0.875,
        resample=Image.Resampling.BILINEAR,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
    )
