"""Push a TopoNet to the Hugging Face Hub with its sheet metadata, model card and topographic maps.

    # look first: write the upload folder (model, tokenizer, config.json with topography, README.md, figures/) and stop
    hf-topo push --model outputs/toponet --repo_id you/toponet-tiny --dry_run

    # push it (creates the repo; `hf auth login` or HF_TOKEN first), with the figures of `hf-topo analyze`
    hf-topo push --model outputs/toponet --repo_id you/toponet-tiny --private \\
        --analysis_dir outputs/analysis --datasets wikitext --eval_dataset wikitext --license apache-2.0

    # a vision TopoNet (an image classifier from `hf-topo pretrain --train_dir`): its image processor instead of a
    # tokenizer, image-classification metadata, top-1/top-5 accuracy in the model-index on the named data set
    hf-topo push --model outputs/tiny-resnet --repo_id you/topo-tiny-resnet --datasets your/images --dry_run

    # a Space that shows the pushed TopoNet in the explorer (pip install "hf_topo[app]"): look first, then push
    hf-topo push --space --model outputs/toponet --repo_id you/toponet-tiny --dry_run --output_dir toponet-space
    hf-topo push --space --model outputs/toponet --repo_id you/toponet-tiny --space_id you/toponet-tiny-explorer

The folder written locally (`--output_dir`, default `<MODEL>-hub`, or `<MODEL>-space` with `--space`) is exactly what
is uploaded. With `--space` only the Space is written and pushed (app.py, requirements.txt, README.md with the Space
metadata): it loads `--repo_id` from the Hub, so push the model first. A model without
topography metadata (e.g. a GPT-Neo TopoNet published without any) is refused unless `--infer_topography` attaches
inferred most-square sheets (recorded as inferred).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from hf_topo.cli.arguments import make_argument_parser, parse_command_line, run_command, setup_logging
from hf_topo.hub import build_upload_folder, check_hub_online, push_folder


@dataclass
class PushArguments:
    """What to push, where, and what the card says."""

    model: str = field(metadata={"help": "Saved model directory (hf-topo pretrain, convert-nanogpt, ...)."})
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


def push(args: PushArguments) -> dict:
    """Build the upload folder, and push it unless `--dry_run`; returns `{"folder", "files", "commit_url"}`."""
    if args.space:
        return push_space_folder(args)
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
    print(f"Upload folder {os.path.abspath(folder)} ({len(files)} files):")
    for name in files:
        print(f"  {name}  ({os.path.getsize(os.path.join(folder, name)):,} bytes)")
    result = {"folder": os.path.abspath(folder), "files": files, "commit_url": None}
    if args.dry_run:
        print(f"Dry run: nothing uploaded. Push this folder with the same command without --dry_run ({args.repo_id}).")
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
    print(f"Pushed to https://huggingface.co/{args.repo_id} ({commit.commit_url})")
    return result


def _is_image_classifier_folder(model: str) -> bool:
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
    return None if _is_image_classifier_folder(model) else "en"


def push_space_folder(args: PushArguments) -> dict:
    """`--space`: write the Space folder of `--repo_id`, and create and upload the Space unless `--dry_run`."""
    from hf_topo.app import push_space, write_space_folder
    from hf_topo.data import is_hub_id
    from hf_topo.models import check_model_source

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
        vision=_is_image_classifier_folder(args.model),
    )
    print(f"Space folder {os.path.abspath(folder)} ({len(files)} files): {', '.join(files)}")
    result = {"folder": os.path.abspath(folder), "files": files, "commit_url": None, "space_id": space_id}
    if args.dry_run:
        print(f"Dry run: nothing uploaded. Push it with the same command without --dry_run ({space_id}).")
        return result
    commit = push_space(
        folder, space_id, private=True if args.private else None, commit_message=args.commit_message, token=args.token
    )
    result["commit_url"] = commit.commit_url
    print(f"Pushed the Space to https://huggingface.co/spaces/{space_id} ({commit.commit_url})")
    return result


def make_parser(prog: str | None = None):
    return make_argument_parser(PushArguments, prog, __doc__)


def main(argv: list[str] | None = None, prog: str | None = None) -> dict:
    setup_logging()
    (args,) = parse_command_line(make_parser(prog), sys.argv[1:] if argv is None else argv)
    return push(args)


if __name__ == "__main__":
    sys.exit(run_command(main, prog="hf-topo push"))
