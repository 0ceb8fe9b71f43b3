"""Model presets for pretraining TopoNets from scratch (architectures only, random initialization).

=================  ==============================================  ================================
preset             architecture                                    topographic layers (default)
=================  ==============================================  ================================
``tiny-gpt2``      GPT-2, 4 layers × 128 wide, 4 heads (CPU demo)  ``mlp.c_fc``: 512 units → 16×32
``gpt2-124m``      GPT-2 small (12 × 768, 12 heads), 124M params   ``mlp.c_fc``: 3072 units → 48×64
``gpt-neo-125m``   GPT-Neo-125M shapes (the paper's language       ``mlp.c_fc``: 3072 units → 48×64
                   TopoNets), global/local attention
``tiny-gpt-neo``   GPT-Neo, 4 layers × 128, 4 heads,               ``mlp.c_fc``: 512 units → 16×32
                   global/local attention (CPU)
``tiny-gpt-neox``  GPT-NeoX (Pythia's architecture), 4 × 128,      ``mlp.dense_h_to_4h``: 512 units
                   4 heads, rotary, parallel residual (CPU)        → 16×32
``tiny-llama``     Llama, 4 × 128, 4 heads, gated MLP of 512       ``mlp.up_proj``: 512 units → 16×32
                   units, RMSNorm, rotary, untied head (CPU)       (``gate_proj`` on request)
``tiny-resnet``    ResNet image classifier, stages 64/128/256      every convolution of the residual
                   (CPU; :mod:`hf_topo.vision.models`)             blocks: 9 Conv2d, 8×8 … 16×16
``tiny-vit``       ViT image classifier, 4 × 64, MLP 256 (CPU)     ``mlp.fc2``: 64 units → 8×8
=================  ==============================================  ================================

The ``tiny-*`` presets have the same width, depth and number of MLP units, so a TopoNet of every family can be
trained and compared on one recipe on a CPU. ``--config_overrides`` uses the family's own attribute names
(``n_embd``/``n_layer`` for GPT-2; ``hidden_size``, ``num_layers`` / ``num_hidden_layers``, ``intermediate_size``
for the others; for Llama change ``head_dim`` together with ``hidden_size``).

:func:`check_model_source` refuses, before anything runs, a saved model that ``from_pretrained`` could not load (a
folder that does not exist, has no ``config.json`` or no weights, a LoRA adapter folder, an unreachable Hub id): every
command that reads a model calls it before its tokenizer, its data or any training or scoring.
"""

from __future__ import annotations

import os

from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    GPT2Config,
    GPTNeoConfig,
    GPTNeoXConfig,
    LlamaConfig,
    PreTrainedModel,
)

from .presets import MODEL_PRESETS, VISION_MODEL_PRESETS  # the preset names, importable from here too

__all__ = ["MODEL_PRESETS", "WEIGHT_FILES", "preset_config", "build_model", "check_model_source"]

#: The files ``save_pretrained`` keeps a model's weights in (safetensors, sharded or not; the older pickle format).
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def check_model_source(name_or_path: str | os.PathLike, **hub_kwargs) -> None:
    """Refuse a model source that ``AutoModelForCausalLM.from_pretrained`` could not load, with what to pass instead.

    Args:
        name_or_path: a local folder written by ``save_pretrained`` (``config.json`` and weights), or a Hub id; a Hub
            id's ``config.json`` is fetched (or read from the cache) to check that the repo is there.
        **hub_kwargs: ``revision``, ``token``, ... for the Hub.

    Raises:
        FileNotFoundError: a local path (absolute, ``./``, ``~``, several slashes) that does not exist.
        ValueError: a file instead of a folder; a folder without ``config.json`` (a LoRA adapter folder is named as
            such) or without any of :data:`WEIGHT_FILES`; a Hub id that cannot be reached or does not exist.
    """
    from .data import is_hub_id

    source = os.fspath(name_or_path)
    if os.path.isdir(source):
        files = set(os.listdir(source))
        if "config.json" not in files:
            if "adapter_config.json" in files:
                raise ValueError(
                    f"{source} is a LoRA adapter folder (adapter_config.json), not a full model: pass the model it "
                    f"was trained on, or the merged model that `hf-topo finetune-lora --merge` writes to "
                    f"{os.path.join(source, 'merged')}."
                )
            raise ValueError(
                f"{source} is not a saved model folder (no config.json there): pass the folder save_pretrained wrote "
                "(the --output_dir of hf-topo pretrain, the --output of hf-topo convert-nanogpt) or a Hub id."
            )
        if not files & set(WEIGHT_FILES):
            raise ValueError(
                f"{source} has a config.json but no weights (none of {', '.join(WEIGHT_FILES)}): the save did not "
                f"finish or only the config was copied. Save the model there again with "
                f"model.save_pretrained({source!r}), or pass another folder."
            )
        return
    if os.path.isfile(source):
        raise ValueError(
            f"{source} is a file; a model is loaded from the folder that holds its config.json and weights: pass "
            f"{os.path.dirname(source) or '.'}."
        )
    if not is_hub_id(source):
        raise FileNotFoundError(
            f"Model folder {source!r} does not exist (and it is not a Hub id of the form 'owner/name'): pass an "
            "existing model folder or a Hub id."
        )
    try:
        AutoConfig.from_pretrained(source, **hub_kwargs)
    except (OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"Cannot load a model from {source!r}: there is no local folder of that name, and the Hub did not provide "
            f"it ({reason}). Pass an existing model folder, or a Hub id that is reachable from here (or already in "
            "the Hugging Face cache)."
        ) from None


