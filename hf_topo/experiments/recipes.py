"""The recipes the experiments train with: one small CPU run of :func:`~hf_topo.pretraining.pretrain`, and the
held-out split of a text file that no model of an experiment trains on.

    from hf_topo.experiments.recipes import hold_out_lines, small_cpu_recipe
    from hf_topo.pretraining import pretrain

    train_file, heldout = hold_out_lines("corpus.txt", 0.05, "outputs/data")
    pretrain(*small_cpu_recipe(train_file, heldout, "outputs/toponet", tau=5, max_steps=300, batch_size=16,
                               learning_rate=2e-3, block_size=128, seed=0))
"""

from __future__ import annotations

import os

from ..loading import check_data_file
from ..pretraining import DataArguments, ModelArguments
from ..trainer import TopoTrainingArguments

__all__ = ["hold_out_lines", "small_cpu_recipe"]


def small_cpu_recipe(
    train_file: str,
    validation_file: str,
    output_dir: str,
    *,
    tau: float,
    max_steps: int,
    batch_size: int,
    learning_rate: float,
    block_size: int,
    seed: int,
    model_preset: str = "tiny-gpt2",
    vocab_size: int = 4096,
    max_eval_blocks: int = 200,
    tokenizer: str | None = None,
    **overrides,
) -> tuple[ModelArguments, DataArguments, TopoTrainingArguments]:
    """The settings of one small CPU run of :func:`pretrain`, as the demo and the comparisons train their models.

    Cosine schedule with 5 % warm-up, weight decay 0.1, no checkpoints or evaluations during training, no
    reporting integrations. ``tokenizer``: a model directory whose tokenizer to reuse (default: train one of
    ``vocab_size`` on the data). ``overrides``: any other field of the three dataclasses by name (e.g.
    ``topo_loss_type="weight_similarity"``, ``weight_decay=0.05``, ``use_cpu=True``); an unknown name is an error.
    """
    model_fields = dict(
        model_preset=model_preset, block_size=block_size, tokenizer_name=tokenizer, tokenizer_vocab_size=vocab_size
    )
    data_fields = dict(train_file=train_file, validation_file=validation_file, max_eval_blocks=max_eval_blocks)
    training_fields = dict(
        output_dir=output_dir, tau=tau, max_steps=max_steps,
        per_device_train_batch_size=batch_size, per_device_eval_batch_size=batch_size,
        learning_rate=learning_rate, lr_scheduler_type="cosine", warmup_steps=max(1, max_steps // 20),
        weight_decay=0.1, logging_steps=max(1, max_steps // 50), save_strategy="no", eval_strategy="no",
        report_to="none", seed=seed, dataloader_num_workers=0,
    )  # fmt: skip
    for name, value in overrides.items():
        for kind, fields in ((ModelArguments, model_fields), (DataArguments, data_fields)):
            if name in kind.__dataclass_fields__:
                fields[name] = value
                break
        else:
            if name not in TopoTrainingArguments.__dataclass_fields__:
                raise TypeError(
                    f"small_cpu_recipe got an unknown setting {name!r}: expected a field of ModelArguments, "
                    "DataArguments or TopoTrainingArguments (the flags of `hf-topo pretrain --help`)."
                )
            training_fields[name] = value
    return ModelArguments(**model_fields), DataArguments(**data_fields), TopoTrainingArguments(**training_fields)


def hold_out_lines(text_file: str, fraction: float, output_dir: str) -> tuple[str, str]:
    """Split a text file by lines into ``<output_dir>/train<ext>`` and ``<output_dir>/validation<ext>`` (its last
    ``fraction`` of lines, at least one): held-out text that no model of the demo or the comparisons trains on."""
    if not 0 < fraction < 1:
        raise ValueError(f"The held-out fraction {fraction} must be between 0 and 1 (e.g. 0.05 for the last 5 %).")
    check_data_file(text_file, "train_file")
    with open(text_file, encoding="utf-8") as f:
        lines = f.readlines()
    cut = len(lines) - max(1, round(fraction * len(lines)))
    if cut < 1:
        raise ValueError(
            f"{text_file} has {len(lines)} line(s): too few to train on some and hold out the last {fraction:.0%}; "
            "give more text."
        )
    os.makedirs(output_dir, exist_ok=True)
    suffix = os.path.splitext(text_file)[1] or ".txt"
    paths = (os.path.join(output_dir, f"train{suffix}"), os.path.join(output_dir, f"validation{suffix}"))
    for path, part in zip(paths, (lines[:cut], lines[cut:]), strict=True):
        # Whole, then renamed: invocations that share an output folder (one seed each, run side by side) never read
        # a half-written file (they all write the same text).
        partial = f"{path}.{os.getpid()}.tmp"
        with open(partial, "w", encoding="utf-8") as f:
            f.writelines(part)
        os.replace(partial, path)
    return paths
