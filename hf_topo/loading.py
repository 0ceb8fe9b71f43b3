"""Loading what a command is given: model sources, tokenizers and data files, each refused before anything runs when
``from_pretrained`` or ``datasets`` would fail late or, worse, silently.

=========================================  =======================================================================
input                                      refused by
=========================================  =======================================================================
a model folder that does not exist, has    :func:`check_model_source` (says which, and what to pass instead)
no config.json or no weights; a LoRA
adapter folder; an unreachable Hub id
a folder without tokenizer files           :func:`load_tokenizer` (transformers would build an empty tokenizer)
a tokenizer that encodes text to nothing   :func:`check_tokenizer` (called by the packing, BLiMP, the analyses)
a data file that is missing or empty       :func:`check_data_file`
=========================================  =======================================================================

Every command that reads a model calls :func:`check_model_source` before its tokenizer, its data or any training or
scoring. The errors name the parameter to change (:mod:`hf_topo.errors`): ``tokenizer_name=`` from Python,
``--tokenizer_name`` on the command line.
"""

from __future__ import annotations

import logging
import os

from .errors import InputError, MissingFileError, parameter

__all__ = [
    "TOKENIZER_FILES",
    "WEIGHT_FILES",
    "check_data_file",
    "check_model_source",
    "check_tokenizer",
    "is_hub_id",
    "load_tokenizer",
    "tokenizer_display_name",
]

logger = logging.getLogger(__name__)

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
    source = os.fspath(name_or_path)
    if os.path.isdir(source):
        files = set(os.listdir(source))
        if "config.json" not in files:
            if "adapter_config.json" in files:
                raise InputError(
                    f"{source} is a LoRA adapter folder (adapter_config.json), not a full model: pass the model it "
                    f"was trained on, or the merged model that `hf-topo finetune-lora --merge` writes to "
                    f"{os.path.join(source, 'merged')}."
                )
            raise InputError(
                f"{source} is not a saved model folder (no config.json there): pass the folder save_pretrained wrote "
                "(the --output_dir of hf-topo pretrain, the --output_dir of hf-topo convert-toponet) or a Hub id."
            )
        if not files & set(WEIGHT_FILES):
            raise InputError(
                f"{source} has a config.json but no weights (none of {', '.join(WEIGHT_FILES)}): the save did not "
                f"finish or only the config was copied. Save the model there again with "
                f"model.save_pretrained({source!r}), or pass another folder."
            )
        return
    if os.path.isfile(source):
        raise InputError(
            f"{source} is a file; a model is loaded from the folder that holds its config.json and weights: pass "
            f"{os.path.dirname(source) or '.'}."
        )
    if not is_hub_id(source):
        raise MissingFileError(
            f"Model folder {source!r} does not exist (and it is not a Hub id of the form 'owner/name'): pass an "
            "existing model folder or a Hub id."
        )
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(source, **hub_kwargs)
    except (OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(
            f"Cannot load a model from {source!r}: there is no local folder of that name, and the Hub did not provide "
            f"it ({reason}). Pass an existing model folder, or a Hub id that is reachable from here (or already in "
            "the Hugging Face cache)."
        ) from None


#: Files of a saved tokenizer (any one of them). From a folder with none, ``AutoTokenizer`` builds an *empty*
#: tokenizer instead of failing: every text encodes to nothing.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "vocab.txt",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tekken.json",
)
#: Text every usable tokenizer encodes to at least one token.
_PROBE_TEXT = "The cat sat on the mat."


def check_data_file(path: str | os.PathLike, name: str) -> None:
    """Refuse a data file that does not exist or holds only whitespace, naming it by the parameter ``name`` that was
    given it (e.g. ``"train_file"``: the message reads ``train_file='x.txt'``, and ``--train_file 'x.txt'`` on the
    command line; a name that is not an identifier, e.g. ``"Text file"``, is written as it is).

    Checked before ``datasets`` sees the file: its own errors on an empty file are about missing ``features``.

    Raises:
        MissingFileError: ``path`` does not exist (a ``FileNotFoundError``).
        InputError: the file is empty or whitespace only (a ``ValueError``).
    """
    path = os.fspath(path)
    given = parameter(name, repr(path)) if name.isidentifier() else f"{name} {path!r}"
    if not os.path.isfile(path):
        raise MissingFileError(f"{given} does not exist.")
    with open(path, encoding="utf-8", errors="replace") as f:
        while chunk := f.read(1 << 16):
            if chunk.strip():
                return
    size = os.path.getsize(path)
    raise InputError(
        f"{given} is empty ({'0 bytes' if size == 0 else f'{size} bytes of whitespace only'}): "
        "give a file with text in it."
    )


