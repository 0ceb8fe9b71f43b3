"""LoRA adapters on TopoNets with PEFT, and the fine-tuning corpora of the paper's A.11.

The paper fine-tunes TopoNet-NanoGPTs with LoRA on the attention projections (ranks 2, 4, 8) on Shakespeare
(~300k tokens) and Python code (~1M tokens). A TopoNet's topography lives in its MLP expansion layers, so LoRA on
attention leaves it untouched; LoRA on ``c_fc`` changes the effective weight ``W + scaling·B·A``, on which TopoLoss
is computed (see :func:`hf_topo.sheet.effective_weight`) so that ``--tau`` keeps or induces topography through the
adapter.

Vision TopoNets (``*ForImageClassification``) get the same adapters with the classifier head trained in full
(PEFT's ``modules_to_save``): a ViT's attention projections by default (:data:`ATTENTION_TARGETS` ``"vit"``), a
ResNet's residual-block convolutions (:data:`CONVOLUTION_TARGETS`, PEFT's ``lora.Conv2d``: ``lora_A`` a k×k
convolution to ``r`` channels, ``lora_B`` a 1×1 one back, whose product is a Conv2d weight delta that TopoLoss sees).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from torch import nn

from .errors import InputError, MissingFileError, parameter
from .presets import ATTENTION_TARGETS
from .sheet import sheet_layer_types, units_and_inputs
from .targets import candidate_layer_names, find_target_modules

__all__ = [
    "CORPUS_PRESETS",
    "CONVOLUTION_TARGETS",
    "IMAGE_CLASSIFIER_HEAD",
    "default_lora_targets",
    "is_image_classifier",
    "wrap_with_lora",
    "corpus_text",
    "load_lora_adapter",
    "load_lora_image_classifier",
]

logger = logging.getLogger(__name__)

#: Fine-tuning corpora: the Hub dataset used when the Hub is reachable, and the paper's token budget.
CORPUS_PRESETS: dict[str, dict] = {
    "shakespeare": {
        "hub": "karpathy/tiny_shakespeare",
        "config": None,
        "column": "text",
        "filter": None,
        "tokens": 300_000,
    },
    "code": {
        "hub": "nampdn-ai/tiny-codes",
        "config": None,
        "column": "response",
        "filter": ("programming_language", "Python"),
        "tokens": 1_000_000,
    },
}


#: LoRA targets of convolutional families without attention, per ``config.model_type`` (one regex, as PEFT takes
#: it): ResNet's residual-block convolutions, shortcut projections included (the paper's ResNet TopoLoss layers).
CONVOLUTION_TARGETS: dict[str, str] = {
    "resnet": r"resnet\.encoder\.stages\.\d+\.layers\.\d+\.(layer\.\d+|shortcut)\.convolution",
}
#: The classification head of ``transformers``' image classifiers (ViT, ResNet, ConvNeXt, ...): trained in full
#: beside the adapter and saved with it (PEFT's ``modules_to_save``).
IMAGE_CLASSIFIER_HEAD = "classifier"


def is_image_classifier(model: nn.Module) -> bool:
    """Whether ``model`` (or the model a PEFT model wraps) is a ``transformers`` image classifier."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return type(base).__name__.endswith("ForImageClassification")


