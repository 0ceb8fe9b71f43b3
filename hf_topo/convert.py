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

The checkpoint is read with ``torch.load(weights_only=True)``: tensors and plain containers only, so a file that
needs arbitrary unpickling (it could run code) is refused; a file cut short (an interrupted download) or not made by
``torch.save`` at all is named as such.

Where a checkpoint comes from (:func:`resolve_nanogpt_checkpoint`): a local file, a folder of ``tau_<τ>.pt`` files, or
a Hub repo such as the authors' ``murtylab/topo-nanogpt-fineweb10B`` (``tau_0.5.pt``, ``tau_1.0.pt``, ``tau_3.0.pt``,
``tau_50.0.pt``: GPT-2-124M shapes, no biases, vocabulary 50304), fetched with ``hf_hub_download``. The tokenizer saved
next to the model (:func:`attach_tokenizer`) is GPT-2's from the Hub by default, or any Hub id or local folder.

Example::

    from hf_topo.convert import attach_tokenizer, convert_nanogpt, resolve_nanogpt_checkpoint
    from hf_topo.loading import load_tokenizer

    tokenizer = load_tokenizer("openai-community/gpt2")  # first: a missing tokenizer stops before any download
    path, tau = resolve_nanogpt_checkpoint("murtylab/topo-nanogpt-fineweb10B", tau=50)
    model = convert_nanogpt(path, tau=tau, source="murtylab/topo-nanogpt-fineweb10B")
    attach_tokenizer(model, "toponet-tau50", tokenizer)
    model.save_pretrained("toponet-tau50")
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from .config import TopoConfig
from .regularizers.model import TopoRegularizer, attach_inferred_topography

__all__ = [
    "CONVERSION_KEY",
    "DEFAULT_TOKENIZER",
    "load_nanogpt_checkpoint",
    "nanogpt_checkpoint_filename",
    "resolve_nanogpt_checkpoint",
    "nanogpt_config",
    "nanogpt_state_dict_to_gpt2",
    "tau_from_filename",
    "convert_nanogpt",
    "attach_tokenizer",
]

logger = logging.getLogger(__name__)

#: Key of ``config.json`` that records where a converted model came from (source file, step, nanoGPT settings).
CONVERSION_KEY = "conversion"
#: The target layer of nanoGPT TopoNets (TopoLoss on every block's MLP expansion, as in the paper).
NANOGPT_TARGET_MODULES = ["mlp.c_fc"]
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")  # torch.compile, DistributedDataParallel
_LINEAR_SUFFIXES = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
_LAYER_NORMS = ("ln_1", "ln_2")
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
_TAU_IN_NAME = re.compile(r"tau[_-]?(\d+(?:\.\d+)?)", re.IGNORECASE)
_GPT2_EOS = 50256  # <|endoftext|> of the GPT-2 tokenizer
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = b"\x80"  # pickle's PROTO opcode, first byte of a legacy (non-zip) torch.save file
_LFS_POINTER = b"version https://git-lfs"
# torch.load(weights_only=True) names the global it would have to import (numpy, a custom class, ...)
_NEEDS_ARBITRARY_UNPICKLING = re.compile(r"safe_globals|allowed global|Unsupported global", re.IGNORECASE)
#: The tokenizer of GPT-2 and nanoGPT's GPT-2-shaped models (the authors' TopoNets), saved with a converted model.
DEFAULT_TOKENIZER = "openai-community/gpt2"


def _not_a_checkpoint(path: Path, detail: str) -> ValueError:
    return ValueError(
        f"{path} is truncated or not a PyTorch checkpoint ({detail}; {path.stat().st_size} bytes). An interrupted "
        "download or copy leaves a partial file: fetch it again (from the Hub: hf_hub_download(..., "
        "force_download=True)). Otherwise check the path: a nanoGPT checkpoint is the ckpt.pt that its train.py "
        "writes with torch.save."
    )


