"""``TopoTrainer``: ``transformers.Trainer`` with TopoLoss added to the training objective.

The trainer changes a few well-known hooks and keeps the rest stock (accelerate, checkpoints, callbacks, resuming):

* ``compute_loss`` adds ``τ · topo_loss`` once per optimizer step, scaled so that its gradient weighs exactly τ
  whatever the gradient accumulation, number of processes and ``average_tokens_across_devices``. Weight-based
  regularizers (TopoLoss, Weight Similarity) are evaluated on the first micro-batch of each optimizer step;
  Activation Similarity, which reads the layers' outputs of each batch, on every micro-batch with weight
  ``τ / n_micro_batches``, so an optimizer step again carries ``τ`` times the mean regularizer;
* ``log`` adds ``topo_loss`` (unscaled), ``task_loss``, the current ``tau`` and ``topo_loss/<layer>`` values;
* ``evaluation_loop`` adds ``eval_topo_loss``, the regularizer's value on the model without gradients (Activation
  Similarity: on the first evaluation batch); ``hyperparameter_search`` keeps ``eval_loss`` as its default objective;
* ``train`` re-reads the topo settings from ``self.args`` (``hyperparameter_search`` sets each trial's values there),
  so every trial trains with its own τ;
* ``save_model`` writes the topographic setup into ``config.json`` (key ``"topography"``) on every save;
* ``create_model_card`` writes hf_topo's TopoNet card (``README.md`` + ``figures/``), which ``push_to_hub`` uploads.
"""

from __future__ import annotations

import logging
import os
from dataclasses import MISSING, dataclass, field
from typing import Any

import torch
from transformers import Trainer, TrainingArguments

from .config import TOPO_SETTINGS, TopoConfig
from .distributed import check_activation_checkpointing
from .metadata import stored_topography, write_adapter_record
from .topo_regularizer import TopoRegularizer

__all__ = ["TopoTrainingArguments", "TopoTrainer", "MODEL_TAGS", "topo_argument_name"]

logger = logging.getLogger(__name__)

#: Hub tags that TopoTrainer adds to the model (``model.add_model_tags``), so that pushed model cards carry them.
MODEL_TAGS = ["hf_topo", "topographic"]


def topo_argument_name(setting: str) -> str:
    """The training argument (and command-line flag) of the :class:`TopoConfig` setting ``setting``.

    ``tau`` and ``tau_schedule`` keep their names (``--tau``), ``loss`` is ``topo_loss_type`` (``topo_loss`` is the
    logged value), every other setting is ``topo_<setting>`` (``factor_h`` → ``--topo_factor_h``).
    """
    if setting.startswith("tau"):
        return setting
    return "topo_loss_type" if setting == "loss" else f"topo_{setting}"


def _topo_argument(setting: str) -> Any:
    """A ``TopoTrainingArguments`` field with the default and help text of the ``TopoConfig`` setting ``setting``."""
    source = TopoConfig.__dataclass_fields__[setting]
    metadata = {"help": source.metadata["help"]}
    if source.default_factory is not MISSING:
        return field(default_factory=source.default_factory, metadata=metadata)
    return field(default=source.default, metadata=metadata)