def tokenizer_display_name(tokenizer) -> str:
    """How messages name ``tokenizer``: the folder or Hub id it was loaded from, else its class name."""
    return getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__


def check_tokenizer(tokenizer, source: str | os.PathLike | None = None) -> None:
    """Refuse a tokenizer that cannot encode text (e.g. the empty one ``AutoTokenizer`` builds from a model folder
    without tokenizer files), before it turns every text into nothing and every score into a tie.

    Raises:
        TypeError: ``tokenizer`` is not a tokenizer (not callable on a string).
        ValueError: it encodes a plain English sentence to no token.
    """
    name = str(source) if source is not None else tokenizer_display_name(tokenizer)
    if not callable(tokenizer):
        raise TypeError(
            f"Expected a transformers tokenizer (e.g. from AutoTokenizer.from_pretrained), got a "
            f"{type(tokenizer).__name__}."
        )
    if not tokenizer(_PROBE_TEXT, add_special_tokens=False)["input_ids"]:
        raise InputError(
            f"The tokenizer of {name!r} ({type(tokenizer).__name__}, {len(tokenizer)} tokens) encodes "
            f"{_PROBE_TEXT!r} to no token: it has no vocabulary. transformers builds such an empty tokenizer from a "
            f"model folder without tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, ...). Use the model's real "
            f"tokenizer: save it next to the model (tokenizer.save_pretrained(MODEL_DIR)) or pass "
            f"{parameter('tokenizer_name')} with its Hub id or folder."
        )


def is_hub_id(name: str) -> bool:
    """Whether ``name`` reads as a Hub repo id (``owner/name`` or ``name``), not as a local path (``./x``, ``~/x``,
    an absolute path, several slashes)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return not name.startswith((".", "~"))


def load_tokenizer(name_or_path: str | os.PathLike, fallback=None, **from_pretrained_kwargs):
    """``AutoTokenizer.from_pretrained(name_or_path)``, refusing what would silently encode text to nothing.

    Args:
        name_or_path: a Hub id (``openai-community/gpt2``) or a local folder that holds a saved tokenizer (any of
            :data:`TOKENIZER_FILES`), e.g. a model folder saved with its tokenizer.
        fallback: returned when ``name_or_path`` is a folder without tokenizer files (e.g. a baseline model saved
            without one, analysed with the main model's tokenizer); without it, such a folder is an error.
        **from_pretrained_kwargs: passed to ``AutoTokenizer.from_pretrained`` (``revision``, ``cache_dir``, ...).

    Returns:
        The tokenizer (a ``PreTrainedTokenizerBase``), checked with :func:`check_tokenizer`.

    Raises:
        FileNotFoundError: ``name_or_path`` is a local path (absolute, ``./``, ``~``) that does not exist.
        ValueError: the folder has no tokenizer files, the tokenizer cannot be loaded (offline, no such Hub repo)
            or it encodes text to nothing. Every message says to pass ``tokenizer_name``.
    """
    from transformers import AutoTokenizer

    source = os.fspath(name_or_path)
    if os.path.isdir(source):
        if not any(os.path.isfile(os.path.join(source, name)) for name in TOKENIZER_FILES):
            if fallback is not None:
                logger.info("%s has no tokenizer files: using %s", source, tokenizer_display_name(fallback))
                return fallback
            raise InputError(
                f"{source} has no tokenizer: none of {', '.join(TOKENIZER_FILES)} is there (transformers would "
                "build an empty tokenizer from it that encodes every text to nothing). Save the model's tokenizer "
                f"into it (tokenizer.save_pretrained({source!r})), or pass {parameter('tokenizer_name')} with the Hub "
                "id or a local folder of the tokenizer the model was trained with."
            )
    elif os.path.isfile(source):
        raise InputError(
            f"{source} is a file; a tokenizer is loaded from the folder that holds its files (tokenizer.json, "
            f"tokenizer_config.json, ...): pass {parameter('tokenizer_name', repr(os.path.dirname(source) or '.'))}."
        )
    elif not is_hub_id(source):
        raise MissingFileError(
            f"Tokenizer folder {source!r} does not exist (and it is not a Hub id of the form 'owner/name'): pass "
            f"{parameter('tokenizer_name')} with an existing folder or a Hub id."
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **from_pretrained_kwargs)
    except (OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(
            f"Cannot load a tokenizer from {source!r}: there is no local folder of that name, and the Hub did not "
            f"provide it ({reason}). Offline or without Hub access, pass {parameter('tokenizer_name')} with a local folder that "
            f"holds the tokenizer files (save it once where the Hub is reachable: "
            f"AutoTokenizer.from_pretrained({source!r}).save_pretrained(DIR))."
        ) from err
    check_tokenizer(tokenizer, source)
    return tokenizer