def preset_config(
    preset: str, vocab_size: int, block_size: int, bos_token_id: int | None = None, eos_token_id: int | None = None
):
    """The ``PreTrainedConfig`` of a preset, sized for ``vocab_size`` and a context of ``block_size`` tokens."""
    special = {k: v for k, v in (("bos_token_id", bos_token_id), ("eos_token_id", eos_token_id)) if v is not None}
    if preset == "tiny-gpt2":
        return GPT2Config(vocab_size=vocab_size, n_positions=block_size, n_embd=128, n_layer=4, n_head=4, **special)
    if preset == "gpt2-124m":
        return GPT2Config(vocab_size=vocab_size, n_positions=max(block_size, 1024), **special)
    if preset == "gpt-neo-125m":
        return GPTNeoConfig(
            vocab_size=vocab_size,
            max_position_embeddings=max(block_size, 2048),
            hidden_size=768,
            num_layers=12,
            num_heads=12,
            attention_types=[[["global", "local"], 6]],
            window_size=256,
            **special,
        )
    # The other families at tiny-gpt2's size: 4 layers × 128, 4 heads, 512 MLP units.
    tiny = dict(
        vocab_size=vocab_size, max_position_embeddings=block_size, hidden_size=128, intermediate_size=512, **special
    )
    if preset == "tiny-gpt-neo":
        return GPTNeoConfig(
            num_layers=4,
            num_heads=4,
            attention_types=[[["global", "local"], 2]],
            window_size=min(256, block_size),
            **tiny,
        )
    if preset == "tiny-gpt-neox":
        return GPTNeoXConfig(num_hidden_layers=4, num_attention_heads=4, **tiny)
    if preset == "tiny-llama":
        return LlamaConfig(num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4, **tiny)
    if preset in VISION_MODEL_PRESETS:
        raise ValueError(
            f"{preset!r} is an image classifier (hf_topo.vision.models.vision_preset_config): train it on a folder of "
            "images with `hf-topo pretrain --train_dir DIR`; language commands take a language preset."
        )
    raise ValueError(f"Unknown model preset {preset!r}; choose one of {MODEL_PRESETS} or pass --model_name_or_path.")


def apply_overrides(config, overrides: str | None):
    """Apply ``"n_embd=64,n_layer=2"``-style overrides to a config (as transformers' ``run_clm.py`` does)."""
    if overrides:
        for item in overrides.split(","):
            key, _, value = item.partition("=")
            key = key.strip()
            if not hasattr(config, key):
                raise ValueError(f"config_overrides: {type(config).__name__} has no attribute {key!r}.")
            current = getattr(config, key)
            setattr(
                config, key, type(current)(value) if current is not None and not isinstance(current, bool) else value
            )
    return config


def build_model(
    preset: str | None,
    vocab_size: int,
    block_size: int,
    model_name_or_path: str | None = None,
    config_overrides: str | None = None,
    bos_token_id: int | None = None,
    eos_token_id: int | None = None,
) -> PreTrainedModel:
    """A causal LM: ``from_pretrained(model_name_or_path)`` when given, else a freshly initialized preset."""
    if model_name_or_path is not None:
        return AutoModelForCausalLM.from_pretrained(model_name_or_path)
    config = apply_overrides(
        preset_config(preset or "tiny-gpt2", vocab_size, block_size, bos_token_id, eos_token_id), config_overrides
    )
    return AutoModelForCausalLM.from_config(config)
