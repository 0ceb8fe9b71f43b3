"""Push a TopoNet to the Hugging Face Hub with its sheet metadata, model card and topographic maps.

    # look first: write the upload folder (model, tokenizer, config.json with topography, README.md, figures/) and stop
    hf-topo push --model outputs/toponet --repo_id you/toponet-tiny --dry_run

    # push it (creates the repo; `hf auth login` or HF_TOKEN first), with the figures of `hf-topo analyze`
    hf-topo push --model outputs/toponet --repo_id you/toponet-tiny --private \\
        --analysis_dir outputs/analysis --datasets wikitext --eval_dataset wikitext --license apache-2.0

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

from hf_topo.cli.arguments import make_argument_parser, parse_command_line, run_command, setup_logging
from hf_topo.hub.push import PushArguments, push_model


def make_parser(prog: str | None = None):
    return make_argument_parser(PushArguments, prog, __doc__)


def main(argv: list[str] | None = None, prog: str | None = None) -> dict:
    setup_logging()
    (args,) = parse_command_line(make_parser(prog), sys.argv[1:] if argv is None else argv)
    if args.space:
        from hf_topo.app.space import push_space_folder

        result = push_space_folder(args)
        folder, files, space_id = result["folder"], result["files"], result["space_id"]
        print(f"Space folder {folder} ({len(files)} files): {', '.join(files)}")
        if args.dry_run:
            print(f"Dry run: nothing uploaded. Push it with the same command without --dry_run ({space_id}).")
        else:
            print(f"Pushed the Space to https://huggingface.co/spaces/{space_id} ({result['commit_url']})")
        return result
    result = push_model(args)
    folder, files = result["folder"], result["files"]
    print(f"Upload folder {folder} ({len(files)} files):")
    for name in files:
        print(f"  {name}  ({os.path.getsize(os.path.join(folder, name)):,} bytes)")
    if args.dry_run:
        print(f"Dry run: nothing uploaded. Push this folder with the same command without --dry_run ({args.repo_id}).")
    else:
        print(f"Pushed to https://huggingface.co/{args.repo_id} ({result['commit_url']})")
    return result


if __name__ == "__main__":
    sys.exit(run_command(main, prog="hf-topo push"))
