"""``TopoRegularizer``: find a model's topographic layers and average their sheet losses.

Which regularizer is a :class:`~hf_topo.regularizers.registry.RegularizerSpec` looked up by the config's ``loss``
(:func:`~hf_topo.regularizers.register_regularizer` adds one). The math lives beside this module, one pure function
per regularizer: :mod:`hf_topo.regularizers.laplacian_pyramid`
(TopoLoss, the paper's loss; :mod:`~hf_topo.regularizers.bias_map` for a layer's bias), :mod:`hf_topo.regularizers.similarity`
(Truong & Hasson's Weight / Activation Similarity) and :mod:`hf_topo.regularizers.spatial_correlation` (TopoLM's
spatial loss). This module is the bookkeeping, the same for every regularizer (PEFT's ``tuners/lora/model.py`` plays
that part for LoRA): which layers, which sheets, which are optimized and which only watched, and (for the
activation-based regularizers) the layer outputs, or inputs, of the current forward pass.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import Iterator

import torch
from torch import nn

from .config import TopoConfig
from .distributed import gathered_for_reading, is_dtensor, is_zero3_partitioned
from .presets import default_target_modules
from .regularizers.bias_map import bias_map_loss
from .regularizers.grouped import grouped_blur, grouped_weight_losses
from .regularizers.laplacian_pyramid import sheet_cosine_loss
from .regularizers.registry import ActivationSheet, RegularizerSpec, WeightSheet
from .regularizers.spatial_correlation import neighbourhood_generator
from .sheet import ACTIVATION_SHEET, effective_weight, get_layer_kind, sheet_units_first, sheet_view, unwrapped_layer
from .targets import TopoLayer, resolve_sheets

__all__ = ["TopoRegularizer", "attach_inferred_topography"]

logger = logging.getLogger(__name__)


def _keep(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def _unit_responses(
    layer: TopoLayer, activations: torch.Tensor | None, attention_mask: torch.Tensor | None, spec: RegularizerSpec
) -> torch.Tensor:
    """``(n_samples, n_units)``: the layer's responses at the non-padding positions of the batch.

    A Linear/Conv1D output (or a module's hidden states) is ``(..., n_units)``; a Conv2d output
    ``(batch, n_units, height, width)`` counts every image position as a sample (its channels are the units)."""
    loss = spec.display_name
    if activations is None:
        raise ValueError(
            f"{loss} on layer {layer.name!r}: no activations of this layer were seen in the forward "
            "pass. Record them with `topo.record_activations(model)` around a forward that runs the layer."
        )
    layer_type = layer.sheet.layer_type
    if layer_type != ACTIVATION_SHEET and get_layer_kind(layer_type).channels_first_activations:
        if activations.ndim < 3 or activations.shape[1] != layer.sheet.n_units:
            raise ValueError(
                f"Activations of the {layer_type} layer {layer.name!r} have shape {tuple(activations.shape)}; expected "
                f"(batch, {layer.sheet.n_units}, height, width)."
            )
        if attention_mask is not None:
            raise ValueError(f"An attention_mask does not apply to the {layer_type} layer {layer.name!r}: pass None.")
        activations = activations.movedim(1, -1)  # (batch, height, width, units): every position is a sample
    if activations.shape[-1] != layer.sheet.n_units:
        raise ValueError(
            f"Activations of {layer.name!r} have {activations.shape[-1]} units in their last dimension, but its sheet "
            f"has {layer.sheet.n_units}: pass the layer's own {layer.sheet.units} (..., n_units)."
        )
    responses = activations.reshape(-1, activations.shape[-1])
    if attention_mask is not None:
        if tuple(attention_mask.shape) != tuple(activations.shape[:-1]):
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)} but the activations of {layer.name!r} have "
                f"positions {tuple(activations.shape[:-1])}; pass the batch's (batch, sequence) mask."
            )
        responses = responses[attention_mask.reshape(-1).to(torch.bool)]
    if responses.shape[0] < 2:
        raise ValueError(
            f"{loss} on layer {layer.name!r} needs at least 2 non-padding positions in the batch, "
            f"got {responses.shape[0]}."
        )
    return responses


class TopoRegularizer:
    """The topographic regularizer of a model, averaged over its target layers (not multiplied by τ).

    Which regularizer is the config's ``loss``, a name in the registry (:mod:`hf_topo.regularizers.registry`): the default ``"laplacian_pyramid"`` is TopoLoss,
    ``mean_layers(1 − mean_u cos(C_u, blur(C)_u))`` (on output or input sheets, with the bias map when
    ``include_bias``); ``"weight_similarity"`` and ``"activation_similarity"`` are Truong & Hasson's
    neighbour-distance losses on the same sheets (:mod:`hf_topo.regularizers.similarity`); ``"spatial_correlation"``
    is TopoLM's (:mod:`hf_topo.regularizers.spatial_correlation`), on neighbourhoods drawn per call from a generator
    seeded by ``neighbourhood_keys``; or any regularizer registered with
    :func:`~hf_topo.regularizers.register_regularizer`. Works on
    plain and PEFT-wrapped models; for a layer wrapped by LoRA the sheet is built from the effective weight
    ``W + scaling·B·A``.

    Example::

        topo = TopoRegularizer(TopoConfig(target_modules=["mlp.c_fc"]))
        loss = task_loss + tau * topo(model)
        topo.per_layer(model)   # {"transformer.h.0.mlp.c_fc": tensor(0.93), ...}

        # Activation Similarity needs the layer outputs of the batch:
        topo = TopoRegularizer(TopoConfig(loss="activation_similarity"))
        with topo.record_activations(model) as recorded:
            task_loss = model(**batch).loss
        loss = task_loss + tau * topo.compute(model, activations=recorded, attention_mask=batch["attention_mask"])[0]

    Args:
        config: the :class:`TopoConfig`; keyword arguments build one when it is omitted.
    """

    def __init__(self, config: TopoConfig | None = None, **config_kwargs):
        if config is not None and config_kwargs:
            raise ValueError("Pass either a TopoConfig or its keyword arguments, not both.")
        self.config = config if config is not None else TopoConfig(**config_kwargs)
        self._resolved: weakref.WeakKeyDictionary[nn.Module, list[TopoLayer]] = weakref.WeakKeyDictionary()

    @property
    def spec(self) -> RegularizerSpec:
        """The registered spec of the config's ``loss``."""
        return self.config.regularizer

    def layers(self, model: nn.Module) -> list[TopoLayer]:
        """The resolved (and validated) topographic layers of ``model``; cached per model."""
        if model not in self._resolved:
            self._resolved[model] = resolve_sheets(model, self.config)
            layers = self._resolved[model]
            logger.info(
                "%s on %d layer(s) (%d watched): %s",
                self.config.loss,
                sum(layer.role == "target" for layer in layers),
                sum(layer.role == "watch" for layer in layers),
                ", ".join(
                    f"{layer.name} {layer.sheet.height}x{layer.sheet.width}x{layer.sheet.depth}"
                    for layer in layers[:3]
                )
                + (" ..." if len(layers) > 3 else ""),
            )
        return self._resolved[model]

    @contextlib.contextmanager
    def record_activations(self, model: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
        """Record the activations of ``model``'s topographic layers during the forward passes inside the block.

        Yields a dict ``{layer name: activations}`` filled by forward hooks: the last forward's output of each layer
        (the first element of a tuple output, e.g. an attention module's), or for a sheet of ``units="input"`` the
        hidden states the layer received (its first positional argument, else its ``hidden_states`` keyword), with
        their autograd graph, so a loss on them trains the model. The hooks are removed when the block exits, so
        nothing is recorded afterwards (e.g. by a gradient-checkpointing recomputation) and nothing is kept beyond
        what the caller holds.
        """
        recorded: dict[str, torch.Tensor] = {}
        handles = []

        def output_hook(name: str):
            def store(_module, _inputs, output):
                recorded[name] = output[0] if isinstance(output, tuple) else output

            return store

        def input_hook(name: str):
            def store(_module, args, kwargs):
                value = args[0] if args else kwargs.get("hidden_states", kwargs.get("input"))
                if value is not None:
                    recorded[name] = value

            return store

        try:
            for layer in self.layers(model):
                if layer.sheet.units == "input":
                    handles.append(layer.module.register_forward_pre_hook(input_hook(layer.name), with_kwargs=True))
                else:
                    handles.append(layer.module.register_forward_hook(output_hook(layer.name)))
            yield recorded
        finally:
            for handle in handles:
                handle.remove()

    def weights_partitioned(self, model: nn.Module) -> bool:
        """Whether the topographic layers' weights are DeepSpeed ZeRO-3 placeholders outside their forward (then the
        terms that train them are computed inside the forward: :meth:`evaluate_in_forward`)."""
        return any(is_zero3_partitioned(p) for layer in self.layers(model) for p in layer.module.parameters())

    @contextlib.contextmanager
    def evaluate_in_forward(self, model: nn.Module, with_grad: bool = True) -> Iterator[dict[str, torch.Tensor]]:
        """Compute each layer's weight-based term inside that layer's forward, while its weight is whole.

        Under DeepSpeed ZeRO-3 a layer's parameters are gathered only around its forward. A forward pre-hook,
        registered after ZeRO-3's own (so it runs once they are gathered), computes the layer's term from a copy of
        the weight (ZeRO-3 frees the gathered storage after the forward); its gradient reaches the parameter in the
        same backward pass as the task gradient. Yields ``{layer name: loss}``, filled by the forward passes inside
        the block (a layer's first call only; hooks are removed on exit, so a checkpointing recomputation adds
        nothing); pass it to :meth:`compute` as ``evaluated``.

        Example::

            with topo.evaluate_in_forward(model) as evaluated:
                task_loss = model(**batch).loss
            loss = task_loss + tau * topo.compute(model, evaluated=evaluated)[0]
        """
        if self.config.reads_activations:
            raise ValueError(
                f"loss={self.config.loss!r} reads activations, not weights: use `record_activations` instead."
            )
        evaluated: dict[str, torch.Tensor] = {}
        handles = []

        def hook(layer: TopoLayer):
            optimize = with_grad and layer.role == "target"

            def evaluate(module, _inputs):
                if layer.name in evaluated:
                    return
                # Under non-reentrant checkpointing this runs inside a checkpointed block: the identity saved-tensor
                # hooks keep the loss's saved tensors out of the block's recomputation bookkeeping. Under reentrant
                # checkpointing the block runs without grad, but the weight is a leaf, so the graph still reaches it.
                with torch.autograd.graph.saved_tensors_hooks(_keep, _keep), torch.set_grad_enabled(optimize):
                    bias = unwrapped_layer(module).bias.clone() if self.config.include_bias else None
                    value = self._weight_loss(layer, effective_weight(module).clone(), bias)
                evaluated[layer.name] = value if optimize else value.detach()

            return evaluate

        try:
            for layer in self.layers(model):
                if unwrapped_layer(layer.module) is not layer.module and self.weights_partitioned(model):
                    raise ValueError(
                        f"Layer {layer.name!r} is wrapped by PEFT and its weights are partitioned by DeepSpeed ZeRO-3: "
                        "the adapter and base weights are gathered at different times, so the effective weight is "
                        "never whole. Train adapters with ZeRO-2 (or FSDP2), where the weights are readable."
                    )
                handles.append(layer.module.register_forward_pre_hook(hook(layer)))
            yield evaluated
        finally:
            for handle in handles:
                handle.remove()

    def _weight_loss(self, layer: TopoLayer, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        sheet, units_first = sheet_view(weight, layer.sheet)
        bias_map = None if bias is None else bias.reshape(layer.sheet.height, layer.sheet.width)
        return self.spec.layer_loss(WeightSheet(sheet, units_first, bias_map, layer.sheet), self.config)

    def _laplacian_pyramid_by_geometry(
        self, model: nn.Module, with_grad: bool
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]] | None:
        """TopoLoss of every layer, the layers of one sheet geometry computed together
        (:func:`~hf_topo.regularizers.grouped.grouped_weight_losses`: one autograd node per geometry, each weight
        read in place as it is stored); ``(mean over target layers, {name: loss} in :meth:`layers` order)``, watched
        layers detached. The mean is taken from each group's vector of losses, so the call launches no operator per
        layer (no sheet view, no stacking of per-layer values, none in the backward either) where the layers carry
        no bias map.

        ``None`` where the per-layer loop of :meth:`compute` must run instead: another loss than TopoLoss, weights
        partitioned by ZeRO-3 (whole only inside their forward) or sharded by FSDP2 (all-gathered one layer at a time,
        so that the whole weights of a geometry never coexist).
        """
        config = self.config
        layers = self.layers(model)
        if config.loss != "laplacian_pyramid" or not layers:
            return None
        params = [p for layer in layers for p in unwrapped_layer(layer.module).parameters(recurse=False)]
        if any(is_zero3_partitioned(p) or is_dtensor(p) for p in params):
            return None
        blur_kwargs = {"factor_h": config.factor_h, "factor_w": config.factor_w, "interpolation": config.interpolation}
        grad_enabled = torch.is_grad_enabled()
        # (sheet height × width, layout, device) -> [(layer, weight, optimize)]; depths may differ within a group
        groups: dict[tuple, list[tuple[TopoLayer, torch.Tensor, bool]]] = {}
        for layer in layers:
            optimize = with_grad and grad_enabled and layer.role == "target"
            with torch.set_grad_enabled(optimize):
                weight = effective_weight(layer.module)  # LoRA/DoRA: the applied weight, with its graph
            sheet = layer.sheet
            if weight.numel() != sheet.height * sheet.width * sheet.depth:
                raise ValueError(
                    f"The weight of {layer.name!r} has shape {tuple(weight.shape)} ({weight.numel()} elements), but "
                    f"its sheet is {sheet.height} × {sheet.width} units × {sheet.depth} inputs: the layer changed "
                    "shape after the sheet was set; rebuild the regularizer (or the model's topo config)."
                )
            key = ((sheet.height, sheet.width), sheet_units_first(sheet), weight.device)
            groups.setdefault(key, []).append((layer, weight if optimize else weight.detach(), optimize))
        values: dict[str, torch.Tensor] = {}
        target_sums: list[torch.Tensor] = []  # per group whose layers are all plain targets: the sum of its losses
        targets: list[torch.Tensor] = []  # the other target layers' losses, one by one
        for ((height, width), units_first, _device), members in groups.items():
            blur = grouped_blur(height, width, **blur_kwargs)
            weights = [weight for _, weight, _ in members]
            if blur is None:  # wide blur rows: the dense per-layer kernel
                group = None
                losses = [
                    sheet_cosine_loss(sheet_view(weight, layer.sheet)[0], units_first, **blur_kwargs)
                    for (layer, _, _), weight in zip(members, weights, strict=True)
                ]
            else:
                group = grouped_weight_losses(weights, units_first, blur)
                losses = group.unbind(0)
            biased = [
                config.include_bias and unwrapped_layer(layer.module).bias is not None for layer, _, _ in members
            ]
            if group is not None and not any(biased) and all(optimize for _, _, optimize in members):
                target_sums.append(group.sum())
                group_targets = False
            else:
                group_targets = True
            for (layer, _, optimize), value, has_bias in zip(members, losses, biased, strict=True):
                if has_bias:
                    with torch.set_grad_enabled(optimize):
                        # The mean of the reference's LaplacianPyramid and LaplacianPyramidOnBias values.
                        bias = unwrapped_layer(layer.module).bias
                        bias_map = bias.reshape(layer.sheet.height, layer.sheet.width)
                        value = (value + bias_map_loss(bias_map, **blur_kwargs)) / 2
                values[layer.name] = value if optimize else value.detach()
                if group_targets and layer.role == "target":
                    targets.append(values[layer.name])
        count = sum(layer.role == "target" for layer in layers)
        parts = target_sums + ([torch.stack(targets).sum()] if targets else [])
        total = parts[0] if len(parts) == 1 else torch.stack(parts).sum()
        return total / count, {layer.name: values[layer.name] for layer in layers}

    def layer_loss(
        self,
        layer: TopoLayer,
        activations: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The regularizer of one layer (float32 scalar, differentiable w.r.t. the weight or the activations).

        ``activations`` (activation-based losses only): the layer's output, or the hidden states it received for an
        input sheet, ``(..., n_units)``; positions where ``attention_mask`` (shape ``activations.shape[:-1]``) is 0
        are padding and left out. ``generator`` draws the neighbourhoods of a regularizer that samples them (TopoLM's;
        default: seeded with 0).
        """
        spec = self.spec
        if not spec.reads_activations:
            bias = unwrapped_layer(layer.module).bias if self.config.include_bias else None
            return self._weight_loss(layer, effective_weight(layer.module), bias)
        responses = _unit_responses(layer, activations, attention_mask, spec)  # (n_samples, n_units)
        if spec.draws_neighbourhoods and generator is None:
            generator = neighbourhood_generator(0)
        sheet = ActivationSheet(responses, layer.sheet, generator if spec.draws_neighbourhoods else None)
        return spec.layer_loss(sheet, self.config)

    def compute(
        self,
        model: nn.Module,
        with_grad: bool = True,
        activations: dict[str, torch.Tensor] | None = None,
        attention_mask: torch.Tensor | None = None,
        evaluated: dict[str, torch.Tensor] | None = None,
        neighbourhood_keys: tuple[int, ...] = (0,),
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(mean over target layers, {name: loss} for every layer)``; watched layers never carry a gradient.

        ``activations``/``attention_mask``: for the activation-based losses, the activations recorded with
        :meth:`record_activations` and the batch's attention mask (padding excluded).
        ``neighbourhood_keys``: TopoLM's neighbourhoods of the ``i``-th layer are drawn by
        ``neighbourhood_generator(*neighbourhood_keys, i)`` (TopoTrainer passes the training seed, the optimizer
        step and the micro-batch index, so a resumed run draws the same neighbourhoods).
        ``evaluated``: the layer terms computed during the forward by :meth:`evaluate_in_forward` (DeepSpeed ZeRO-3).

        Under FSDP2 the weights are all-gathered one layer at a time (a collective: call this on every rank). Under
        ZeRO-3 without ``evaluated``, only a loss without gradient can be read (each layer gathered in turn).
        """
        if self.config.reads_activations and activations is None:
            raise ValueError(
                f"loss={self.config.loss!r} is computed from the layers' activations of the current batch: run the "
                "forward pass inside `with topo.record_activations(model) as recorded:` and pass "
                "`activations=recorded` (TopoTrainer does this for you)."
            )
        per_layer: dict[str, torch.Tensor] = {}
        targets: list[torch.Tensor] = []
        if evaluated is None:
            grouped = self._laplacian_pyramid_by_geometry(model, with_grad)
            if grouped is not None:
                return grouped
        for index, layer in enumerate(self.layers(model)):
            optimize = with_grad and layer.role == "target"
            if evaluated is not None:
                if layer.name not in evaluated:
                    raise ValueError(
                        f"Layer {layer.name!r} was not run by the forward inside `evaluate_in_forward`; run a forward "
                        "pass of the whole model inside the block."
                    )
                value = evaluated[layer.name]
                per_layer[layer.name] = value if optimize else value.detach()
                if layer.role == "target":
                    targets.append(per_layer[layer.name])
                continue
            if optimize and torch.is_grad_enabled() and self.weights_partitioned(model):
                raise ValueError(
                    f"The weights of {layer.name!r} are partitioned by DeepSpeed ZeRO-3 and whole only during the "
                    "layer's forward: compute the loss there, `with topo.evaluate_in_forward(model) as evaluated:` "
                    "around the forward and `compute(model, evaluated=evaluated)` (TopoTrainer does this for you)."
                )
            with (
                torch.set_grad_enabled(optimize and torch.is_grad_enabled()),
                gathered_for_reading(layer.module.parameters() if not optimize else ()),
            ):
                if self.config.reads_activations:
                    generator = (
                        neighbourhood_generator(*neighbourhood_keys, index) if self.spec.draws_neighbourhoods else None
                    )
                    value = self.layer_loss(layer, activations.get(layer.name), attention_mask, generator)
                else:
                    value = self.layer_loss(layer)
            per_layer[layer.name] = value if optimize else value.detach()
            if layer.role == "target":
                targets.append(per_layer[layer.name])
        return torch.stack(targets).mean(), per_layer

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, inputs: dict[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The regularizer's value without gradients: ``(mean over target layers, {name: value})``.

        A weight-based loss needs only the model. The activation-based losses need a batch: ``inputs``
        (``input_ids`` and optionally ``attention_mask``, or an image model's ``pixel_values``, on the model's device)
        is run through the model in eval mode to record the layers' activations (TopoLM's neighbourhoods: drawn with
        the keys ``(0,)``).
        """
        if not self.config.reads_activations:
            return self.compute(model, with_grad=False)
        if not inputs or not ("input_ids" in inputs or "pixel_values" in inputs):
            raise ValueError(
                f"loss={self.config.loss!r} is measured on the activations of a batch: pass inputs={{'input_ids': ..., "
                "'attention_mask': ...}} or {'pixel_values': ...} (e.g. one evaluation batch)."
            )
        if "input_ids" in inputs:
            forward = {"input_ids": inputs["input_ids"], "attention_mask": inputs.get("attention_mask")}
        else:
            forward = {"pixel_values": inputs["pixel_values"]}
        was_training = model.training
        model.eval()
        try:
            with self.record_activations(model) as recorded:
                model(**forward)
            return self.compute(
                model, with_grad=False, activations=recorded, attention_mask=forward.get("attention_mask")
            )
        finally:
            model.train(was_training)

    def __call__(self, model: nn.Module) -> torch.Tensor:
        """Mean regularizer over the target layers of ``model`` (a scalar tensor, not multiplied by τ)."""
        return self.compute(model)[0]

    def per_layer(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """``{full module name: loss}`` for every target and watched layer."""
        return self.compute(model)[1]

    def config_for(self, model: nn.Module) -> TopoConfig:
        """A copy of the config with ``layers`` filled in from ``model`` (what gets saved in ``config.json``)."""
        data = self.config.to_dict()
        data["layers"] = {layer.sheet.module_name: layer.sheet.to_dict() for layer in self.layers(model)}
        return TopoConfig.from_dict(data)


def attach_inferred_topography(
    model: nn.Module, target_modules: list[str] | str | None = None, **config_kwargs
) -> TopoConfig:
    """Give a model that was not trained with hf_topo (any GPT-style model from the Hub or disk) sheet metadata.

    The sheets are the most-square ones over ``target_modules`` (default: the family's MLP expansion layer,
    :data:`hf_topo.presets.TARGET_PRESETS`), recorded with ``inferred: true`` and ``tau: 0``, so every hf_topo tool (loss,
    analysis, LoRA with ``--tau``) works on the model and the metadata does not pretend it was trained topographically.
    Returns the attached :class:`TopoConfig`.
    """
    if target_modules is None:
        target_modules = default_target_modules(model)
    config = TopoRegularizer(
        TopoConfig(target_modules=target_modules, tau=config_kwargs.pop("tau", 0.0), **config_kwargs)
    ).config_for(model)
    config.inferred = True
    config.attach_to(model.config)
    return config
