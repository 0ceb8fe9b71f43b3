"""Command-line parsing shared by the ``hf-topo`` subcommands: flags, and a YAML/JSON config file.

``hf-topo pretrain recipe.yaml`` and ``hf-topo pretrain --config recipe.yaml --tau 2`` read every setting from the
file (keys are the flag names without ``--``); flags given next to it override the file's values.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import os
import re
import sys
from collections.abc import Callable
from typing import Any

import transformers
from transformers import HfArgumentParser

from hf_topo.errors import command_line_message

CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
CONFIG_HELP = (
    "Settings can also come from a YAML or JSON file, given first (`CONFIG.yaml`) or as `--config CONFIG.yaml`; "
    "its keys are the flag names without `--`, and flags given next to it win."
)


def setup_logging(level: int = logging.INFO) -> None:
    """Log at ``level`` from hf_topo and the command, WARNING from transformers (what the commands print around)."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=level)
    transformers.utils.logging.set_verbosity_warning()


def split_config_file(argv: list[str]) -> tuple[str | None, list[str]]:
    """``[CONFIG] [--config CONFIG] flags...`` → (the config file or None, the remaining flags)."""
    argv = list(argv)
    config = None
    if argv and not argv[0].startswith("-") and argv[0].endswith(CONFIG_SUFFIXES):
        config = argv.pop(0)
    for i, arg in enumerate(argv):
        if arg == "--config" or arg.startswith("--config="):
            if config is not None:
                raise ValueError("Give one config file: either first or with --config, not both.")
            if "=" in arg:
                config, rest = arg.split("=", 1)[1], argv[i + 1 :]
            elif i + 1 < len(argv):
                config, rest = argv[i + 1], argv[i + 2 :]
            else:
                raise ValueError("--config needs a file: --config recipe.yaml")
            argv = argv[:i] + rest
            break
    return config, argv


def split_domain(argv: list[str]) -> tuple[str, list[str]]:
    """``--domain NAME`` (or ``--domain=NAME``) taken out of ``argv``: ``(NAME or "language", the other flags)``."""
    for i, arg in enumerate(argv):
        if arg == "--domain" and i + 1 < len(argv):
            return argv[i + 1], argv[:i] + argv[i + 2 :]
        if arg.startswith("--domain="):
            return arg.split("=", 1)[1], argv[:i] + argv[i + 1 :]
    return "language", argv


def read_config_file(path: str) -> dict[str, Any]:
    """The settings of a YAML or JSON config file, as a flat mapping of flag name → value."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Config file {path} does not exist (expected a .yaml, .yml or .json file).")
    with open(path, encoding="utf-8") as f:
        if path.endswith(".json"):
            values = json.load(f)
        else:
            import yaml

            values = yaml.safe_load(f)
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValueError(
            f"Config file {path} holds a {type(values).__name__}; expected a mapping of flag names to values, "
            "e.g. `tau: 5` and `max_steps: 300` on their own lines."
        )
    return values


def parse_command_line(
    parser: HfArgumentParser, argv: list[str] | None, *, allow_extra_flags: bool = False
) -> tuple[Any, ...]:
    """Parse ``argv`` (flags, optionally with a config file) into the parser's dataclasses.

    The config file's values become the parser's defaults (so flags override them, and a required flag may come
    from the file); a key that is not a flag is an error naming the closest flags. With ``allow_extra_flags`` the
    flags the parser does not know are returned last, as a list of strings, instead of being refused.
    """
    config_path, argv = split_config_file(list(argv or []))
    if config_path is not None:
        values = read_config_file(config_path)
        destinations = {action.dest: action for action in parser._actions if action.dest != "help"}
        unknown = [key for key in values if key not in destinations]
        if unknown:
            hints = {key: difflib.get_close_matches(key, list(destinations), n=2) for key in unknown}
            detail = "; ".join(
                f"{k!r}" + (f" (did you mean {' or '.join(v)}?)" if v else "") for k, v in hints.items()
            )
            raise ValueError(f"Config file {config_path} has settings that are not flags of this command: {detail}.")
        for key in values:
            destinations[key].required = False
        parser.set_defaults(**values)
    return parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=allow_extra_flags)


def make_argument_parser(dataclass_types, prog: str | None, description: str | None) -> HfArgumentParser:
    """An ``HfArgumentParser`` over ``dataclass_types`` whose help shows the command's docstring and config files."""
    parser = HfArgumentParser(
        dataclass_types, prog=prog, description=description, epilog=CONFIG_HELP, formatter_class=_HelpFormatter
    )
    for action in parser._actions:  # a literal "5 %" in a field's help would break argparse's %-formatting
        if action.help and "%" in action.help:
            action.help = re.sub(r"%(?!\()", "%%", action.help)
    return parser


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each flag, the command's docstring (its example command lines) kept as written."""


def explicit_flags(dataclass_types, argv: list[str]) -> dict[str, Any]:
    """The settings that ``argv`` gives explicitly, typed as the fields of ``dataclass_types`` (flag name → value).

    For commands that pass settings on to a run they make (e.g. `hf-topo compare-regularizers --weight_decay 0.05`):
    a flag that is not a field of those dataclasses is an error naming the closest ones.
    """
    parser = HfArgumentParser(dataclass_types)
    namespace, unknown = parser.parse_known_args(argv)
    if unknown:
        known = [action.dest for action in parser._actions]
        hints = [difflib.get_close_matches(flag.lstrip("-").split("=")[0], known, n=1) for flag in unknown]
        detail = ", ".join(
            f"{flag}" + (f" (did you mean --{h[0]}?)" if h else "") for flag, h in zip(unknown, hints, strict=True)
        )
        raise ValueError(f"Unknown flags: {detail}.")
    given = [arg[2:].split("=")[0] for arg in argv if arg.startswith("--")]
    return {name: getattr(namespace, name) for name in given}


def run_command(main: Callable, argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run a command's ``main`` as a program: a refused input (``ValueError``, ``FileNotFoundError``) is printed as one
    ``error:`` message on stderr with exit status 1, not as a traceback (``HF_TOPO_TRACEBACK=1`` shows it). The
    parameters a library error names (:class:`hf_topo.errors.InputError`) are worded as the command's flags:
    ``--tokenizer_name``, not ``tokenizer_name=``."""
    try:
        main(argv, prog=prog)
    except (ValueError, FileNotFoundError) as err:
        if os.environ.get("HF_TOPO_TRACEBACK", "0") not in ("", "0"):
            raise
        print(f"{prog or os.path.basename(sys.argv[0])}: error: {command_line_message(err)}", file=sys.stderr)
        return 1
    return 0
