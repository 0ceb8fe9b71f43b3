"""Model presets for pretraining TopoNets from scratch (architectures only, random initialization).

=================  ==============================================  ================================
preset             architecture                                    topographic layers (default)
=================  ==============================================  ================================
``tiny-gpt2``      GPT-2, 4 layers × 128 wide, 4 heads (CPU demo)  ``mlp.c_fc``: 512 units → 16×32
``gpt2-124m``      GPT-2 small (12 × 768, 12 heads), 124M params   ``mlp.c_fc``: 3072 units → 48×64
``gpt-neo-125m``   GPT-Neo-125M shapes (the paper's language       ``mlp.c_fc``: 3072 units → 48×64
                   TopoNets), global/local attention
=================  ==============================================  ================================
"""

from __future__ import annotations

from transformers import AutoModelForCausalLM, GPT2Config, GPTNeoConfig, PreTrainedModel

from .presets import MODEL_PRESETS  # the preset names, importable from here too

__all__ = ["MODEL_PRESETS", "preset_config", "build_model"]


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
