"""What ``hf-topo push`` does: build the upload folder of a saved TopoNet (model, tokenizer, ``config.json`` with its
topography, model card, figures) and push it to the Hub (its Space: :func:`hf_topo.app.space.push_space_folder`).

    from hf_topo.hub.push import PushArguments, push_model

    push_model(PushArguments(model="outputs/toponet", repo_id="you/toponet-tiny", dry_run=True))
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from .upload import build_upload_folder, check_hub_online, push_folder

__all__ = ["PushArguments", "push_model"]

logger = logging.getLogger(__name__)


@dataclass
class PushArguments:
    """What to push, where, and what the card says."""

    model: str = field(metadata={"help": "Saved model directory (hf-topo pretrain, convert-toponet, ...)."})
    repo_id: str = field(metadata={"help": "Target Hub repo, 'user_or_org/name'."})
    private: bool = field(default=False, metadata={"help": "Create the repo private (only when it does not exist)."})
    revision: str | None = field(default=None, metadata={"help": "Branch to commit to (created if missing)."})
    commit_message: str | None = field(default=None, metadata={"help": "Commit message."})
    dry_run: bool = field(default=False, metadata={"help": "Write the upload folder and stop (no network)."})
    output_dir: str | None = field(
        default=None, metadata={"help": "The upload folder (default: '<model>-hub' next to the model)."}
    )
    overwrite: bool = field(default=False, metadata={"help": "Replace a non-empty upload folder."})
    analysis_dir: str | None = field(
        default=None, metadata={"help": "hf-topo analyze output: its PNGs and report.json summary go in the card."}
    )
    tokenizer: str | None = field(
        default=None,
        metadata={
            "help": "Tokenizer (Hub id or path) to push instead of the model directory's (an image classifier's "
            "image processor)."
        },
    )
    infer_topography: bool = field(
        default=False, metadata={"help": "Attach inferred sheets to a model without topography metadata."}
    )
    datasets: list[str] | None = field(
        default=None, metadata={"help": "Hub ids of the training data (card metadata)."}
    )
    eval_dataset: str | None = field(
        default=None, metadata={"help": "Dataset the eval loss was measured on (puts perplexity in the model-index)."}
    )
    eval_dataset_config: str | None = field(default=None, metadata={"help": "Its config name."})
    base_model: str | None = field(default=None, metadata={"help": "Model this one was fine-tuned from."})
    license: str | None = field(default=None, metadata={"help": "License id (e.g. apache-2.0, mit)."})
    language: str | None = field(
        default=None, metadata={"help": "Language of the training text (default: en; none for an image classifier)."}
    )
    token: str | None = field(default=None, metadata={"help": "Hub token (default: the saved login or HF_TOKEN)."})
    space: bool = field(
        default=False, metadata={"help": "Write (and push) a Gradio Space showing --repo_id in the explorer instead."}
    )
    space_id: str | None = field(default=None, metadata={"help": "The Space repo (default: '<repo_id>-explorer')."})
    space_baseline: str | None = field(
        default=None, metadata={"help": "Hub id of the baseline the Space shows beside the TopoNet."}
    )
    space_requirement: str | None = field(
        default=None,
        metadata={
            "help": "pip requirement of hf_topo in the Space's requirements.txt (default hf_topo[app]==VERSION)."
        },
    )


def push_model(args: PushArguments) -> dict:
    """Build the upload folder of ``args.model`` and push it to ``args.repo_id`` unless ``args.dry_run`` (a Space
    that shows it, ``args.space``: :func:`hf_topo.app.space.push_space_folder`).

    Returns:
        ``{"folder", "files", "commit_url"}`` (``commit_url`` ``None`` on a dry run).
    """
    folder = args.output_dir or os.path.normpath(args.model) + "-hub"
    if not args.dry_run:
        check_hub_online(args.repo_id)  # offline: refuse before the folder is written
    files = build_upload_folder(
        args.model,
        folder,
        repo_id=args.repo_id,
        analysis_dir=args.analysis_dir,
        tokenizer=args.tokenizer,
        infer_topography=args.infer_topography,
        overwrite=args.overwrite,
        datasets=args.datasets,
        eval_dataset=args.eval_dataset,
        eval_dataset_config=args.eval_dataset_config,
        base_model=args.base_model,
        license=args.license,
        language=args.language if args.language is not None else _default_language(args.model),
    )  # checks every input (model, repo id, analysis, tokenizer, upload folder) before it writes anything
    logger.info("Upload folder %s: %d files", os.path.abspath(folder), len(files))
    result = {"folder": os.path.abspath(folder), "files": files, "commit_url": None}
    if args.dry_run:
        return result
    commit = push_folder(
        folder,
        args.repo_id,
        private=True if args.private else None,  # else the namespace's default visibility
        revision=args.revision,
        commit_message=args.commit_message,
        token=args.token,
    )
    result["commit_url"] = commit.commit_url
    logger.info("Pushed to https://huggingface.co/%s (%s)", args.repo_id, commit.commit_url)
    return result


def is_image_classifier_folder(model: str | os.PathLike) -> bool:
    """Whether a local model folder's ``config.json`` names an ``*ForImageClassification`` architecture."""
    import json

    config_path = os.path.join(model, "config.json")
    if not os.path.isfile(config_path):
        return False
    try:
        with open(config_path) as f:
            architectures = json.load(f).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return False  # build_upload_folder reports a broken config.json
    return any(str(name).endswith("ForImageClassification") for name in architectures)


def _default_language(model: str) -> str | None:
    """``en`` for a language model; none for an image classifier."""
    return None if is_image_classifier_folder(model) else "en"
