"""Reading layer outputs during a forward pass: one context manager for every analysis.

:func:`capture_outputs` hooks the chosen modules, puts the model in eval mode and turns off gradients for the
duration, and on exit (also after an error) removes the hooks and restores the model's training mode. The outputs
of the last forward pass are in the returned :class:`CapturedOutputs`; :meth:`CapturedOutputs.real_tokens` drops the
padding positions (``attention_mask == 0``) of a ``(batch, seq_len, n_units)`` output.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["CapturedOutputs", "capture_outputs"]


class CapturedOutputs(dict):
    """``{name: output}`` of the hooked modules in the latest forward pass (a tuple output keeps its first item)."""

    def output(self, name: str, input_ids: torch.Tensor | None = None) -> torch.Tensor:
        """The ``(batch, seq_len, n_units)`` output of ``name``; with ``input_ids`` its first two dimensions must
        match theirs (a ``ValueError`` otherwise, e.g. for a layer that pools over positions)."""
        value = self.get(name)
        if value is None or value.ndim != 3 or (input_ids is not None and value.shape[:2] != input_ids.shape):
            shape = None if value is None else tuple(value.shape)
            expected = "" if input_ids is None else f" for input {tuple(input_ids.shape)}"
            raise ValueError(
                f"Layer {name!r} must output (batch, seq_len, n_units) for every forward pass; got {shape}{expected}."
            )
        return value

    def real_tokens(self, name: str, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """``(n_real_tokens, n_units)``: the output of ``name`` at the positions where ``attention_mask`` is 1
        (every position when it is ``None``)."""
        value = self.output(name)
        if attention_mask is None:
            return value.reshape(-1, value.shape[-1])
        return value[attention_mask.to(value.device).bool()]


@contextmanager
def capture_outputs(model: nn.Module, modules: Mapping[str, nn.Module]) -> Iterator[CapturedOutputs]:
    """Capture the outputs of ``modules`` (``{name: module}`` of ``model``) in every forward pass of the block.

    Inside the block the model is in eval mode and no gradients are recorded; on exit the hooks are removed and the
    model's training mode restored, whatever happened inside. Call ``captured.clear()`` before a pass to be sure a
    value comes from it.

    Example:
        >>> with capture_outputs(model, {"h.0.mlp.c_fc": model.transformer.h[0].mlp.c_fc}) as captured:
        ...     model(input_ids=ids)
        ...     units = captured.real_tokens("h.0.mlp.c_fc", mask)  # (n_real_tokens, n_units)
    """
    captured = CapturedOutputs()

    def hook_for(name: str):
        def hook(module, inputs, output):
            captured[name] = (output[0] if isinstance(output, tuple) else output).detach()

        return hook

    handles = [module.register_forward_hook(hook_for(name)) for name, module in modules.items()]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield captured
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
