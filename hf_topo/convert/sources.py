"""Where a TopoNet checkpoint comes from: a local file, a folder of ``tau_<τ>`` files, or a Hub repo.

The authors publish their TopoNets on the Hub, one file per τ:

=====================================  ========  ============================  ==========================
Hub repo                               family    file name                     τ
=====================================  ========  ============================  ==========================
``murtylab/topo-resnet18-imagenet``    resnet    ``all_topo_tau_{τ}.pt``       0.5, 1, 5, 10, 20, 50
``murtylab/topo-resnet50-imagenet``    resnet    ``all_topo_tau_{τ}.pt``       30
``murtylab/topo-vit-b-32-imagenet``    vit       ``tau_{τ}.pt``                10
``murtylab/topo-nanogpt-fineweb10B``   nanogpt   ``tau_{τ}.pt``                0.5, 1, 3, 50
=====================================  ========  ============================  ==========================

(``{τ}`` is written as a Python float: ``all_topo_tau_1.0.pt``, ``tau_10.0.pt``.) A file is fetched with
``huggingface_hub.hf_hub_download`` (cached; offline, a file already in the cache is used). Another repo is read by
the same rule: its family from its name (``resnet``, ``vit``, ``nanogpt``/``gpt`` in it), its files ``tau_{τ}.pt``
(``all_topo_tau_{τ}.pt`` for a ResNet).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, MissingFileError, parameter
from .checkpoint import check_tau, tau_from_filename

__all__ = [
    "AUTHORS_CHECKPOINTS",
    "AuthorsRepo",
    "checkpoint_filename",
    "family_from_repo_id",
    "resolve_checkpoint_file",
]

_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")


@dataclass(frozen=True)
class AuthorsRepo:
    """One of the authors' Hub repos: its model family, file-name template and published τ values."""

    family: str
    filename_template: str
    taus: tuple[float, ...]
    architecture: str


#: The authors' published TopoNets (the module docstring's table).
AUTHORS_CHECKPOINTS: dict[str, AuthorsRepo] = {
    "murtylab/topo-resnet18-imagenet": AuthorsRepo(
        "resnet", "all_topo_tau_{tau}.pt", (0.5, 1.0, 5.0, 10.0, 20.0, 50.0), "ResNet-18"
    ),
    "murtylab/topo-resnet50-imagenet": AuthorsRepo("resnet", "all_topo_tau_{tau}.pt", (30.0,), "ResNet-50"),
    "murtylab/topo-vit-b-32-imagenet": AuthorsRepo("vit", "tau_{tau}.pt", (10.0,), "ViT-B/32"),
    "murtylab/topo-nanogpt-fineweb10B": AuthorsRepo("nanogpt", "tau_{tau}.pt", (0.5, 1.0, 3.0, 50.0), "nanoGPT"),
}


def family_from_repo_id(repo_id: str) -> str | None:
    """The model family of a Hub repo: from :data:`AUTHORS_CHECKPOINTS`, else from its name, else ``None``."""
    if repo_id in AUTHORS_CHECKPOINTS:
        return AUTHORS_CHECKPOINTS[repo_id].family
    name = repo_id.rsplit("/", 1)[-1].lower()
    for family, words in (("resnet", ("resnet",)), ("vit", ("vit",)), ("nanogpt", ("nanogpt", "gpt"))):
        if any(word in name for word in words):
            return family
    return None


def checkpoint_filename(tau: float, family: str | None = None, repo_id: str | None = None) -> str:
    """The file name of the TopoNet of ``tau`` in the authors' layout: ``all_topo_tau_10.0.pt`` (ResNets),
    ``tau_10.0.pt`` (ViT, nanoGPT, and any other family)."""
    if repo_id in AUTHORS_CHECKPOINTS:
        template = AUTHORS_CHECKPOINTS[repo_id].filename_template
    else:
        template = "all_topo_tau_{tau}.pt" if family == "resnet" else "tau_{tau}.pt"
    return template.format(tau=repr(float(tau)))


def _checkpoint_in_folder(folder: Path, tau: float | None, filename: str | None) -> Path:
    if filename is not None:
        path = folder / filename
        if not path.is_file():
            raise MissingFileError(f"{parameter('filename', repr(filename))}: {folder} has no such file.")
        return path
    candidates = sorted(p for p in folder.iterdir() if p.suffix in _CHECKPOINT_SUFFIXES and p.is_file())
    listing = ", ".join(p.name for p in candidates) or "none"
    if len(candidates) == 1 and (tau is None or tau_from_filename(candidates[0]) in (None, tau)):
        return candidates[0]  # e.g. nanoGPT's out_dir/ckpt.pt; tau then only says what the model was trained with
    if tau is not None:
        matches = [p for p in candidates if (t := tau_from_filename(p)) is not None and math.isclose(t, tau)]
        if len(matches) == 1:
            return matches[0]
        raise InputError(
            f"{folder} has {'no' if not matches else len(matches)} checkpoint(s) for {parameter('tau', f'{tau:g}')} "
            f"(a tau_<τ>.pt file name); its checkpoints: {listing}. Pass another {parameter('tau')}, or the file "
            f"itself (or {parameter('filename', 'NAME')})."
        )
    raise InputError(
        f"{folder} holds {len(candidates)} checkpoints ({listing}): say which with {parameter('tau')} (a tau_<τ>.pt "
        f"file name), {parameter('filename', 'NAME')}, or the path of the file itself."
    )