@dataclass
class TopoTrainingArguments(TrainingArguments):
    r"""`TrainingArguments` plus the settings of :class:`~hf_topo.config.TopoConfig` (every field is also a
    command-line flag of `HfArgumentParser`).

    The topographic fields are the `TopoConfig` settings, with their defaults and help texts (`TopoConfig` documents
    what each does), named by :func:`topo_argument_name`: `tau` → `--tau`, `tau_schedule` → `--tau_schedule`,
    `loss` → `--topo_loss_type`, and `topo_<setting>` for `target_modules`, `watch_modules`, `factor_h`, `factor_w`,
    `interpolation`, `sheet_shape`, `distance`, `neighbourhood`, `sheet`, `include_bias`, `radius`,
    `neighbourhoods_per_batch` and `accumulation`. On the command line a regex is the single entry
    `re:REGEX` of `--topo_target_modules` or `--topo_watch_modules`, and `--topo_sheet_shape` takes `HEIGHT WIDTH`.
    :meth:`topo_config` builds the `TopoConfig`.
    """

    # One field per TopoConfig setting, named by topo_argument_name, its type as HfArgumentParser reads it.
    tau: float = _topo_argument("tau")
    topo_target_modules: list[str] = _topo_argument("target_modules")
    topo_watch_modules: list[str] | None = _topo_argument("watch_modules")
    topo_factor_h: float = _topo_argument("factor_h")
    topo_factor_w: float = _topo_argument("factor_w")
    topo_interpolation: str = _topo_argument("interpolation")
    topo_sheet_shape: list[int] | None = _topo_argument("sheet_shape")
    tau_schedule: str = _topo_argument("tau_schedule")
    topo_loss_type: str = _topo_argument("loss")
    topo_distance: str = _topo_argument("distance")
    topo_neighbourhood: int = _topo_argument("neighbourhood")
    topo_sheet: str = _topo_argument("sheet")
    topo_include_bias: bool = _topo_argument("include_bias")
    topo_radius: int = _topo_argument("radius")
    topo_neighbourhoods_per_batch: int = _topo_argument("neighbourhoods_per_batch")
    topo_accumulation: str = _topo_argument("accumulation")

    def __post_init__(self):
        super().__post_init__()
        self.topo_config()  # validate the topo settings before anything is trained

    def topo_config(self) -> TopoConfig:
        """The :class:`TopoConfig` these arguments describe."""
        settings = {setting: getattr(self, topo_argument_name(setting)) for setting in TOPO_SETTINGS}
        for setting in ("target_modules", "watch_modules"):
            if isinstance(settings[setting], str):  # one suffix (as a YAML file may give it), not a regex
                settings[setting] = [settings[setting]]
        # Empty values leave a setting unset: no watched layers, most-square sheets.
        settings["watch_modules"] = settings["watch_modules"] or None
        settings["sheet_shape"] = settings["sheet_shape"] or None
        return TopoConfig(**settings)


def _check_stored_topography(model, topo_config: TopoConfig) -> None:
    """When training continues from a saved TopoNet, its stored sheets must match the weights (else raise), and a
    change of topographic setup is said out loud."""
    if stored_topography(model) is None:
        return  # a new model (a malformed record is not skipped: from_pretrained says what is wrong with it)
    stored = TopoConfig.from_pretrained(model)
    keys = ("target_modules", "factor_h", "factor_w", "interpolation", "sheet_shape", "loss", "sheet", "include_bias")
    changed = [k for k in keys if getattr(stored, k) != getattr(topo_config, k)]
    if changed:
        logger.warning(
            "The model was trained with a different topographic setup (%s); this run uses %s and will overwrite the "
            "stored metadata on save.",
            ", ".join(f"{k}={getattr(stored, k)!r}" for k in changed),
            ", ".join(f"{k}={getattr(topo_config, k)!r}" for k in changed),
        )


def _objective_without_topo_loss(metrics: dict[str, float]) -> float:
    """transformers' default objective of a hyperparameter search, computed without `eval_topo_loss`."""
    from transformers.trainer_utils import default_compute_objective

    return default_compute_objective({k: v for k, v in metrics.items() if not k.endswith("_topo_loss")})


