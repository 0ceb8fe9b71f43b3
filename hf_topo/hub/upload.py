"""The upload folder of a model (:func:`build_upload_folder`) and its push to the Hub (:func:`push_folder`)."""

from __future__ import annotations

import importlib
import logging
import os
import shutil
from pathlib import Path

from ..errors import InputError, parameter
from ..loading import TOKENIZER_FILES, check_model_source
from .card import toponet_card
from .figures import render_sheet_maps
from .loading import is_image_classifier_config, load_toponet
from .results import REPORT_FILE, STATE_FILE, read_json, read_results, recipe_from_trainer_state

__all__ = [
    "FIGURES_DIR",
    "OFFLINE_HELP",
    "build_upload_folder",
    "check_hub_online",
    "check_repo_id",
    "network_errors",
    "load_image_processor",
    "push_folder",
]

logger = logging.getLogger(__name__)

FIGURES_DIR = "figures"
#: what to do when the Hub cannot be reached (the end of every such error message, here and in hf_topo.app.space).
OFFLINE_HELP = (
    "Unset HF_HUB_OFFLINE (it is set to 1) and check the network connection to the Hub, or build the folder only "
    "(hf-topo push --dry_run) and push it later from a machine online."
)


def network_errors() -> tuple[type[BaseException], ...]:
    """What a failed connection raises: ``ConnectionError`` (and so ``OfflineModeIsEnabled``) and the transport errors
    of whichever HTTP client this ``huggingface_hub`` uses."""
    errors: list[type[BaseException]] = [ConnectionError]
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError"), ("requests", "ConnectionError")):
        try:
            errors.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def check_hub_online(repo_id: str) -> None:
    """Refuse (``ValueError``) to reach the Hub while ``HF_HUB_OFFLINE`` is set, before anything is written."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise ValueError(f"Cannot push to the Hugging Face Hub ({repo_id}): HF_HUB_OFFLINE is set. {OFFLINE_HELP}")


def check_repo_id(repo_id: str) -> None:
    """Refuse (``ValueError``) a ``repo_id`` that is not ``"user_or_org/name"`` or that the Hub would not accept."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"repo_id={repo_id!r} must be 'user_or_org/model_name' (exactly one slash).")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(f"repo_id={repo_id!r} is not a valid Hub repo id: {err}") from None


def _prepare_empty_folder(folder: Path, model_dir: Path, overwrite: bool) -> None:
    folder_abs, model_abs = folder.resolve(), model_dir.resolve()
    if folder_abs == model_abs or folder_abs in model_abs.parents:
        raise ValueError(f"The upload folder {folder} must not be (or contain) the model directory {model_dir}.")
    if folder.exists() and any(folder.iterdir()):
        if not overwrite:
            raise InputError(
                f"The upload folder {folder} exists and is not empty; pass {parameter('overwrite', True)}."
            )
        if not ((folder / "README.md").is_file() and (folder / "config.json").is_file()):
            raise ValueError(
                f"Not overwriting {folder}: it is not empty and does not look like an upload folder written by hf_topo "
                "(no README.md and config.json). Choose another folder or empty it yourself."
            )
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)


def build_upload_folder(
    model_dir: str | os.PathLike,
    folder: str | os.PathLike,
    *,
    repo_id: str | None = None,
    analysis_dir: str | os.PathLike | None = None,
    tokenizer: str | os.PathLike | None = None,
    infer_topography: bool = False,
    overwrite: bool = False,
    **card_kwargs,
) -> list[str]:
    """Write into ``folder`` exactly what a Hub repo of the model gets; returns its files (relative, sorted).

    The folder holds the model re-saved with ``save_pretrained`` (``model.safetensors``, ``config.json`` with
    ``topography``, ``generation_config.json``), the tokenizer (an image classifier's: its image processor,
    ``preprocessor_config.json``), ``README.md`` (:func:`toponet_card`) and
    ``figures/*.png``: the PNGs of ``analysis_dir`` when given (its ``report.json`` summary also goes into the card),
    else the sheet maps drawn by :func:`render_sheet_maps`. Nothing else (no ``training_args.bin`` pickle, no
    ``metrics.json`` with local paths).

    Args:
        model_dir: a saved model directory (``config.json`` + weights), e.g. the output of ``scripts/pretrain.py``.
        folder: where to write (must be empty unless ``overwrite``; never the model directory).
        repo_id: the target repo (``user/name``), shown in the card.
        analysis_dir: output directory of ``scripts/analyze.py`` for this model.
        tokenizer: tokenizer to save instead of the one in ``model_dir`` (Hub id or path); for an image classifier,
            the image processor to save instead of the one in ``model_dir``.
        infer_topography: a model without ``topography`` metadata gets inferred sheets instead of an error.
        overwrite: replace a non-empty ``folder``.
        **card_kwargs: passed to :func:`toponet_card` (``datasets``, ``eval_dataset``, ``base_model``, ``license``, ...).
    """
    model_dir, folder = Path(model_dir), Path(folder)
    if not model_dir.is_dir():
        raise FileNotFoundError(
            f"Model folder {model_dir} does not exist: pass the folder save_pretrained wrote (the --output_dir of "
            "hf-topo pretrain, the --output_dir of hf-topo convert-toponet)."
        )
    check_model_source(model_dir)
    if repo_id is not None:
        check_repo_id(repo_id)
    figure_sources: list[Path] = []
    if analysis_dir is not None:
        analysis_dir = Path(analysis_dir)
        if not analysis_dir.is_dir():
            raise InputError(
                f"{parameter('analysis_dir', analysis_dir)} is not a directory (expected hf-topo analyze's "
                "--output_dir)."
            )
        if not (analysis_dir / REPORT_FILE).is_file():
            raise InputError(
                f"{parameter('analysis_dir', analysis_dir)} has no {REPORT_FILE}, so it is not the --output_dir of "
                "hf-topo analyze (whose summary and figures go in the card): pass that folder (e.g. "
                f"outputs/demo/analysis), or leave {parameter('analysis_dir')} out to draw the sheet maps."
            )
        figure_sources = sorted(analysis_dir.glob("*.png"))

    model = load_toponet(model_dir, infer_if_missing=infer_topography)
    tokenizer_source = tokenizer if tokenizer is not None else model_dir
    vision = is_image_classifier_config(model.config)
    if vision:
        loaded_tokenizer = load_image_processor(tokenizer_source)
    else:
        loaded_tokenizer = _load_tokenizer(tokenizer_source, model)

    # Read (and so check) every file the card uses before anything is written.
    results = read_results(model_dir, analysis_dir)
    recipe = {}
    if (model_dir / STATE_FILE).is_file():
        recipe = recipe_from_trainer_state(read_json(model_dir / STATE_FILE))

    _prepare_empty_folder(folder, model_dir, overwrite)
    model.save_pretrained(folder)
    loaded_tokenizer.save_pretrained(folder)
    figures_dir = folder / FIGURES_DIR
    figures_dir.mkdir()
    if figure_sources:
        for source in figure_sources:
            shutil.copyfile(source, figures_dir / source.name)
    else:
        render_sheet_maps(model, figures_dir / "sheet_maps.png")
    figures = sorted(f"{FIGURES_DIR}/{p.name}" for p in figures_dir.glob("*.png"))

    card = toponet_card(
        model if vision else model.config,  # a model: its convolutions' depth is spelled out as in·kh·kw
        repo_id=repo_id,
        results=results,
        recipe=recipe,
        figures=figures,
        **card_kwargs,
    )
    card.save(folder / "README.md")
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    logger.info("Upload folder %s: %s", folder, ", ".join(files))
    return files