def _hub_filename(repo_id: str, tau: float | None, filename: str | None, revision, token) -> str:
    if filename is not None:
        return filename
    family = family_from_repo_id(repo_id)
    if tau is not None:
        known = AUTHORS_CHECKPOINTS.get(repo_id)
        if known is not None and not any(math.isclose(tau, t) for t in known.taus):
            raise InputError(
                f"{repo_id} has no TopoNet of {parameter('tau', f'{tau:g}')}: the authors published "
                f"{known.architecture} TopoNets of τ {', '.join(f'{t:g}' for t in known.taus)} there. Pass one of "
                f"these with {parameter('tau')}."
            )
        return checkpoint_filename(tau, family, repo_id)
    from huggingface_hub import list_repo_files

    example = checkpoint_filename(50 if family != "vit" else 10, family, repo_id)
    try:
        files = [f for f in list_repo_files(repo_id, revision=revision, token=token) if f.endswith(".pt")]
    except (OSError, ValueError) as err:  # offline, no such repo, no access (huggingface_hub's errors are OSErrors)
        raise InputError(
            f"Which checkpoint of {repo_id}? Pass {parameter('tau')} (the file tau_<τ>.pt, e.g. {example}) or "
            f"{parameter('filename', 'NAME')}; its files could not be listed ({type(err).__name__})."
        ) from None
    if len(files) == 1:
        return files[0]
    raise InputError(
        f"{repo_id} holds {len(files)} checkpoints ({', '.join(files) or 'none'}): say which with "
        f"{parameter('tau')} (a tau_<τ>.pt file name) or {parameter('filename', 'NAME')}."
    )


def resolve_checkpoint_file(
    source: str | os.PathLike,
    tau: float | None = None,
    filename: str | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
) -> tuple[str, float | None]:
    """The local path of a TopoNet checkpoint and its τ, from a file, a folder or a Hub repo.

    ``source`` is tried in this order:

    * a local file: itself;
    * a local folder: ``filename`` in it, else its only ``.pt`` file (nanoGPT's ``out_dir/ckpt.pt``), else the
      file whose name says τ = ``tau`` (``tau_<τ>``);
    * a Hub model repo id (the module docstring's table): ``filename``, else :func:`checkpoint_filename` of ``tau``
      (a τ that one of the authors' repos does not publish is refused before any download), else the repo's only
      ``.pt`` file, fetched with ``huggingface_hub.hf_hub_download``.

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
    check_tau(tau)
    source_path = Path(os.path.expanduser(os.fspath(source)))
    if source_path.is_file():
        if filename is not None:
            raise InputError(
                f"{source} is a file: {parameter('filename')} only selects a file in a folder or a Hub repo."
            )
        path = source_path
    elif source_path.is_dir():
        path = _checkpoint_in_folder(source_path, tau, filename)
    else:
        path = Path(_download_checkpoint(os.fspath(source), tau, filename, revision, cache_dir, token))
    return str(path), tau if tau is not None else tau_from_filename(path)


def is_hub_repo_id(source: str | os.PathLike) -> bool:
    """Whether ``source`` is not a local path and reads as a Hub repo id (``owner/name``)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    text = os.fspath(source)
    if os.path.exists(text) or text.startswith((".", "/", "~")) or text.endswith(_CHECKPOINT_SUFFIXES):
        return False
    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return "/" in text


def _download_checkpoint(repo_id: str, tau, filename, revision, cache_dir, token) -> str:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if not is_hub_repo_id(repo_id):
        raise FileNotFoundError(
            f"{repo_id!r} is not an existing file or folder, nor a Hub repo id of the form 'owner/name' (e.g. "
            "murtylab/topo-resnet18-imagenet): give the path of a checkpoint, a folder of them, or a repo id."
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
        raise InputError(
            f"Cannot fetch {where}: the repo is gated. Accept its conditions on the Hub and log in (`hf auth login`, "
            f"or pass {parameter('token', '...')})."
        ) from None
    except RepositoryNotFoundError:
        raise InputError(
            f"Cannot fetch {where}: there is no such Hub model repo, or it is private (log in with `hf auth login` or "
            f"pass {parameter('token', '...')}). The authors' TopoNets are in {', '.join(AUTHORS_CHECKPOINTS)}."
        ) from None
    except RevisionNotFoundError:
        raise ValueError(f"Cannot fetch {where}: the repo has no revision {revision!r}.") from None
    except EntryNotFoundError:
        raise InputError(
            f"Cannot fetch {where}: the repo has no such file. Its checkpoints are named after τ (e.g. "
            f"{checkpoint_filename(10, family_from_repo_id(repo_id), repo_id)} for {parameter('tau', 10)}); pass "
            f"another {parameter('tau')}, or {parameter('filename', 'NAME')}."
        ) from None
