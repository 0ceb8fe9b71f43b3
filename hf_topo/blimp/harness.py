"""lm-evaluation-harness task yamls for BLiMP, to cross-check hf_topo's numbers with ``lm_eval`` itself.

Two sets, both copies of the harness's own ``blimp`` template (empty context, choices ``[sentence_good,
sentence_bad]``, target 0, metric ``acc``), named ``hftopo_blimp_<paradigm>`` so that they never shadow the
harness's built-in ``blimp_<paradigm>`` tasks:

* shipped with hf_topo in :data:`LM_EVAL_TASKS_DIR`: the 67 paradigms of the Hub dataset ``nyu-mll/blimp`` and a
  group ``hftopo_blimp`` (unweighted mean, like the harness's ``blimp`` group)::

      lm_eval --model hf --model_args pretrained=outputs/demo/toponet --include_path "$(python -c \\
          'import hf_topo.blimp as b; print(b.LM_EVAL_TASKS_DIR)')" --tasks hftopo_blimp_passive_1

* written by :func:`write_lm_eval_tasks` for a local folder of BLiMP's jsonl files (offline; ``hf-topo eval-blimp
  --lm_eval_tasks DIR`` does it next to an evaluation).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .data import BLIMP_PARADIGMS

__all__ = ["LM_EVAL_TASKS_DIR", "TASK_PREFIX", "lm_eval_task_yaml", "write_lm_eval_tasks"]

#: The folder of shipped task yamls (``lm_eval --include_path``).
LM_EVAL_TASKS_DIR = Path(__file__).resolve().parent / "lm_eval_tasks"

#: Our task names are ``TASK_PREFIX + paradigm``.
TASK_PREFIX = "hftopo_blimp_"

#: The harness's ``blimp/_template_yaml`` (0.4.x), less the dataset and decontamination lines.
_TEMPLATE_BODY = """output_type: multiple_choice
validation_split: train
doc_to_text: ""
doc_to_target: 0
doc_to_choice: "{{[sentence_good, sentence_bad]}}"
num_fewshot: 0
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def lm_eval_task_yaml(paradigm: str, jsonl_path: str | os.PathLike | None = None) -> str:
    """The task yaml of one paradigm: from the Hub's ``nyu-mll/blimp`` (default) or a local jsonl file."""
    if jsonl_path is None:
        source = f"dataset_path: nyu-mll/blimp\ndataset_name: {paradigm}\n"
    else:
        path = Path(jsonl_path).resolve()
        source = f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    train: {path.as_posix()}\n"
    return f"task: {TASK_PREFIX}{paradigm}\n{source}{_TEMPLATE_BODY}"


def _group_yaml(paradigms: Sequence[str]) -> str:
    tasks = "".join(f"  - {TASK_PREFIX}{p}\n" for p in paradigms)
    return (
        "group: hftopo_blimp\ntask:\n"
        + tasks
        + "aggregate_metric_list:\n  - metric: acc\n    aggregation: mean\n    weight_by_size: false\n"
        + "metadata:\n  version: 2.0\n"
    )


def write_lm_eval_tasks(
    output_dir: str | os.PathLike, blimp_dir: str | os.PathLike | None = None, paradigms: Sequence[str] | None = None
) -> list[str]:
    """Write the harness's task yamls for BLiMP paradigms into ``output_dir``; return the task names.

    Args:
        output_dir: the folder for ``lm_eval --include_path`` (created).
        blimp_dir: a folder of BLiMP's ``<paradigm>.jsonl`` files (tasks read them with absolute paths); ``None``
            writes Hub tasks (``nyu-mll/blimp``) like the shipped ones.
        paradigms: a subset (default: every jsonl file of ``blimp_dir``, or all 67).

    Raises:
        ValueError: a paradigm that is not in the folder or not a BLiMP paradigm.
    """
    if blimp_dir is not None:
        files = {p.stem: p for p in sorted(Path(blimp_dir).glob("*.jsonl"))}
        if not files:
            raise ValueError(f"No .jsonl files in {str(blimp_dir)!r}: expected BLiMP's <paradigm>.jsonl files.")
    else:
        files = dict.fromkeys(BLIMP_PARADIGMS)
    selected = list(files) if paradigms is None else list(paradigms)
    unknown = [p for p in selected if p not in files]
    if unknown:
        raise ValueError(f"Unknown BLiMP paradigm(s) {unknown}. Available: {', '.join(sorted(files))}.")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for paradigm in selected:
        (out / f"{TASK_PREFIX}{paradigm}.yaml").write_text(lm_eval_task_yaml(paradigm, files[paradigm]))
    (out / "_hftopo_blimp.yaml").write_text(_group_yaml(selected))
    return [f"{TASK_PREFIX}{p}" for p in selected]
