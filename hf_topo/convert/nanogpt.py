"""nanoGPT checkpoints (e.g. the authors' TopoNet-NanoGPTs) → ``GPT2LMHeadModel`` with ``topography`` metadata.

A nanoGPT ``train.py`` checkpoint is a dict ``{"model_args": {...}, "model": state_dict, "iter_num": ..., "config":
{...}, "optimizer": ...}``. Its model is GPT-2 with three differences that the conversion takes care of:

==========================================  ================================================================
nanoGPT                                     ``GPT2LMHeadModel``
==========================================  ================================================================
``nn.Linear`` weights ``(out, in)``         ``Conv1D`` weights ``(in, out)``: transposed
``bias=False``: no Linear/LayerNorm biases  biases always present: zeros (the same function)
exact GELU (``nn.GELU()``)                  ``activation_function="gelu"`` (GPT-2's default is the tanh one)
``block_size``                              ``n_positions``
``vocab_size`` padded to 50304              kept (the extra rows are never produced by the GPT-2 tokenizer)
``lm_head.weight`` tied to ``wte.weight``   ``tie_word_embeddings=True`` (untied when the checkpoint differs)
``_orig_mod.`` key prefix (torch.compile)   removed; the causal-mask buffer ``attn.bias`` is dropped
==========================================  ================================================================

The checkpoint is read safely (:func:`hf_topo.convert.checkpoint.load_checkpoint`). Where it comes from
(:func:`hf_topo.convert.sources.resolve_checkpoint_file`): a local file, a folder of ``tau_<τ>.pt`` files, or
a Hub repo such as the authors' ``murtylab/topo-nanogpt-fineweb10B`` (``tau_0.5.pt``, ``tau_1.0.pt``, ``tau_3.0.pt``,
``tau_50.0.pt``: GPT-2-124M shapes, no biases, vocabulary 50304), fetched with ``hf_hub_download``. The tokenizer saved
next to the model (:func:`attach_tokenizer`) is GPT-2's from the Hub by default, or any Hub id or local folder.

Example::

    from hf_topo.convert import attach_tokenizer, convert_nanogpt, resolve_checkpoint_file
    from hf_topo.loading import load_tokenizer

    tokenizer = load_tokenizer("openai-community/gpt2")  # first: a missing tokenizer stops before any download
    path, tau = resolve_checkpoint_file("murtylab/topo-nanogpt-fineweb10B", tau=50)
    model = convert_nanogpt(path, tau=tau, source="murtylab/topo-nanogpt-fineweb10B")
    attach_tokenizer(model, "toponet-tau50", tokenizer)
    model.save_pretrained("toponet-tau50")
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from .checkpoint import check_tau, load_checkpoint, strip_wrapper_prefixes
from .record import CONVERSION_KEY, attach_topography, plain_settings

__all__ = [
    "DEFAULT_TOKENIZER",
    "NANOGPT_TARGET_MODULES",
    "is_nanogpt_state_dict",
    "nanogpt_config",
    "nanogpt_state_dict_to_gpt2",
    "convert_nanogpt",
    "attach_tokenizer",
]

logger = logging.getLogger(__name__)

#: The target layer of nanoGPT TopoNets (TopoLoss on every block's MLP expansion, as in the paper).
NANOGPT_TARGET_MODULES = ["mlp.c_fc"]
_LINEAR_SUFFIXES = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
_LAYER_NORMS = ("ln_1", "ln_2")
_GPT2_EOS = 50256  # <|endoftext|> of the GPT-2 tokenizer
#: The tokenizer of GPT-2 and nanoGPT's GPT-2-shaped models (the authors' TopoNets), saved with a converted model.
DEFAULT_TOKENIZER = "openai-community/gpt2"


def is_nanogpt_state_dict(state_dict: dict[str, Any]) -> bool:
    """Whether a state dict (wrapper prefixes removed) has nanoGPT's layout (``transformer.wte.weight``, ...)."""
    return "transformer.wte.weight" in state_dict and "transformer.wpe.weight" in state_dict