def default_lora_targets(model: nn.Module) -> list[str] | str:
    """The attention projections of the model's family (``ATTENTION_TARGETS``); for a ResNet its residual-block
    convolutions (``CONVOLUTION_TARGETS``, a regex)."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in CONVOLUTION_TARGETS:
        return CONVOLUTION_TARGETS[model_type]
    if model_type not in ATTENTION_TARGETS:
        raise InputError(
            f"No default LoRA targets for model_type={model_type!r}; pass {parameter('lora_target_modules')} "
            "(candidates: "
            f"{', '.join(sorted({'.'.join(n.split('.')[-2:]) for n in candidate_layer_names(model)}))})."
        )
    return ATTENTION_TARGETS[model_type]


def wrap_with_lora(
    model: nn.Module,
    r: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    target_modules: list[str] | str | None = None,
    modules_to_save: list[str] | None = None,
):
    """Wrap ``model`` with a PEFT LoRA adapter (targets checked first: a pattern that matches nothing lists the
    candidates). GPT-2's ``Conv1D`` layers get ``fan_in_fan_out=True``.

    Args:
        target_modules: module-name suffixes, one regex, or ``["re:REGEX"]`` (the command line's form of a regex);
            default :func:`default_lora_targets`.
        modules_to_save: modules trained in full and saved with the adapter; default for an image classifier its
            head (:data:`IMAGE_CLASSIFIER_HEAD`), else none. A causal LM gets PEFT's ``CAUSAL_LM`` task, an image
            classifier no task type (a plain ``PeftModel``, as PEFT's image-classification guide does).
    """
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers.pytorch_utils import Conv1D

    if r < 1:
        raise ValueError(f"lora_r={r} must be >= 1.")
    targets = target_modules or default_lora_targets(model)
    if isinstance(targets, (list, tuple)) and len(targets) == 1 and targets[0].startswith("re:"):
        targets = targets[0][len("re:") :]
    matched = find_target_modules(model, targets, role="lora_target_modules")
    fan_in_fan_out = any(isinstance(m, Conv1D) for m in matched.values())
    image_classifier = is_image_classifier(model)
    if modules_to_save is None and image_classifier:
        modules_to_save = [IMAGE_CLASSIFIER_HEAD]
    config = LoraConfig(
        task_type=None if image_classifier else TaskType.CAUSAL_LM,
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=targets,
        fan_in_fan_out=fan_in_fan_out,
        modules_to_save=modules_to_save,
    )
    return get_peft_model(model, config)


def _python_sources(code_dir: str, max_chars: int | None) -> str:
    from .data import python_source_files

    parts, size = [], 0
    for path in python_source_files(code_dir):
        try:
            parts.append(f"# file: {path.name}\n{path.read_text(encoding='utf-8')}\n")
        except (UnicodeDecodeError, OSError):
            continue
        size += len(parts[-1])
        if max_chars is not None and size >= max_chars:
            break
    if not parts:
        raise ValueError(f"No readable .py files under {code_dir!r}.")
    return "".join(parts)


def corpus_text(
    preset: str | None, train_file: str | None = None, code_dir: str | None = None, max_chars: int | None = None
) -> str:
    """The raw text of a fine-tuning corpus (about ``max_chars`` characters at most, so a token budget does not
    mean reading and tokenizing a whole library).

    Local sources win: ``train_file`` (any text) or ``code_dir`` (its ``.py`` files, e.g. Python's standard
    library). Otherwise the preset's Hub dataset is read with ``datasets`` (needs the Hub; offline this fails with a
    message that names the local options).
    """
    if train_file and code_dir:
        raise InputError(f"Give one local source: {parameter('train_file')} or {parameter('code_dir')}, not both.")
    if train_file:
        from .loading import check_data_file

        check_data_file(train_file, "train_file")  # exists and holds text
        return Path(train_file).read_text(encoding="utf-8")[:max_chars]
    if code_dir:
        if not os.path.isdir(code_dir):
            raise MissingFileError(f"{parameter('code_dir', repr(code_dir))} is not a directory.")
        return _python_sources(code_dir, max_chars)
    if preset not in CORPUS_PRESETS:
        raise InputError(
            f"{parameter('dataset', repr(preset))} is not a preset ({', '.join(CORPUS_PRESETS)}); or pass "
            f"{parameter('train_file')} or {parameter('code_dir')}."
        )
    from huggingface_hub.constants import HF_HUB_OFFLINE

    spec = CORPUS_PRESETS[preset]
    if HF_HUB_OFFLINE:
        local = (
            f"{parameter('train_file', 'PATH/TO/tinyshakespeare.txt')} (a local copy of the corpus)"
            if preset == "shakespeare"
            else f"{parameter('code_dir', '<python stdlib>')}"
        )
        raise InputError(
            f"The {preset!r} preset reads {spec['hub']} from the Hub, which is offline here: pass {local}."
        )
    from datasets import load_dataset

    split = load_dataset(spec["hub"], spec["config"], split="train")
    if spec["filter"] is not None:
        column, value = spec["filter"]
        split = split.filter(lambda row: row[column] == value)
    texts, size = [], 0
    for text in split[spec["column"]]:
        texts.append(text)
        size += len(text)
        if max_chars is not None and size >= max_chars:
            break
    return "\n\n".join(texts)


def load_lora_adapter(base_model: nn.Module, adapter_dir: str | os.PathLike, **kwargs):
    """``PeftModel.from_pretrained(base_model, adapter_dir)`` after checking that the adapter fits the base model.

    An adapter trained on another model (other widths) fails here with the layer and both shapes named, instead
    of deep inside ``load_state_dict``. Only safetensors adapters are read (no unpickling).
    """
    from peft import PeftModel
    from safetensors import safe_open

    weights = Path(adapter_dir) / "adapter_model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} does not exist: expected a PEFT adapter saved with safetensors.")
    modules = dict(base_model.named_modules())
    with safe_open(str(weights), framework="pt") as f:
        for key in f.keys():
            # e.g. base_model.model.transformer.h.0.attn.c_attn.lora_A.weight
            name, _, rest = key.removeprefix("base_model.model.").partition(".lora_")
            module = modules.get(name)
            if module is None or not rest.startswith(("A", "B")):
                continue
            out_features, in_features = (
                tuple(module.weight.shape[:2])  # a Conv2d's lora_A is a convolution from its in_channels
                if isinstance(module, nn.Conv2d)
                else units_and_inputs(module)
                if isinstance(module, sheet_layer_types())
                else tuple(module.weight.shape[:2])  # an Embedding: (num_embeddings, dim), as PEFT's lora_A/B see it
            )
            shape = tuple(f.get_slice(key).get_shape())
            expected = in_features if rest.startswith("A") else out_features
            actual = shape[1] if rest.startswith("A") else shape[0]
            if actual != expected:
                raise ValueError(
                    f"The adapter in {str(adapter_dir)!r} does not fit this base model: {key} has shape {shape}, but layer "
                    f"{name!r} has {in_features} inputs and {out_features} outputs. Load the base model the adapter was "
                    "trained on (see base_model_name_or_path in adapter_config.json)."
                )
    return PeftModel.from_pretrained(base_model, str(adapter_dir), **kwargs)


def load_lora_image_classifier(
    base_model_name_or_path: str | os.PathLike, adapter_dir: str | os.PathLike, **from_pretrained_kwargs
):
    """An image classifier with the LoRA adapter of ``hf-topo finetune-lora --train_dir`` on it, ready for inference.

    The base is loaded with ``AutoModelForImageClassification``; when the fine-tuning gave it a new head (its record
    in ``adapter_dir/topography.json`` lists the classes), the base is loaded with that many labels, named as in
    the record, and the head's weights come from the adapter. Returns the ``PeftModel`` in eval mode.
    """
    from transformers import AutoModelForImageClassification

    from .metadata import TOPOGRAPHY_FILE

    record_path = Path(adapter_dir) / TOPOGRAPHY_FILE
    classes = None
    if record_path.is_file():
        import json

        with open(record_path) as f:
            record = json.load(f)
        runs = record.get("finetuning") if isinstance(record, dict) else None
        if isinstance(runs, list) and runs and isinstance(runs[-1], dict) and runs[-1].get("new_head"):
            classes = runs[-1].get("classes")
    if classes:
        from_pretrained_kwargs = {
            "num_labels": len(classes),
            "id2label": dict(enumerate(classes)),
            "label2id": {name: i for i, name in enumerate(classes)},
            "ignore_mismatched_sizes": True,  # the head's weights are the adapter's
            **from_pretrained_kwargs,
        }
    base = AutoModelForImageClassification.from_pretrained(base_model_name_or_path, **from_pretrained_kwargs)
    return load_lora_adapter(base, adapter_dir).eval()
