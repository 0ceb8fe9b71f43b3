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

Loading a saved model or a Hub id is :mod:`hf_topo.loading`'s (:func:`~hf_topo.loading.check_model_source`).
"""

from __future__ import annotations

from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    GPTNeoConfig,
    GPTNeoXConfig,
    LlamaConfig,
    PreTrainedModel,
)

from .errors import InputError, parameter
from .presets import MODEL_PRESETS, VISION_MODEL_PRESETS

__all__ = ["apply_overrides", "build_model", "preset_config"]


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
        raise InputError(
            f"{parameter('model_preset', repr(preset))} is an image classifier (hf_topo.vision.models."
            f"vision_preset_config): train it on a folder of images with {parameter('train_dir')}; language commands "
            "take a language preset."
        )
    raise InputError(
        f"Unknown model preset {parameter('model_preset', repr(preset))}; choose one of {MODEL_PRESETS} or pass "
        f"{parameter('model_name_or_path')}."
    )


def apply_overrides(config, overrides: str | None):
    """Apply ``"n_embd=64,n_layer=2"``-style overrides to a config (as transformers' ``run_clm.py`` does)."""
    if overrides:
        for item in overrides.split(","):
            key, _, value = item.partition("=")
            key = key.strip()
            if not hasattr(config, key):
                raise InputError(f"{parameter('config_overrides')}: {type(config).__name__} has no attribute {key!r}.")
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