class TopoTrainer(Trainer):
    """`transformers.Trainer` that trains with `task_loss + τ · TopoLoss` on the model's topographic layers.

    Args:
        model: a `PreTrainedModel` (or a PEFT model wrapping one).
        args (`TopoTrainingArguments`): training arguments with the topo settings. Plain `TrainingArguments`
            work too when `topo_config` is given.
        topo_config (`TopoConfig`, *optional*): overrides the topo settings of `args`.
        **kwargs: everything else `Trainer` takes (datasets, collator, processing class, callbacks, ...).

    The topographic term is evaluated once per optimizer step (on its first micro-batch) and enters the objective
    so that its gradient is exactly `τ · ∇topo_loss` per optimizer step. The model's `config.topography` is
    written on every save. Under DDP, FSDP2 and DeepSpeed ZeRO-1/2/3 the regularizer is the same as on one device
    (see `hf_topo.distributed` for how sharded weights are read); FSDP1 is refused.

    Topo settings taken from `TopoTrainingArguments` are read again from `self.args` when training starts, so a
    `hyperparameter_search` over `tau` (or any `topo_*` field) trains each trial with its own values. `evaluate()`
    reports `eval_topo_loss`. The model gets the Hub tags `hf_topo` and `topographic` (`model.add_model_tags`).
    """

    def __init__(
        self, model=None, args: TrainingArguments | None = None, topo_config: TopoConfig | None = None, **kwargs
    ):
        # Settings read from `args` follow later changes of `args` (a hyperparameter search sets each trial's there);
        # an explicit `topo_config` is fixed.
        self._topo_config_from_args = topo_config is None
        if topo_config is None:
            if not isinstance(args, TopoTrainingArguments):
                raise TypeError(
                    "TopoTrainer needs its topo settings: pass `args=TopoTrainingArguments(...)` or `topo_config=TopoConfig(...)`."
                )
            topo_config = args.topo_config()
        self.topo_config = topo_config
        self.topo_loss = TopoRegularizer(topo_config)
        if model is not None:
            self.topo_loss.layers(model)  # fail before training on a pattern that matches nothing or a bad sheet
            _check_stored_topography(model, topo_config)
        super().__init__(model=model, args=args, **kwargs)
        self._add_model_tags()
        if self.is_fsdp_enabled and getattr(self.accelerator.state.fsdp_plugin, "fsdp_version", 1) != 2:
            raise ValueError(
                "TopoTrainer needs FSDP2 under FSDP: FSDP1 keeps the weights as flattened shards that TopoLoss cannot "
                "lay out on a sheet. Set `fsdp_version: 2` in the accelerate config (or FSDP_VERSION=2, or "
                "fsdp_config={'version': 2}); see examples/accelerate/fsdp2.yaml."
            )
        self._topo_last_step = -1
        self._topo_micro_batch = (-1, 0)  # (optimizer step, micro-batches of it seen): seeds TopoLM's neighbourhoods
        self._topo_setup_checked = False
        # Since the last log: per-layer TopoLoss sums, then the sums of τ·topo_loss and of τ.
        self._topo_sums: torch.Tensor | None = None
        self._topo_count = 0
        self._topo_layer_names: list[str] = []
        self._topo_target_mask: torch.Tensor | None = None
        self._topo_eval_inputs: dict | None = None  # the first batch of an evaluation loop (Activation Similarity)

    def train(self, *args, **kwargs):
        # A new run (or a resume on this same trainer) starts without a TopoLoss evaluation for its first step.
        self._topo_last_step = -1
        self._topo_micro_batch = (-1, 0)
        self._topo_setup_checked = False
        self._topo_sums, self._topo_count = None, 0
        self._refresh_topo_config()
        return super().train(*args, **kwargs)

    def _refresh_topo_config(self) -> bool:
        """Re-read the topo settings from `self.args` and rebuild the `TopoLoss` if they changed; returns whether they did.

        `Trainer.hyperparameter_search` writes each trial's values (e.g. `tau`) into `self.args` inside
        `Trainer.train`, after the model is (re)built: the trainer calls this at the start of `train()` and again on
        the first training step. A `topo_config` passed to the constructor is fixed and never replaced.
        """
        if not (self._topo_config_from_args and isinstance(self.args, TopoTrainingArguments)):
            return False
        config = self.args.topo_config()  # validates values set behind __post_init__'s back
        if config == self.topo_config:
            return False
        logger.info("Topo settings changed in the training arguments: now %s", config)
        self.topo_config = config
        self.topo_loss = TopoRegularizer(config)
        if self.model is not None:
            self.topo_loss.layers(self.model)  # fail now on a pattern that matches nothing or a bad sheet
        self._topo_sums, self._topo_count = None, 0
        return True

    def _add_model_tags(self) -> None:
        # A PEFT model forwards add_model_tags to the transformers model it wraps, whose tags its adapter card reads.
        if self.model is not None and hasattr(self.model, "add_model_tags"):
            self.model.add_model_tags(MODEL_TAGS)

    # ---- the objective -------------------------------------------------------------------------------------------

    def current_tau(self) -> float:
        """τ at the optimizer step being computed (schedule applied)."""
        return self.topo_config.tau_at(self.state.global_step)

    def _loss_scaling_for_backward(self, num_items_in_batch) -> float:
        """Factor `Trainer.training_step` applies to what `compute_loss` returns before backward.

        Mirrors transformers 5.x: the loss is divided by the number of accumulation steps of this optimizer
        step unless it is already normalized over the whole accumulated batch (`loss_is_scaled_for_ga` when set,
        else a model that accepts loss kwargs and a known `num_items_in_batch`, or a `compute_loss_func`). DDP then
        averages gradients over processes, which leaves a term that every process adds identically unchanged.
        """
        # Trainer.loss_is_scaled_for_ga exists from transformers 5.19 on; before, training_step used the rule below.
        if getattr(self, "loss_is_scaled_for_ga", None) is not None:
            scaled_for_ga = self.loss_is_scaled_for_ga
        else:
            scaled_for_ga = (
                self.model_accepts_loss_kwargs and num_items_in_batch is not None
            ) or self.compute_loss_func is not None
        return 1.0 if scaled_for_ga else 1.0 / self.current_gradient_accumulation_steps

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training and not self._topo_setup_checked:
            # By now the Trainer has built the trial's model (model_init), set the trial's values on self.args
            # (hyperparameter_search) and enabled activation checkpointing.
            self._refresh_topo_config()
            self._add_model_tags()
            check_activation_checkpointing(
                self.model, self.topo_config.loss, self.args.world_size, self.topo_config.tau
            )
            self._topo_setup_checked = True
        if self.topo_loss.config.reads_activations and model.training:
            return self._compute_loss_with_activations(model, inputs, return_outputs, num_items_in_batch)
        if not model.training or self._topo_last_step == self.state.global_step:
            return super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
        self._topo_last_step = self.state.global_step
        tau = self.current_tau()
        if self.topo_loss.weights_partitioned(self.model):
            # DeepSpeed ZeRO-3: a layer's weight is whole only during its forward, so its term is computed there.
            with self.topo_loss.evaluate_in_forward(self.model, with_grad=tau > 0) as evaluated:
                result = super().compute_loss(
                    model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
                )
        else:  # whole weights, or FSDP2 shards that `compute` all-gathers one layer at a time
            evaluated = None
            result = super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
        loss, outputs = result if return_outputs else (result, None)
        topo, per_layer = self.topo_loss.compute(self.model, with_grad=tau > 0, evaluated=evaluated)
        if tau > 0:
            # The term enters once per optimizer step: undo the per-micro-batch scaling so its gradient is τ·∇topo.
            loss = loss + (tau / self._loss_scaling_for_backward(num_items_in_batch)) * topo.to(loss.dtype)
        self._record_topo(tau, topo.detach(), per_layer)
        return (loss, outputs) if return_outputs else loss

    def _compute_loss_with_activations(self, model, inputs, return_outputs, num_items_in_batch):
        """Activation Similarity, TopoLM: every micro-batch adds ``τ / n_micro · loss(its activations)``.

        TopoLM's neighbourhoods are drawn from the training seed, the optimizer step and the index of the micro-batch
        within it, never from the global RNG, so a run resumed from a checkpoint draws what the uninterrupted run
        drew."""
        step, seen = self._topo_micro_batch
        micro_batch = seen if step == self.state.global_step else 0
        self._topo_micro_batch = (self.state.global_step, micro_batch + 1)
        with self.topo_loss.record_activations(self.model) as recorded:
            result = super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
        loss, outputs = result if return_outputs else (result, None)
        tau = self.current_tau()
        topo, per_layer = self.topo_loss.compute(
            self.model,
            with_grad=tau > 0,
            activations=recorded,
            attention_mask=inputs.get("attention_mask"),
            neighbourhood_keys=(abs(int(self.args.seed)), self.state.global_step, micro_batch),
        )
        recorded.clear()
        if tau > 0:
            # training_step multiplies by `scaling`; the micro-batches of one optimizer step then sum to τ·mean(AS).
            per_micro_batch = tau / self.current_gradient_accumulation_steps
            loss = loss + (per_micro_batch / self._loss_scaling_for_backward(num_items_in_batch)) * topo.to(loss.dtype)
        self._record_topo(tau, topo.detach(), per_layer)
        return (loss, outputs) if return_outputs else loss

    def _record_topo(self, tau: float, topo: torch.Tensor, per_layer: dict[str, torch.Tensor]) -> None:
        # Kept on device and summed: no host sync per step; `log` reads them once per logging interval. (τ is filled
        # in on the device: `new_tensor(tau)` would copy it from host memory, which waits for the queued GPU work.)
        # One stack for all the layers (not one detach and cast per layer: each is an operator launch).
        with torch.no_grad():
            values = torch.stack([*per_layer.values(), topo * tau, torch.full_like(topo, tau)]).float()
        if self._topo_sums is None or self._topo_sums.shape != values.shape:
            self._topo_sums = torch.zeros_like(values)
            self._topo_count = 0
            self._topo_layer_names = [self.topo_loss_label(n) for n in per_layer]
            roles = {layer.name: layer.role for layer in self.topo_loss.layers(self.model)}
            self._topo_target_mask = torch.tensor([roles[n] == "target" for n in per_layer], device=values.device)
        self._topo_sums += values
        self._topo_count += 1

    def topo_loss_label(self, name: str) -> str:
        """Log key of a layer: :func:`~hf_topo.targets.short_layer_name` of its base-model name."""
        from .targets import base_model_name, short_layer_name

        return short_layer_name(base_model_name(self.model, name))

    # ---- logging ---------------------------------------------------------------------------------------------------

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._topo_count:
            sums = (self._topo_sums / self._topo_count).tolist()
            layer_values, weighted, mean_tau = sums[:-2], sums[-2], sums[-1]
            mask = self._topo_target_mask.tolist()
            targets = [v for v, is_target in zip(layer_values, mask, strict=True) if is_target]
            logs["topo_loss"] = sum(targets) / len(targets)
            logs["task_loss"] = logs["loss"] - weighted
            logs["tau"] = mean_tau  # τ used in the steps logged (their mean when logging_steps > 1)
            for label, value in zip(self._topo_layer_names, layer_values, strict=True):
                logs[f"topo_loss/{label}"] = value
            self._topo_sums.zero_()
            self._topo_count = 0
        super().log(logs, start_time)

    # ---- evaluation ------------------------------------------------------------------------------------------------

    def evaluation_loop(
        self,
        dataloader,
        description: str,
        prediction_loss_only: bool | None = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ):
        """`Trainer.evaluation_loop` plus `<prefix>_topo_loss`: the regularizer's value (mean over the target layers,
        not multiplied by τ) on the model, without gradients. Activation Similarity is measured on the first batch
        of the loop (that process's, under data parallelism); the weight-based losses need no batch."""
        self._refresh_topo_config()
        self._topo_eval_inputs = None
        output = super().evaluation_loop(
            dataloader,
            description,
            prediction_loss_only=prediction_loss_only,
            ignore_keys=ignore_keys,
            metric_key_prefix=metric_key_prefix,
        )
        inputs, self._topo_eval_inputs = self._topo_eval_inputs, None
        if not self.topo_loss.config.reads_activations or inputs is not None:
            value, _ = self.topo_loss.evaluate(self.model, inputs)
            output.metrics[f"{metric_key_prefix}_topo_loss"] = value.item()
        return output

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        if self.topo_loss.config.reads_activations and self._topo_eval_inputs is None:
            self._topo_eval_inputs = self._prepare_inputs(inputs)  # the batch Activation Similarity is measured on
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)

    def hyperparameter_search(self, hp_space=None, compute_objective=None, *args, **kwargs):
        """`Trainer.hyperparameter_search`, whose default objective stays the evaluation loss.

        The stock default objective is `eval_loss` only when `evaluate()` reports no other metric, else the sum of
        all metrics; `eval_topo_loss` would turn it into the topographic loss. Pass `compute_objective` to choose.
        """
        if compute_objective is None:
            compute_objective = _objective_without_topo_loss
        return super().hyperparameter_search(hp_space, compute_objective, *args, **kwargs)

    # ---- saving ----------------------------------------------------------------------------------------------------

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        self.write_topography_metadata()
        super().save_model(output_dir, _internal_call=_internal_call)
        # A PEFT model saves only its adapter (no config.json): keep the record next to it.
        if hasattr(self.model, "peft_config") and self.args.should_save:
            directory = output_dir or self.args.output_dir
            write_adapter_record(directory, stored_topography(self.model.get_base_model()))
            from .hub.card import add_card_tags

            add_card_tags(os.path.join(directory, "README.md"), MODEL_TAGS)  # the adapter's card, on any PEFT version

    def write_topography_metadata(self) -> None:
        """Put the topographic setup (with every layer's sheet and the τ at this step) into `model.config`."""
        model = self.accelerator.unwrap_model(self.model) if hasattr(self, "accelerator") else self.model
        config = self.topo_loss.config_for(self.model)
        targets = [model]
        base = getattr(model, "get_base_model", None)
        if callable(base):
            targets.append(base())
        # The model's history is not a run setting: a post-hoc arrangement or an earlier fine-tuning of the loaded model
        # stays in its record when it is trained on.
        for target in reversed(targets):
            stored = stored_topography(target)
            if isinstance(stored, dict):
                for key in ("arrangement", "finetuning"):
                    if getattr(config, key) is None and stored.get(key):
                        setattr(config, key, stored[key])
        for target in targets:
            if getattr(target, "config", None) is not None:
                config.attach_to(target.config, step=self.state.global_step)

    # ---- model card ------------------------------------------------------------------------------------------------

    def create_model_card(
        self,
        language: str | None = None,
        license: str | None = None,
        tags: str | list[str] | None = None,
        model_name: str | None = None,
        finetuned_from: str | None = None,
        tasks: str | list[str] | None = None,
        dataset_tags: str | list[str] | None = None,
        dataset: str | list[str] | None = None,
        dataset_args: str | list[str] | None = None,
    ) -> None:
        """Write the TopoNet model card into `args.output_dir` (`README.md` and `figures/sheet_maps.png`).

        `push_to_hub` calls this before uploading the output directory. The card (see `hf_topo.hub.toponet_card`)
        carries τ and its schedule, the sheets, the recipe, results (`metrics.json`/`blimp.json` there, else the log
        history) and the sheet maps. `dataset` names the training data (its first entry is taken as the evaluation
        set), `finetuned_from` becomes `base_model`. A PEFT adapter gets the stock card of `Trainer`.
        """
        if not self.is_world_process_zero():
            return
        if hasattr(self.model, "peft_config"):
            return super().create_model_card(
                language=language, license=license, tags=tags, model_name=model_name, finetuned_from=finetuned_from,
                tasks=tasks, dataset_tags=dataset_tags, dataset=dataset, dataset_args=dataset_args,
            )  # fmt: skip
        from .hub import write_trainer_card

        write_trainer_card(
            self, model_name=model_name, language=language, license=license, tags=tags,
            finetuned_from=finetuned_from, dataset=dataset,
        )  # fmt: skip
