"""A Hugging Face Space for a TopoNet: the explorer loading the model from its Hub id.

:func:`write_space_folder` writes what the Space repo gets:

====================  ================================================================================================
file                  content
====================  ================================================================================================
``app.py``            builds :class:`~hf_topo.app.TopoNetExplorer` from the model's Hub id (the environment variable
                      ``HF_TOPO_SPACE_MODEL`` overrides it, e.g. with a local folder for a test) and launches it
``requirements.txt``  hf_topo with its ``app`` extra (or the pip requirement given), gradio at the SDK version
``README.md``         the Space metadata (``sdk: gradio``, ``sdk_version``, ``app_file``, ``models``) and a short text
====================  ================================================================================================

:func:`push_space` creates the Space (``create_repo(repo_type="space", space_sdk="gradio")``) and uploads the folder.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError, parameter

if TYPE_CHECKING:
    from ..hub.push import PushArguments

__all__ = [
    "SPACE_MODEL_ENV",
    "SPACE_BASELINE_ENV",
    "SPACE_FILES",
    "push_space",
    "push_space_folder",
    "write_space_folder",
]

logger = logging.getLogger(__name__)

#: Environment variables that override the model (and baseline) the Space's app.py loads.
SPACE_MODEL_ENV, SPACE_BASELINE_ENV = "HF_TOPO_SPACE_MODEL", "HF_TOPO_SPACE_BASELINE"
#: The files of a Space folder.
SPACE_FILES = ("README.md", "app.py", "requirements.txt")

_APP_TEMPLATE = '''"""TopoNet explorer for {model_id} (written by `hf-topo push --space`)."""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from hf_topo.app import TopoNetExplorer, build_explorer  # noqa: E402

MODEL = os.environ.get("{model_env}", {model_id!r})
BASELINE = os.environ.get("{baseline_env}", {baseline_id!r}) or None

explorer = TopoNetExplorer.from_pretrained(MODEL, baseline=BASELINE)
demo = build_explorer(explorer, title={title!r})
demo.queue(default_concurrency_limit=1)

if __name__ == "__main__":
    demo.launch()
'''


def _gradio_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gradio")
    except PackageNotFoundError:
        raise ImportError(
            'Writing a Space needs gradio installed (its version goes in the Space metadata): pip install "hf_topo[app]".'
        ) from None


def write_space_folder(
    folder: str | os.PathLike,
    model_id: str,
    *,
    baseline_id: str | None = None,
    title: str | None = None,
    hf_topo_requirement: str | None = None,
    sdk_version: str | None = None,
    overwrite: bool = False,
    vision: bool = False,
) -> list[str]:
    """Write the Space of the TopoNet ``model_id`` into ``folder``; returns its files (sorted).

    Args:
        folder: where to write (must be empty unless ``overwrite``, and then hold only a Space written here).
        model_id: the model's Hub repo (``user/name``) that the Space loads.
        baseline_id: its baseline's Hub repo, shown beside it.
        title: the Space's title (default: ``TopoNet explorer: <model name>``).
        hf_topo_requirement: the pip requirement of hf_topo in ``requirements.txt`` (default
            ``hf_topo[app]==<this version>``; e.g. a ``git+https://...`` URL where hf_topo is not on the package index).
        sdk_version: the gradio version of the Space (default: the installed gradio's).
        overwrite: replace a folder written before.
        vision: the model is an image classifier (the Space's description speaks of images, not texts).
    """
    from huggingface_hub import SpaceCard, SpaceCardData

    from .._version import __version__
    from ..hub.upload import check_repo_id

    check_repo_id(model_id)
    if baseline_id is not None:
        check_repo_id(baseline_id)
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        if not overwrite:
            raise InputError(
                f"The Space folder {folder} exists and is not empty; pass {parameter('overwrite', True)}."
            )
        if sorted(p.name for p in folder.iterdir()) != sorted(SPACE_FILES):
            raise ValueError(
                f"Not overwriting {folder}: it holds other files than a Space written by hf_topo ({', '.join(SPACE_FILES)})."
            )
    folder.mkdir(parents=True, exist_ok=True)
    sdk_version = sdk_version or _gradio_version()
    title = title or f"TopoNet explorer: {model_id.split('/')[-1]}"
    (folder / "app.py").write_text(
        _APP_TEMPLATE.format(
            model_id=model_id,
            baseline_id=baseline_id or "",
            model_env=SPACE_MODEL_ENV,
            baseline_env=SPACE_BASELINE_ENV,
            title=title,
        )
    )
    requirement = hf_topo_requirement or f"hf_topo[app]=={__version__}"
    (folder / "requirements.txt").write_text(f"{requirement}\ngradio=={sdk_version}\n")
    models = [model_id] + ([baseline_id] if baseline_id else [])
    data = SpaceCardData(
        title=title[:30],  # the Hub's limit on a Space title
        sdk="gradio",
        sdk_version=sdk_version,
        app_file="app.py",
        models=models,
        tags=["toponets", "topography", "hf_topo"],
        emoji="🧠",
        colorFrom="indigo",
        colorTo="red",
        pinned=False,
        short_description="Cortical-sheet maps of a TopoNet"[:60],
    )
    body = (
        f"# {title}\n\n"
        f"Explore the topographic layers of [{model_id}](https://huggingface.co/{model_id}) on their cortical sheets: "
        + (
            "each unit's response to an uploaded image (averaged over the image: a convolution channel's feature map "
            "over space) and the first principal component of the weights"
            if vision
            else "each unit's response to a text (per token and averaged), the first principal component of the "
            "weights and the selectivity (Welch's t) between two lists of words or sentences"
        )
        + (f", beside its baseline [{baseline_id}](https://huggingface.co/{baseline_id})" if baseline_id else "")
        + ".\n\nWritten by `hf-topo push --space` ([hf_topo](https://arxiv.org/abs/2501.16396): TopoNets, Deb, Deb & "
        "Murty, ICLR 2025). Run it locally with `hf-topo app --model " + model_id + "`.\n"
    )
    SpaceCard.from_template(data, template_str="---\n{{ card_data }}\n---\n\n" + body).save(folder / "README.md")
    files = sorted(p.name for p in folder.iterdir() if p.is_file())
    logger.info("Space folder %s: %s", folder, ", ".join(files))
    return files


def push_space(
    folder: str | os.PathLike,
    space_id: str,
    *,
    private: bool | None = None,
    commit_message: str | None = None,
    token: str | None = None,
):
    """Create the Gradio Space ``space_id`` (if needed) and upload ``folder`` (:func:`write_space_folder`) to it.

    Refuses (``ValueError``) while ``HF_HUB_OFFLINE`` is set or the Hub cannot be reached. Returns the ``CommitInfo``.
    """
    from huggingface_hub import HfApi

    from ..hub.upload import OFFLINE_HELP, check_hub_online, check_repo_id, network_errors

    check_repo_id(space_id)
    folder = Path(folder)
    missing = [name for name in SPACE_FILES if not (folder / name).is_file()]
    if missing:
        raise ValueError(f"{folder} is not a Space folder (no {', '.join(missing)}): write it first (--dry_run).")
    check_hub_online(space_id)
    api = HfApi(token=token)
    try:
        url = api.create_repo(space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
        logger.info("Space %s", url)
        return api.upload_folder(
            repo_id=space_id,
            repo_type="space",
            folder_path=folder,
            commit_message=commit_message or "TopoNet explorer Space written by hf_topo",
        )
    except network_errors() as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(
            f"Cannot reach the Hugging Face Hub to create the Space {space_id} ({reason}). {OFFLINE_HELP}"
        ) from None


def push_space_folder(args: PushArguments) -> dict:
    """``hf-topo push --space``: write the Space folder of ``args.repo_id`` (:func:`write_space_folder`), and create and
    upload the Space (:func:`push_space`) unless ``args.dry_run``; returns ``{"folder", "files", "commit_url",
    "space_id"}``."""
    from ..hub.push import is_image_classifier_folder
    from ..hub.upload import check_hub_online
    from ..loading import check_model_source, is_hub_id

    if not is_hub_id(args.model) or os.path.isdir(args.model):
        check_model_source(args.model)  # a local folder of the model must be a saved model (a Hub id: --repo_id's)
    space_id = args.space_id or f"{args.repo_id}-explorer"
    folder = args.output_dir or os.path.normpath(args.model) + "-space"
    if not args.dry_run:
        check_hub_online(space_id)
    files = write_space_folder(
        folder,
        args.repo_id,
        baseline_id=args.space_baseline,
        hf_topo_requirement=args.space_requirement,
        overwrite=args.overwrite,
        vision=is_image_classifier_folder(args.model),
    )
    logger.info("Space folder %s: %s", os.path.abspath(folder), ", ".join(files))
    result = {"folder": os.path.abspath(folder), "files": files, "commit_url": None, "space_id": space_id}
    if args.dry_run:
        return result
    commit = push_space(
        folder, space_id, private=True if args.private else None, commit_message=args.commit_message, token=args.token
    )
    result["commit_url"] = commit.commit_url
    logger.info("Pushed the Space to https://huggingface.co/spaces/%s (%s)", space_id, commit.commit_url)
    return result