def load_image_processor(source):
    """The image processor of an image classifier (its ``preprocessor_config.json``), or an :class:`InputError` (a
    ``ValueError``) saying how to give one."""
    from transformers import AutoImageProcessor

    how_to_fix = (
        "An image classifier on the Hub needs its image processor (the resize and normalisation its images get): pass "
        f"{parameter('tokenizer', 'PATH_OR_HUB_ID')} (an image processor), or save one into the model directory "
        "(image_processor.save_pretrained(MODEL_DIR); hf-topo pretrain --train_dir does)."
    )
    if Path(source).is_dir() and not (Path(source) / "preprocessor_config.json").is_file():
        raise InputError(f"No image processor in {source} (no preprocessor_config.json). {how_to_fix}")
    try:
        return AutoImageProcessor.from_pretrained(source)
    except (OSError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else repr(err)
        raise InputError(f"No image processor could be loaded from {source} ({reason}). {how_to_fix}") from None


def _load_tokenizer(tokenizer_source, model):
    """The tokenizer of a causal LM, checked against its vocabulary."""
    from transformers import AutoTokenizer

    how_to_fix = (
        f"A Hub model needs its tokenizer: pass {parameter('tokenizer', 'PATH_OR_HUB_ID')}, or save one into the "
        "model directory (e.g. AutoTokenizer.from_pretrained('gpt2').save_pretrained(MODEL_DIR))."
    )
    # transformers builds an empty tokenizer from a directory without tokenizer files instead of failing
    if Path(tokenizer_source).is_dir() and not any((Path(tokenizer_source) / f).is_file() for f in TOKENIZER_FILES):
        raise InputError(f"No tokenizer in {tokenizer_source} (none of {', '.join(TOKENIZER_FILES)}). {how_to_fix}")
    try:
        loaded_tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    except (OSError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else repr(err)
        raise InputError(f"No tokenizer could be loaded from {tokenizer_source} ({reason}). {how_to_fix}") from None
    vocab_size = getattr(model.config, "vocab_size", None)
    if vocab_size is not None and len(loaded_tokenizer) > vocab_size:
        raise InputError(
            f"The tokenizer from {tokenizer_source} has {len(loaded_tokenizer)} tokens but the model only "
            f"{vocab_size} embeddings: it is not this model's tokenizer. {how_to_fix}"
        )
    return loaded_tokenizer


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
):
    """Upload ``folder`` (as written by :func:`build_upload_folder`) to the model repo ``repo_id``.

    Refuses (``ValueError``) while ``HF_HUB_OFFLINE`` is set or the Hub cannot be reached. Creates the repo if needed (``private`` applies only then; ``None`` leaves the visibility to the Hub's default
    for the namespace) and the branch ``revision`` if it is not ``main``,
    then commits the whole folder with ``HfApi.upload_folder``. Returns the ``CommitInfo``.
    """
    from huggingface_hub import HfApi

    check_repo_id(repo_id)
    folder = Path(folder)
    if not (folder / "README.md").is_file() or not (folder / "config.json").is_file():
        raise ValueError(f"{folder} is not an upload folder (no README.md/config.json): build it first.")
    check_hub_online(repo_id)
    api = HfApi(token=token)
    try:
        repo_url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        logger.info("Repository %s", repo_url)
        if revision is not None and revision != "main":
            api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
        return api.upload_folder(
            repo_id=repo_id,
            repo_type="model",
            folder_path=folder,
            commit_message=commit_message or "Upload TopoNet with hf_topo",
            revision=revision,
        )
    except network_errors() as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(
            f"Cannot reach the Hugging Face Hub to push {folder} to {repo_id} ({reason}). {OFFLINE_HELP}"
        ) from None
