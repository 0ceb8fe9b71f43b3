"""The downsampling record in ``config.json`` (``"topographic_downsampling"``): what to rebuild, and which variant.

Schema version 2 adds the gains: a model-level ``"variant"`` (``"gains"``: per-unit gains, the default of
:func:`~hf_topo.downsampling.downsample_model`; ``"paper"``: the paper's A.5 layer), ``"gains"`` (how the gains
were set: ``"closed_form"``, ``"least_squares"``, or ``null`` for the paper's variant), ``"distill_steps"`` and a
per-layer ``"gain"`` flag. A version-1 record (saved before gains existed) has none of these keys and reads as the
paper's variant, so older downsampled models keep loading.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedConfig

from ..sheet import CorticalSheet

__all__ = [
    "DOWNSAMPLING_KEY",
    "DOWNSAMPLING_SCHEMA_VERSION",
    "GAIN_METHODS",
    "DownsampledLayer",
    "downsampling_variant",
    "read_record",
]

#: Key of the downsampling record in ``config.json``.
DOWNSAMPLING_KEY = "topographic_downsampling"
DOWNSAMPLING_SCHEMA_VERSION = 2
#: How per-unit gains can be set: from the weights alone, or fitted on activations of some text.
GAIN_METHODS = ("closed_form", "least_squares")


@dataclass(frozen=True)
class DownsampledLayer:
    """One downsampled layer as recorded in ``config.json``: its full sheet, reduced sheet, bias and gain flags."""

    sheet: CorticalSheet
    reduced_height: int
    reduced_width: int
    bias: bool
    gain: bool = False

    def to_dict(self) -> dict[str, Any]:
        return self.sheet.to_dict() | {
            "reduced_height": self.reduced_height,
            "reduced_width": self.reduced_width,
            "bias": self.bias,
            "gain": self.gain,
        }

    @classmethod
    def from_dict(cls, module_name: str, data: dict[str, Any]) -> DownsampledLayer:
        try:
            return cls(
                sheet=CorticalSheet.from_dict(module_name, data),
                reduced_height=int(data["reduced_height"]),
                reduced_width=int(data["reduced_width"]),
                bias=bool(data["bias"]),
                gain=bool(data.get("gain", False)),  # absent in version-1 records: the paper's layer
            )
        except KeyError as missing:
            raise ValueError(
                f"The downsampling record of layer {module_name!r} lacks the key {missing}; expected the sheet keys "
                "plus 'reduced_height', 'reduced_width', 'bias'. Re-create the model with hf_topo.downsample_model."
            ) from None


def read_record(config: PreTrainedConfig) -> tuple[dict[str, Any], dict[str, DownsampledLayer]]:
    """The validated record of ``config`` and its layers by module name; a ``ValueError`` says what is wrong."""
    record = getattr(config, DOWNSAMPLING_KEY, None)
    if not isinstance(record, dict):
        raise ValueError(
            f"{type(config).__name__} has no '{DOWNSAMPLING_KEY}' record, so there is nothing to rebuild. Create "
            "downsampled models with hf_topo.downsampling.downsample_model(model, factors) and load them with "
            "AutoModelForCausalLM.from_pretrained."
        )
    version = record.get("schema_version")
    if not isinstance(version, int) or version > DOWNSAMPLING_SCHEMA_VERSION:
        raise ValueError(
            f"The '{DOWNSAMPLING_KEY}' record has schema_version={version!r}; this hf_topo reads versions up to "
            f"{DOWNSAMPLING_SCHEMA_VERSION}. Upgrade hf_topo (`pip install -U hf_topo`)."
        )
    missing = [key for key in ("factor_h", "factor_w", "layers") if key not in record]
    if missing:
        raise ValueError(
            f"The '{DOWNSAMPLING_KEY}' record lacks {missing}; it was edited or truncated. Re-create the model with "
            "hf_topo.downsampling.downsample_model."
        )
    layers = {name: DownsampledLayer.from_dict(name, data) for name, data in record["layers"].items()}
    return record, layers


def downsampling_variant(record: dict[str, Any]) -> str:
    """``"gains"`` or ``"paper"`` for a downsampling record (a version-1 record, without gains, is ``"paper"``)."""
    variant = record.get("variant", "paper")
    if variant not in ("gains", "paper"):
        raise ValueError(f"The '{DOWNSAMPLING_KEY}' record has variant={variant!r}; expected 'gains' or 'paper'.")
    return variant
