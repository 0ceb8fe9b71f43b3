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

__all__ = ["IMAGENET_NUM_CLASSES", "imagenet_synsets", "imagenet_class_names", "imagenet_id2label"]

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
