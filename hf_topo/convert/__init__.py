"""The authors' TopoNets (and any checkpoint of the same layouts) → ``transformers`` models with their topography.

``hf-topo convert-toponet SOURCE [--tau T] --output_dir DIR`` (:mod:`hf_topo.cli.convert_toponet`) runs these steps:

=====================================  ===============================================================================
module                                 concept
=====================================  ===============================================================================
:mod:`~hf_topo.convert.sources`        where the file is: a path, a folder of ``tau_<τ>`` files, or a Hub repo (the
                                       authors' four repos and their file names), fetched with ``hf_hub_download``
:mod:`~hf_topo.convert.checkpoint`     reading it safely: ``torch.load(weights_only=True)``, clear errors for
                                       truncated, foreign or unsafe files
:mod:`~hf_topo.convert.toponet`        which family it holds, and the conversion: :func:`convert_toponet`
:mod:`~hf_topo.convert.resnet`         torchvision ResNet-18/50 (with FFCV's blur-pool convolutions) → ResNet
:mod:`~hf_topo.convert.vit`            torchvision ViT-B/32 → ``ViTForImageClassification``
:mod:`~hf_topo.convert.nanogpt`        nanoGPT → ``GPT2LMHeadModel``, and the tokenizer saved with it
:mod:`~hf_topo.convert.record`         the topography record (sheets, τ) and ``config.conversion``
=====================================  ===============================================================================

Example::

    from hf_topo.convert import convert_toponet, resolve_checkpoint_file

    path, tau = resolve_checkpoint_file("murtylab/topo-resnet18-imagenet", tau=10)  # all_topo_tau_10.0.pt
    model = convert_toponet(path, tau=tau, family="resnet", source="murtylab/topo-resnet18-imagenet")
    model.save_pretrained("topo-resnet18-tau10")  # loads with AutoModelForImageClassification after import hf_topo
"""

from .checkpoint import load_checkpoint, tau_from_filename
from .nanogpt import DEFAULT_TOKENIZER, attach_tokenizer, convert_nanogpt
from .record import CONVERSION_KEY
from .sources import AUTHORS_CHECKPOINTS, checkpoint_filename, family_from_repo_id, resolve_checkpoint_file
from .toponet import FAMILIES, convert_toponet, detect_family

__all__ = [
    "AUTHORS_CHECKPOINTS",
    "CONVERSION_KEY",
    "DEFAULT_TOKENIZER",
    "FAMILIES",
    "attach_tokenizer",
    "checkpoint_filename",
    "convert_nanogpt",
    "convert_toponet",
    "detect_family",
    "family_from_repo_id",
    "load_checkpoint",
    "resolve_checkpoint_file",
    "tau_from_filename",
]