def _check_checkpoint_file(path: Path) -> None:
    """Refuse, before ``torch.load``, a file that cannot be a complete ``torch.save`` output: empty, a Git LFS pointer,
    a zip archive cut short (no central directory), or neither a zip archive nor a pickle."""
    with open(path, "rb") as f:
        head = f.read(64)
    if not head:
        raise ValueError(f"{path} is empty (0 bytes): not a PyTorch checkpoint. Fetch the file again.")
    if head.startswith(_LFS_POINTER):
        raise ValueError(
            f"{path} is a Git LFS pointer, not the checkpoint itself: fetch the file (git lfs pull in its repository, "
            "or hf_hub_download / `hf download` from the Hub)."
        )
    if head.startswith(_ZIP_MAGIC):  # torch.save's format since PyTorch 1.6
        if not zipfile.is_zipfile(path):
            raise _not_a_checkpoint(path, "its zip archive has no central directory: the end of the file is missing")
    elif not head.startswith(_PICKLE_PROTO):  # the legacy format is a pickle stream
        raise _not_a_checkpoint(path, f"it starts with {head[:16]!r}, neither a zip archive nor a pickle")


def load_nanogpt_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a nanoGPT checkpoint safely (``torch.load(weights_only=True)``, on CPU).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is truncated or not a PyTorch checkpoint, holds objects that only arbitrary unpickling
            can restore, or is not a checkpoint dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No nanoGPT checkpoint at {path}.")
    _check_checkpoint_file(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not _NEEDS_ARBITRARY_UNPICKLING.search(str(err)):  # a pickle stream cut short or not a pickle at all
            raise _not_a_checkpoint(path, f"torch.load: {_first_line(err)}") from None
        raise ValueError(
            f"Refusing to load {path}: it cannot be read with torch.load(weights_only=True) because it holds objects "
            f"other than tensors and plain containers ({_first_line(err)}). Unpickling such a file can run arbitrary code. "
            "Only if you trust its origin, load it yourself with torch.load(path, weights_only=False) and re-save the "
            "parts the conversion needs as plain data: torch.save({'model_args': dict(ckpt['model_args']), "
            "'model': ckpt['model']}, 'clean.pt'); then convert clean.pt."
        ) from None
    except (RuntimeError, EOFError, KeyError, ValueError) as err:  # PytorchStreamReader, "unexpected EOF", ...
        raise _not_a_checkpoint(path, f"torch.load: {_first_line(err)}") from None
    except OSError as err:
        if isinstance(err, (FileNotFoundError, PermissionError)):
            raise
        raise _not_a_checkpoint(path, f"torch.load: {_first_line(err)}") from None
    if not isinstance(checkpoint, dict):
        raise ValueError(
            f"{path} holds a {type(checkpoint).__name__}, not a nanoGPT checkpoint dict "
            "({'model_args': ..., 'model': state_dict}) or a state dict."
        )
    return checkpoint


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return (lines[0] if lines else type(err).__name__)[:200]


def _strip_wrappers(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    stripped = {}
    for key, value in state_dict.items():
        for prefix in _WRAPPER_PREFIXES:
            while key.startswith(prefix):
                key = key[len(prefix) :]
        stripped[key] = value
    return stripped


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
    return _strip_wrappers(state_dict), (dict(model_args) if model_args is not None else None)


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


def tau_from_filename(path: str | os.PathLike) -> float | None:
    """τ written in a checkpoint's file name (``tau_0.5.pt`` → 0.5, ``toponet-tau50.pt`` → 50), else ``None``."""
    match = _TAU_IN_NAME.search(Path(path).stem)
    return float(match.group(1)) if match else None


def nanogpt_checkpoint_filename(tau: float) -> str:
    """The file name of the authors' TopoNet of τ on the Hub: ``tau_50.0.pt`` for 50, ``tau_0.5.pt`` for 0.5."""
    return f"tau_{float(tau)!r}.pt"


def _check_tau(tau: float | None) -> None:
    if tau is not None and not (math.isfinite(tau) and tau >= 0):
        raise ValueError(f"tau={tau} is not a TopoLoss strength: give a finite τ >= 0 (--tau), e.g. 50.")


def _checkpoint_in_folder(folder: Path, tau: float | None, filename: str | None) -> Path:
    if filename is not None:
        path = folder / filename
        if not path.is_file():
            raise FileNotFoundError(f"{folder} has no file {filename!r} (--filename).")
        return path
    candidates = sorted(p for p in folder.iterdir() if p.suffix in _CHECKPOINT_SUFFIXES and p.is_file())
    listing = ", ".join(p.name for p in candidates) or "none"
    if len(candidates) == 1 and (tau is None or tau_from_filename(candidates[0]) in (None, tau)):
        return candidates[0]  # e.g. nanoGPT's out_dir/ckpt.pt; tau then only says what the model was trained with
    if tau is not None:
        matches = [p for p in candidates if (t := tau_from_filename(p)) is not None and math.isclose(t, tau)]
        if len(matches) == 1:
            return matches[0]
        raise ValueError(
            f"{folder} has {'no' if not matches else len(matches)} checkpoint(s) for tau={tau:g} (a tau_<τ>.pt file "
            f"name); its checkpoints: {listing}. Pass another --tau, or the file itself (or --filename NAME)."
        )
    raise ValueError(
        f"{folder} holds {len(candidates)} checkpoints ({listing}): say which with --tau (a tau_<τ>.pt file name), "
        "--filename NAME, or the path of the file itself."
    )


def _hub_filename(repo_id: str, tau: float | None, filename: str | None, revision, token) -> str:
    if filename is not None:
        return filename
    if tau is not None:
        return nanogpt_checkpoint_filename(tau)
    from huggingface_hub import list_repo_files

    try:
        files = [f for f in list_repo_files(repo_id, revision=revision, token=token) if f.endswith(".pt")]
    except (OSError, ValueError) as err:  # offline, no such repo, no access (huggingface_hub's errors are OSErrors)
        raise ValueError(
            f"Which checkpoint of {repo_id}? Pass --tau (the file tau_<τ>.pt, e.g. --tau 50 for "
            f"{nanogpt_checkpoint_filename(50)}) or --filename NAME; its files could not be listed "
            f"({type(err).__name__})."
        ) from None
    if len(files) == 1:
        return files[0]
    raise ValueError(
        f"{repo_id} holds {len(files)} checkpoints ({', '.join(files) or 'none'}): say which with --tau (a "
        "tau_<τ>.pt file name) or --filename NAME."
    )


def resolve_nanogpt_checkpoint(
    source: str | os.PathLike,
    tau: float | None = None,
    filename: str | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
) -> tuple[str, float | None]:
    """The local path of a nanoGPT checkpoint and its τ, from a file, a folder or a Hub repo.

    ``source`` is tried in this order:

    * a local file: itself;
    * a local folder: ``filename`` in it, else its only ``.pt`` file (nanoGPT's ``out_dir/ckpt.pt``), else the
      ``tau_<τ>.pt`` file whose τ equals ``tau``;
    * a Hub model repo id (``murtylab/topo-nanogpt-fineweb10B``, the authors' TopoNets ``tau_0.5.pt``, ``tau_1.0.pt``,
      ``tau_3.0.pt``, ``tau_50.0.pt``): ``filename``, else :func:`nanogpt_checkpoint_filename` of ``tau``
      (``tau_50.0.pt`` for 50), else the repo's only ``.pt`` file, fetched with ``huggingface_hub.hf_hub_download``
      (cached; offline, a file already in the cache is used).

    Returns:
        ``(path, tau)``: τ is ``tau`` when given, else read from the file name (:func:`tau_from_filename`), else
        ``None``.

    Raises:
        FileNotFoundError: ``source`` looks like a local path (absolute, ``./``, ``~``, a ``.pt`` name) that does
            not exist, or ``filename`` is not in the folder.
        ValueError: a folder or repo with several checkpoints and nothing to choose by, no match for ``tau``, or a
            Hub download that failed (offline and not cached, no such repo or file, no access): the message says
            what to pass instead.
    """
    _check_tau(tau)
    source_path = Path(os.path.expanduser(os.fspath(source)))
    if source_path.is_file():
        if filename is not None:
            raise ValueError(f"{source} is a file: --filename only selects a file in a folder or a Hub repo.")
        path = source_path
    elif source_path.is_dir():
        path = _checkpoint_in_folder(source_path, tau, filename)
    else:
        path = Path(_download_checkpoint(os.fspath(source), tau, filename, revision, cache_dir, token))
    return str(path), tau if tau is not None else tau_from_filename(path)


def _download_checkpoint(repo_id: str, tau, filename, revision, cache_dir, token) -> str:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    from huggingface_hub.utils import validate_repo_id

    looks_local = repo_id.startswith((".", "/", "~")) or repo_id.endswith(_CHECKPOINT_SUFFIXES)
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        looks_local = True
    if looks_local or "/" not in repo_id:
        raise FileNotFoundError(
            f"{repo_id!r} is not an existing file or folder, nor a Hub repo id of the form 'owner/name' (e.g. "
            "murtylab/topo-nanogpt-fineweb10B): give the path of a nanoGPT checkpoint, a folder of them, or a repo id."
        )
    name = _hub_filename(repo_id, tau, filename, revision, token)
    where = f"{name} of the Hub repo {repo_id}" + (f" at revision {revision}" if revision else "")
    try:
        return hf_hub_download(repo_id, name, revision=revision, cache_dir=cache_dir, token=token)
    except LocalEntryNotFoundError:  # offline (HF_HUB_OFFLINE=1 or no connection) and not in the cache
        raise ValueError(
            f"Cannot fetch {where}: the Hub cannot be reached (offline, or HF_HUB_OFFLINE=1) and the file is not "
            f"in the local cache. Download it where the Hub is reachable (`hf download {repo_id} {name}`) and pass "
            "the local file or its folder instead."
        ) from None
    except GatedRepoError:
        raise ValueError(
            f"Cannot fetch {where}: the repo is gated. Accept its conditions on the Hub and log in (`hf auth login`, "
            "or pass token=...)."
        ) from None
    except RepositoryNotFoundError:
        raise ValueError(
            f"Cannot fetch {where}: there is no such Hub model repo, or it is private (log in with `hf auth login` or "
            "pass token=...). The authors' TopoNets are in murtylab/topo-nanogpt-fineweb10B."
        ) from None
    except RevisionNotFoundError:
        raise ValueError(f"Cannot fetch {where}: the repo has no revision {revision!r}.") from None
    except EntryNotFoundError:
        raise ValueError(
            f"Cannot fetch {where}: the repo has no such file. Its checkpoints are named tau_<τ>.pt (e.g. "
            f"{nanogpt_checkpoint_filename(50)} for --tau 50); pass another --tau, or --filename NAME."
        ) from None


def _plain_settings(settings: Any) -> dict[str, Any] | None:
    """The JSON-scalar entries of nanoGPT's ``config`` (its train.py settings)."""
    if not isinstance(settings, dict):
        return None
    return {str(k): v for k, v in settings.items() if isinstance(v, (str, int, float, bool)) or v is None}


def convert_nanogpt(
    checkpoint_path: str | os.PathLike,
    tau: float | None = None,
    n_head: int | None = None,
    target_modules: list[str] | None = None,
    source: str | None = None,
) -> GPT2LMHeadModel:
    """Convert a nanoGPT checkpoint into a ``GPT2LMHeadModel`` carrying ``topography`` metadata.

    Args:
        checkpoint_path: a nanoGPT ``train.py`` checkpoint (``{"model_args", "model", ...}``) or a bare state dict.
        tau: τ the model was trained with; by default read from the file name (``tau_<τ>.pt``). When neither says,
            the sheets are attached as inferred metadata (``inferred: true``, ``tau: 0``).
        n_head: attention heads, needed only for a bare state dict (``model_args`` has it otherwise).
        target_modules: the topographic layers (default ``["mlp.c_fc"]``, every block's MLP expansion).
        source: where the checkpoint came from, when not a local file (e.g. the Hub repo id given to
            :func:`resolve_nanogpt_checkpoint`), recorded as ``config.conversion["source"]``.

    The model is in float32 and in eval mode. ``config.conversion`` records the source (file name, ``iter_num``,
    ``best_val_loss``, nanoGPT's ``model_args`` and the plain entries of its training ``config``).
    """
    _check_tau(tau)
    checkpoint = load_nanogpt_checkpoint(checkpoint_path)
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

    file_tau = tau_from_filename(checkpoint_path)
    if tau is not None and file_tau is not None and not math.isclose(tau, file_tau):
        logger.warning(
            "tau=%g given, but the file name %s says tau=%g: using %g.", tau, checkpoint_path, file_tau, tau
        )
    tau = tau if tau is not None else file_tau
    targets = target_modules or NANOGPT_TARGET_MODULES
    if tau is None:
        logger.warning(
            "τ of %s is unknown (no --tau and no tau_<τ> in the file name): its sheets are recorded as inferred "
            "(inferred: true, tau: 0). Pass tau=... if it was trained with TopoLoss.",
            checkpoint_path,
        )
        attach_inferred_topography(model, targets)
    else:
        TopoRegularizer(TopoConfig(target_modules=targets, tau=tau)).config_for(model).attach_to(
            model.config, step=checkpoint.get("iter_num") if isinstance(checkpoint.get("iter_num"), int) else None
        )

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
    settings = _plain_settings(checkpoint.get("config"))
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
    from .loading import check_tokenizer, load_tokenizer

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
