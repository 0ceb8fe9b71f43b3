"""The card ``TopoTrainer.create_model_card`` (and so ``TopoTrainer.push_to_hub``) writes into its output directory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from ..config import TopoConfig
from ..topo_regularizer import TopoRegularizer
from .card import toponet_card
from .figures import render_sheet_maps
from .loading import is_image_classifier_config, load_toponet
from .results import read_results, recipe_from_trainer_state, recipe_from_training_args, results_from_log_history
from .upload import FIGURES_DIR

__all__ = ["write_training_card", "write_trainer_card"]


def write_training_card(
    model: nn.Module,
    args,
    log_history: list[dict[str, Any]],
    *,
    global_step: int | None = None,
    output_dir: str | os.PathLike | None = None,
    hub_model_id: str | None = None,
    model_name: str | None = None,
    language: str | list[str] | None = None,
    license: str | None = None,
    tags: str | list[str] | None = None,
    finetuned_from: str | None = None,
    dataset: str | list[str] | None = None,
) -> str:
    """Write the TopoNet card of a trained ``model`` into ``output_dir`` (``README.md`` and
    ``figures/sheet_maps.png``); returns the card's path.

    Args:
        model: the model the card describes, with its ``topography`` metadata attached (full weights: the sheet maps
            and the TopoLoss are drawn from them).
        args: its ``TrainingArguments`` (the recipe; ``output_dir`` and ``hub_model_id`` by default).
        log_history, global_step: the trainer's state (results and the logged recipe).
        output_dir: where to write (default ``args.output_dir``); ``metrics.json``/``blimp.json`` there, if a script
            wrote them, take precedence over the log history.
        hub_model_id: the repo (``user/name``) shown in the card (default ``args.hub_model_id``).
        model_name, language, license, tags, finetuned_from, dataset: as ``Trainer.create_model_card`` takes them
            (``dataset``'s first entry is the evaluation set, ``finetuned_from`` becomes ``base_model``).

    The TopoLoss of the weights is computed when not recorded (weight-based losses only).
    """
    output_dir = Path(output_dir if output_dir is not None else args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    results = results_from_log_history(log_history) | read_results(output_dir)
    topo_loss = TopoRegularizer(TopoConfig.from_pretrained(model))
    if "topo_loss" not in results and not topo_loss.config.reads_activations:
        results["topo_loss"] = topo_loss.compute(model, with_grad=False)[0].item()
    figure = render_sheet_maps(model, output_dir / FIGURES_DIR / "sheet_maps.png")
    datasets = [dataset] if isinstance(dataset, str) else dataset
    repo_id = hub_model_id or getattr(args, "hub_model_id", None)
    card = toponet_card(
        model if is_image_classifier_config(model.config) else model.config,  # an image classifier: in·kh·kw depths
        repo_id=repo_id if repo_id and "/" in repo_id else None,
        model_name=model_name,
        results=results,
        recipe=recipe_from_training_args(args)
        | recipe_from_trainer_state({"global_step": global_step, "log_history": log_history}),
        figures=[Path(figure).relative_to(output_dir).as_posix()],
        datasets=datasets,
        eval_dataset=datasets[0] if datasets else None,
        base_model=finetuned_from,
        license=license,
        language=language,
        tags=[tags] if isinstance(tags, str) else tags,
    )
    path = output_dir / "README.md"
    card.save(path)
    return str(path)


def _sharded(trainer) -> bool:
    """Whether the trainer's parameters are sharded over processes (FSDP, DeepSpeed ZeRO-3)."""
    if getattr(trainer, "is_fsdp_enabled", False):
        return True
    try:
        from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled
    except ImportError:
        return False
    return bool(getattr(trainer, "is_deepspeed_enabled", False)) and is_deepspeed_zero3_enabled()


def write_trainer_card(trainer, **card_kwargs) -> str:
    """:func:`write_training_card` for a ``TopoTrainer``: attaches its topography metadata and passes its model,
    arguments and state. Returns the card's path.

    The card describes the trainer's model as it is in memory. Only when its parameters are sharded over processes
    (FSDP, ZeRO-3: this runs on the main process alone, so they cannot be gathered) are the full weights that
    ``save_model`` wrote to ``output_dir`` loaded instead.
    """
    trainer.write_topography_metadata()
    model = trainer.accelerator.unwrap_model(trainer.model)
    output_dir = Path(trainer.args.output_dir)
    if _sharded(trainer) and (output_dir / "config.json").is_file():
        model = load_toponet(output_dir, infer_if_missing=False)
    return write_training_card(
        model,
        trainer.args,
        trainer.state.log_history,
        global_step=trainer.state.global_step,
        hub_model_id=getattr(trainer, "hub_model_id", None),
        **card_kwargs,
    )