def _split_checkpoint(checkpoint: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """``(state dict without wrapper prefixes, model_args or None)`` of a checkpoint dict or bare state dict."""
    if "model" in checkpoint and isinstance(checkpoint["model"], dict):
        state_dict, model_args = checkpoint["model"], checkpoint.get("model_args")
    elif checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        state_dict, model_args = checkpoint, None
    else:
        raise ValueError(
            f"Not a nanoGPT checkpoint: expected a dict with 'model' (state dict) and 'model_args', or a bare state "
            f"dict; found keys {sorted(checkpoint)[:8]}."
        )
    return strip_wrapper_prefixes(state_dict), (dict(model_args) if model_args is not None else None)


def _infer_model_args(state_dict: dict[str, torch.Tensor], n_head: int | None) -> dict[str, Any]:
    """nanoGPT's ``model_args`` read off a bare state dict's shapes (``n_head`` cannot be, so it must be given)."""
    if n_head is None:
        raise ValueError(
            "The checkpoint is a bare state dict without 'model_args', and the number of attention heads cannot be "
            "read off the weights: pass n_head (--n_head), e.g. 12 for GPT-2-124M shapes."
        )
    try:
        n_vocab, n_embd = state_dict["transformer.wte.weight"].shape
        block_size = state_dict["transformer.wpe.weight"].shape[0]
    except KeyError as err:
        raise ValueError(f"Not a nanoGPT state dict: {err.args[0]!r} is missing.") from None
    n_layer = len({k.split(".")[2] for k in state_dict if k.startswith("transformer.h.")})
    return {
        "n_layer": n_layer,
        "n_head": n_head,
        "n_embd": n_embd,
        "block_size": block_size,
        "bias": "transformer.ln_f.bias" in state_dict,
        "vocab_size": n_vocab,
        "dropout": 0.0,
    }


def nanogpt_config(model_args: dict[str, Any]) -> GPT2Config:
    """The ``GPT2Config`` of a nanoGPT ``GPTConfig``/``model_args`` dict (exact GELU, ``block_size`` → ``n_positions``)."""
    required = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size")
    missing = [k for k in required if k not in model_args]
    if missing:
        raise ValueError(f"nanoGPT model_args lack {missing}; expected keys {list(required)} (+ bias, dropout).")
    if model_args["n_embd"] % model_args["n_head"]:
        raise ValueError(f"n_embd={model_args['n_embd']} is not divisible by n_head={model_args['n_head']}.")
    dropout = float(model_args.get("dropout", 0.0))
    eos = _GPT2_EOS if model_args["vocab_size"] > _GPT2_EOS else None
    return GPT2Config(
        vocab_size=int(model_args["vocab_size"]),
        n_positions=int(model_args["block_size"]),
        n_embd=int(model_args["n_embd"]),
        n_layer=int(model_args["n_layer"]),
        n_head=int(model_args["n_head"]),
        activation_function="gelu",  # nanoGPT's nn.GELU() is the exact erf GELU
        layer_norm_epsilon=1e-5,  # F.layer_norm's default, used by nanoGPT's LayerNorm
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        bos_token_id=eos,
        eos_token_id=eos,
        tie_word_embeddings=True,
    )


def nanogpt_state_dict_to_gpt2(
    state_dict: dict[str, torch.Tensor], config: GPT2Config
) -> tuple[dict[str, torch.Tensor], bool]:
    """Map a nanoGPT state dict (wrapper prefixes already removed) onto ``GPT2LMHeadModel``'s.

    Returns ``(state dict, tied)``: ``tied`` is whether ``lm_head.weight`` equals ``wte.weight`` (nanoGPT ties them;
    when it does not, the model is converted untied).

    Raises:
        ValueError: a key is missing or unexpected, or a shape disagrees with ``config``.
    """
    n_embd, n_layer = config.n_embd, config.n_layer
    hidden = 4 * n_embd
    source = {k: v for k, v in state_dict.items() if not re.fullmatch(r"transformer\.h\.\d+\.attn\.bias", k)}
    has_bias = "transformer.ln_f.bias" in source
    expected_shapes = {
        "attn.c_attn": (3 * n_embd, n_embd),
        "attn.c_proj": (n_embd, n_embd),
        "mlp.c_fc": (hidden, n_embd),
        "mlp.c_proj": (n_embd, hidden),
    }

    converted: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def take(key: str, shape: tuple[int, ...]) -> torch.Tensor:
        if key not in source:
            raise ValueError(
                f"The nanoGPT state dict has no {key!r} (a {'biased' if has_bias else 'bias-free'} model with "
                f"{n_layer} layers expected from model_args)."
            )
        tensor = source[key]
        if tuple(tensor.shape) != shape:
            raise ValueError(f"{key} has shape {tuple(tensor.shape)}, expected {shape} from model_args.")
        used.add(key)
        return tensor.detach().float()

    def bias(key: str, size: int) -> torch.Tensor:
        return take(key, (size,)) if has_bias else torch.zeros(size)

    converted["transformer.wte.weight"] = take("transformer.wte.weight", (config.vocab_size, n_embd))
    converted["transformer.wpe.weight"] = take("transformer.wpe.weight", (config.n_positions, n_embd))
    for i in range(n_layer):
        block = f"transformer.h.{i}"
        for norm in _LAYER_NORMS:
            converted[f"{block}.{norm}.weight"] = take(f"{block}.{norm}.weight", (n_embd,))
            converted[f"{block}.{norm}.bias"] = bias(f"{block}.{norm}.bias", n_embd)
        for suffix in _LINEAR_SUFFIXES:
            out_features, in_features = expected_shapes[suffix]
            # nn.Linear stores (out, in); Conv1D stores (in, out).
            converted[f"{block}.{suffix}.weight"] = take(f"{block}.{suffix}.weight", (out_features, in_features)).t()
            converted[f"{block}.{suffix}.bias"] = bias(f"{block}.{suffix}.bias", out_features)
    converted["transformer.ln_f.weight"] = take("transformer.ln_f.weight", (n_embd,))
    converted["transformer.ln_f.bias"] = bias("transformer.ln_f.bias", n_embd)

    tied = True
    if "lm_head.weight" in source:
        lm_head = take("lm_head.weight", (config.vocab_size, n_embd))
        tied = torch.equal(lm_head, converted["transformer.wte.weight"])
        if not tied:
            converted["lm_head.weight"] = lm_head
    unexpected = sorted(set(source) - used)
    if unexpected:
        raise ValueError(
            f"The nanoGPT state dict has keys this conversion does not know: {unexpected[:6]}"
            + (f" (+{len(unexpected) - 6} more)" if len(unexpected) > 6 else "")
            + ". Only nanoGPT's GPT (model.py) layout is supported."
        )
    return {k: v.contiguous() for k, v in converted.items()}, tied


def convert_nanogpt(
    checkpoint_path: str | os.PathLike,
    tau: float | None = None,
    n_head: int | None = None,
    target_modules: list[str] | None = None,
    source: str | None = None,
    checkpoint: dict[str, Any] | None = None,
) -> GPT2LMHeadModel:
    """Convert a nanoGPT checkpoint into a ``GPT2LMHeadModel`` carrying ``topography`` metadata.

    Args:
        checkpoint_path: a nanoGPT ``train.py`` checkpoint (``{"model_args", "model", ...}``) or a bare state dict.
        tau: τ the model was trained with; by default read from the file name (``tau_<τ>.pt``). When neither says,
            the sheets are attached as inferred metadata (``inferred: true``, ``tau: 0``).
        n_head: attention heads, needed only for a bare state dict (``model_args`` has it otherwise).
        target_modules: the topographic layers (default ``["mlp.c_fc"]``, every block's MLP expansion).
        source: where the checkpoint came from, when not a local file (e.g. the Hub repo id given to
            :func:`~hf_topo.convert.sources.resolve_checkpoint_file`), recorded as ``config.conversion["source"]``.
        checkpoint: the file's content when already read with :func:`~hf_topo.convert.checkpoint.load_checkpoint`
            (default: read ``checkpoint_path``).

    The model is in float32 and in eval mode. ``config.conversion`` records the source (file name, ``iter_num``,
    ``best_val_loss``, nanoGPT's ``model_args`` and the plain entries of its training ``config``).
    """
    check_tau(tau)
    if checkpoint is None:
        checkpoint = load_checkpoint(checkpoint_path)
    if not isinstance(checkpoint, dict):
        raise ValueError(
            f"{checkpoint_path} holds a {type(checkpoint).__name__}, not a nanoGPT checkpoint dict "
            "({'model_args': ..., 'model': state_dict}) or a state dict."
        )
    state_dict, model_args = _split_checkpoint(checkpoint)
    if model_args is None:
        model_args = _infer_model_args(state_dict, n_head)
    elif n_head is not None and n_head != model_args.get("n_head"):
        raise ValueError(f"n_head={n_head} contradicts the checkpoint's model_args n_head={model_args.get('n_head')}.")
    config = nanogpt_config(model_args)
    weights, tied = nanogpt_state_dict_to_gpt2(state_dict, config)
    if not tied:
        logger.warning(
            "lm_head.weight differs from wte.weight in %s: converting with untied embeddings.", checkpoint_path
        )
        config.tie_word_embeddings = False

    model = GPT2LMHeadModel(config)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    missing = [k for k in missing if not (tied and k == "lm_head.weight")]
    if missing or unexpected:  # the mapping above is exhaustive: this is a bug, not bad input
        raise RuntimeError(
            f"Converted state dict does not fit GPT2LMHeadModel: missing {missing}, unexpected {unexpected}."
        )
    if tied:
        model.tie_weights()
    model.eval()

    step = checkpoint.get("iter_num") if isinstance(checkpoint.get("iter_num"), int) else None
    attach_topography(model, target_modules or NANOGPT_TARGET_MODULES, tau, checkpoint_path, step=step)

    record: dict[str, Any] = {
        "from": "nanogpt",
        "checkpoint": Path(checkpoint_path).name,
        **({"source": str(source)} if source is not None else {}),
        "model_args": {k: v for k, v in model_args.items() if isinstance(v, (str, int, float, bool)) or v is None},
        "tied_embeddings": tied,
    }
    for key in ("iter_num", "best_val_loss"):
        value = checkpoint.get(key)
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, (int, float)):
            record[key] = value
    settings = plain_settings(checkpoint.get("config"))
    if settings:
        record["training_config"] = settings
    setattr(model.config, CONVERSION_KEY, record)
    return model


