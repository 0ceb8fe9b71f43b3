"""Which checkpoint a training run starts from, and refusing to mix two runs in one output folder.

``TrainingArguments.resume_from_checkpoint`` is a string on the command line (``HfArgumentParser``), so
``--resume_from_checkpoint true`` would be taken for a path. :func:`resolve_checkpoint` reads it as the commands do:

==========================================  ========================================================================
``resume_from_checkpoint``                  the run
==========================================  ========================================================================
``None``, ``"false"``, ``"no"``, ``"0"``    a fresh run; refused if ``output_dir`` already holds a run
``"true"``, ``"yes"``, ``"1"``              resumes from the last ``checkpoint-N`` in ``output_dir`` (as ``run_clm.py``
                                            finds it, with ``transformers.trainer_utils.get_last_checkpoint``)
a path                                      resumes from that ``checkpoint-N`` folder
==========================================  ========================================================================

A checkpoint folder is one that ``Trainer`` finished writing: it holds ``trainer_state.json``, which the Trainer
writes last (after the weights, optimizer, scheduler and RNG states). Pass the result to
``trainer.train(resume_from_checkpoint=...)``.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from .errors import InputError, parameter

__all__ = ["resolve_checkpoint"]

logger = logging.getLogger(__name__)

_TRUE = ("true", "yes", "1")
_FALSE = ("false", "no", "0", "")
_TRAINER_STATE = "trainer_state.json"
_CHECKPOINT_NAME = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-\d+$")  # the folders get_last_checkpoint considers
# Files a finished or checkpointed run leaves in its output_dir (full models and PEFT adapters, sharded or not).
_RUN_FILES = (
    "config.json",
    _TRAINER_STATE,
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "adapter_config.json",
    "adapter_model.safetensors",
    "adapter_model.bin",
)


def resolve_checkpoint(training_args: Any) -> str | None:
    """The checkpoint to resume from, or ``None`` for a fresh run into an output folder that holds no other run.

    A pure filesystem check (no collective): call it on every process before ``trainer.train``.

    Args:
        training_args: the run's ``TrainingArguments`` (any object with ``output_dir`` and
            ``resume_from_checkpoint``). ``resume_from_checkpoint`` is ``None``, a boolean, one of
            ``"true"``/``"yes"``/``"1"`` or ``"false"``/``"no"``/``"0"`` (any case), or a path to a checkpoint folder.

    Returns:
        The path of the checkpoint folder to pass to ``trainer.train(resume_from_checkpoint=...)``, or ``None``.

    Raises:
        ValueError: ``"true"`` but ``output_dir`` has no checkpoint (or its last one is incomplete); a path that does
            not exist or is not a checkpoint folder; a fresh run into an ``output_dir`` that already holds a run
            (checkpoints, weights, ``config.json`` or ``trainer_state.json``), which would mix the two.
        TypeError: ``resume_from_checkpoint`` is neither a string, a path nor a boolean.
    """
    output_dir = os.fspath(training_args.output_dir)
    value = training_args.resume_from_checkpoint
    if value is None or value is False or (isinstance(value, str) and value.strip().lower() in _FALSE):
        _refuse_previous_run(output_dir)
        return None
    if value is True or (isinstance(value, str) and value.strip().lower() in _TRUE):
        return _last_checkpoint(output_dir)
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(
            f"resume_from_checkpoint={value!r} ({type(value).__name__}) is not understood: pass a checkpoint folder "
            "path, true (the last checkpoint in output_dir) or false (a fresh run)."
        )
    path = os.fspath(value)
    if not os.path.isdir(path):
        raise InputError(
            f"{parameter('resume_from_checkpoint', repr(path))} does not exist or is not a folder. Pass a checkpoint "
            f"folder such as {os.path.join(output_dir, PREFIX_CHECKPOINT_DIR + '-500')!r}, or "
            f"`{parameter('resume_from_checkpoint', 'true')}` to resume from the last checkpoint in {output_dir!r}."
        )
    if not os.path.isfile(os.path.join(path, _TRAINER_STATE)):
        raise InputError(
            f"{parameter('resume_from_checkpoint', repr(path))} is not a checkpoint folder: it has no "
            f"{_TRAINER_STATE}, which the Trainer writes into every {PREFIX_CHECKPOINT_DIR}-N folder it saves (last, "
            "so a folder without it was interrupted while being saved). Pass one of the run's checkpoint-N folders, "
            f"or `{parameter('resume_from_checkpoint', 'true')}` to take the last one in output_dir."
        )
    logger.info("Resuming from %s", path)
    return path


def _last_checkpoint(output_dir: str) -> str:
    last = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
    if last is None:
        raise InputError(
            f"{parameter('resume_from_checkpoint', 'true')}: {output_dir!r} holds no {PREFIX_CHECKPOINT_DIR}-N folder "
            f"to resume from (checkpoints are saved every {parameter('save_steps')} with "
            f"{parameter('save_strategy', 'steps')}). Check {parameter('output_dir')}, or start a fresh run with "
            f"{parameter('resume_from_checkpoint', 'false')}."
        )
    if not os.path.isfile(os.path.join(last, _TRAINER_STATE)):
        raise InputError(
            f"The last checkpoint in {output_dir!r}, {last!r}, is incomplete: it has no {_TRAINER_STATE}, which the "
            "Trainer writes last, so the run was interrupted while saving it. Delete that folder to resume from the "
            f"checkpoint before it, or pass an earlier checkpoint with {parameter('resume_from_checkpoint', 'PATH')}."
        )
    logger.info("Resuming from the last checkpoint in %s: %s", output_dir, last)
    return last


def _refuse_previous_run(output_dir: str) -> None:
    if not os.path.isdir(output_dir):
        return
    names = sorted(os.listdir(output_dir))
    found = [n for n in names if _CHECKPOINT_NAME.match(n) and os.path.isdir(os.path.join(output_dir, n))]
    found += [n for n in names if n in _RUN_FILES]
    if found:
        shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
        raise InputError(
            f"The output folder {output_dir!r} already holds a training run ({shown}); a fresh run there would "
            f"overwrite it and mix the two runs' checkpoints. Continue that run with "
            f"`{parameter('resume_from_checkpoint', 'true')}`, or start a new one with a new or empty "
            f"{parameter('output_dir')}."
        )
