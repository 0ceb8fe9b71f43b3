"""The ``hf-topo`` command: one console command, a module of this package per subcommand.

``hf-topo --help``, ``hf-topo --version`` and a mistyped command import neither torch nor transformers: the commands
are a static table here, and ``import hf_topo`` itself is light (its model classes join transformers' Auto classes
when those load: :mod:`hf_topo._import_hooks`). Only ``hf-topo COMMAND ...`` imports ``hf_topo.cli.<module>`` and
what the command needs.

    hf-topo pretrain --train_file corpus.txt --tau 5 --max_steps 300 --output_dir outputs/toponet
    hf-topo pretrain recipe.yaml                       # every flag from a YAML/JSON file (flags after it override)
    accelerate launch -m hf_topo.cli.pretrain --config recipe.yaml    # the same command on several processes

Every subcommand is a module of this package with a ``make_parser()`` and a ``main(argv)`` (its parser and a call
into the library, nothing else), so it also runs as ``python -m hf_topo.cli.<module>`` and under ``accelerate launch
-m hf_topo.cli.<module>``; ``hf-topo COMMAND --help`` lists its flags. A new command is such a module plus one row of
:data:`COMMANDS`.
"""

from __future__ import annotations

import importlib
import logging
import sys

# transformers >= 5.25 probes the `kernels` package for a flash-attention fallback while its model modules import;
# offline (HF_HUB_OFFLINE=1) `kernels` then logs "Skipping publisher trust check ..." through Python's last-resort
# handler, before any command has set up logging. Those lines are not about the command: a refused input must stay
# one error line on stderr. Only warnings are silenced; the package's errors still reach the user.
logging.getLogger("kernels").setLevel(logging.ERROR)

__all__ = ["COMMANDS", "main", "usage", "version"]

#: subcommand → (module under hf_topo.cli, one-line description)
COMMANDS: dict[str, tuple[str, str]] = {
    "pretrain": (
        "pretrain",
        "Pretrain a TopoNet or its τ=0 baseline: a language model, or an image classifier (--train_dir).",
    ),
    "finetune-lora": ("finetune_lora", "LoRA fine-tuning of a TopoNet with PEFT; the adapter keeps its topography."),
    "eval-blimp": ("eval_blimp", "BLiMP accuracy with lm-evaluation-harness's convention."),
    "analyze": ("analyze", "Topography, dimensionality, robustness and maps of a model and its baseline."),
    "downsample": (
        "downsample",
        "Downsample a TopoNet's sheets (φ×φ, per-unit gains; Linear and Conv2d) and save the smaller model.",
    ),
    "push": ("push", "Push a TopoNet to the Hugging Face Hub with its model card and maps."),
    "convert-toponet": (
        "convert_toponet",
        "Convert the authors' TopoNets (ResNet-18/50, ViT-B/32, nanoGPT; a file or a Hub repo) to transformers.",
    ),
    "compare-lora": ("compare_lora", "One LoRA recipe on a baseline and TopoNets at several ranks: table and plot."),
    "compare-regularizers": (
        "compare_regularizers",
        "Baseline, TopoLoss, Weight and Activation Similarity on one recipe: table and figure.",
    ),
    "claims": ("claims", "Every CPU-testable claim of the papers over several seeds: TopoNet vs baseline, verdicts."),
    "truong-hasson": (
        "truong_hasson",
        "Truong & Hasson's CNN (11x11 fc1): WS/AS over λ, noise and weight robustness, neighbour-r bimodality.",
    ),
    "arrange": (
        "arrange",
        "Arrange a model's MLP units on their sheets post hoc; the model computes the same function.",
    ),
    "demo": ("demo", "Pretrain a small TopoNet and its τ=0 twin offline and report both (--domain vision: digits)."),
    "app": ("app", "Explore a TopoNet's sheets in the browser with Gradio (the app extra of hf_topo)."),
}


def version() -> str:
    """hf_topo's version (``hf_topo/_version.py``)."""
    from hf_topo._version import __version__

    return __version__


def usage() -> str:
    """The text of ``hf-topo --help``: the version and one line per command."""
    width = max(len(name) for name in COMMANDS)
    lines = [
        f"hf-topo {version()}: topographic vision and language models in the Hugging Face stack.",
        "",
        "usage: hf-topo COMMAND [CONFIG.yaml|--config CONFIG.yaml] [--flags ...]",
        "",
        "commands:",
        *(f"  {name:<{width}}  {description}" for name, (_, description) in COMMANDS.items()),
        "",
        "`hf-topo COMMAND --help` lists the flags of a command. Under several processes:",
        "  accelerate launch -m hf_topo.cli.pretrain ...",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hf-topo`` console script (and of ``python -m hf_topo.cli``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"hf-topo {version()}")
        return 0
    name = argv[0]
    if name not in COMMANDS:
        close = [c for c in COMMANDS if c.startswith(name[:3])]
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        print(f"hf-topo: unknown command {name!r}.{hint}\n\n{usage()}", file=sys.stderr)
        return 2
    from hf_topo.cli.arguments import run_command

    module = importlib.import_module(f"hf_topo.cli.{COMMANDS[name][0]}")
    return run_command(module.main, argv[1:], prog=f"hf-topo {name}")