def attach_tokenizer(model, output_dir: str | os.PathLike, tokenizer=DEFAULT_TOKENIZER):
    """Save ``tokenizer`` next to a converted model and return it (``None`` when ``tokenizer`` is ``None``).

    Args:
        model: the converted model (its vocabulary must hold every token of the tokenizer).
        output_dir: the model's folder.
        tokenizer: a tokenizer object, or the Hub id or local folder of one (loaded with
            :func:`hf_topo.loading.load_tokenizer`; default GPT-2's, which nanoGPT's GPT-2-shaped models use).
            Load it before converting (``load_tokenizer(name)``), so that a missing tokenizer stops the command
            before the checkpoint is read.

    The model's vocabulary is kept at the checkpoint's size (nanoGPT pads GPT-2's 50257 tokens to 50304); the
    tokenizer's size is recorded in ``config.conversion["tokenizer_vocab_size"]``.

    Raises:
        ValueError: the tokenizer cannot be loaded (offline and not cached, no such folder; the message suggests
            ``--tokenizer_name`` with a local folder), or has more tokens than the model has embeddings.
    """
    if tokenizer is None:
        return None
    from ..loading import check_tokenizer, load_tokenizer

    if isinstance(tokenizer, (str, os.PathLike)):
        name, loaded = tokenizer, load_tokenizer(tokenizer)
    else:
        name, loaded = getattr(tokenizer, "name_or_path", ""), tokenizer
        check_tokenizer(loaded)
    if len(loaded) > model.config.vocab_size:
        raise ValueError(
            f"Tokenizer {str(name)!r} has {len(loaded)} tokens but the model's vocabulary has "
            f"{model.config.vocab_size} rows: it is not the tokenizer this checkpoint was trained with. Pass the "
            "right one with --tokenizer_name."
        )
    loaded.save_pretrained(output_dir)
    record = getattr(model.config, CONVERSION_KEY, None)
    if isinstance(record, dict):
        record["tokenizer"] = str(name)
        record["tokenizer_vocab_size"] = len(loaded)
    return loaded
