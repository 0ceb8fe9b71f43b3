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

from .._version import __version__
from ..sheet import CorticalSheet

__all__ = [
    "DOWNSAMPLING_KEY",
    "DOWNSAMPLING_SCHEMA_VERSION",
    "GAIN_METHODS",
    "DownsampledLayer",
    "check_schema_version",
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


def check_schema_version(record: dict[str, Any], source: str | None = None) -> int:
    """The ``schema_version`` of a downsampling record, refused unless this hf_topo reads it (1 to
    :data:`DOWNSAMPLING_SCHEMA_VERSION`).

    A newer record may hold keys this version would ignore (a new variant, a new layer type), so the model would load
    and compute something other than what was saved: it is refused, never read as the newest known version.

    Args:
        record: the ``"topographic_downsampling"`` entry of a ``config.json``.
        source: the model folder or Hub id, named in the error.

    Raises:
        ValueError: the version is missing, not an integer, below 1, or newer than this hf_topo reads.
    """
    version = record.get("schema_version")
    where = f" of {source}" if source else ""
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(
            f"The '{DOWNSAMPLING_KEY}' record{where} has schema_version={version!r}, which is not a schema version of "
            f"hf_topo's downsampling record (an integer from 1 to {DOWNSAMPLING_SCHEMA_VERSION}). The config.json was "
            "edited or written by other software: re-create the model with hf_topo.downsampling.downsample_model."
        )
    if version > DOWNSAMPLING_SCHEMA_VERSION:
        raise ValueError(
            f"The '{DOWNSAMPLING_KEY}' record{where} has schema_version={version}, newer than this hf_topo "
            f"({__version__}) reads (1 to {DOWNSAMPLING_SCHEMA_VERSION}): the model was saved by a newer hf_topo and "
            "may need what this one lacks. Upgrade hf_topo (`pip install -U hf_topo`) to load it."
        )
    return version


def read_record(config: PreTrainedConfig) -> tuple[dict[str, Any], dict[str, DownsampledLayer]]:
    """The validated record of ``config`` and its layers by module name; a ``ValueError`` says what is wrong."""
    record = getattr(config, DOWNSAMPLING_KEY, None)
    if not isinstance(record, dict):
        raise ValueError(
            f"{type(config).__name__} has no '{DOWNSAMPLING_KEY}' record, so there is nothing to rebuild. Create "
            "downsampled models with hf_topo.downsampling.downsample_model(model, factors) and load them with "
            "AutoModelForCausalLM.from_pretrained."
        )
    check_schema_version(record, getattr(config, "_name_or_path", None) or None)
    missing = [key for key in ("factor_h", "factor_w", "layers") if key not in record]
    if missing:
        raise ValueError(
            f"The '{DOWNSAMPLING_KEY}' record lacks {missing}; it was edited or truncated. Re-create the model with "
            "hf_topo.downsampling.downsample_model."
        )
    layers = {name: DownsampledLayer.from_dict(name, data) for name, data in record["layers"].items()}
    return record, layers


def downsampling_variant(record: dict[str, Any]) -> str:
    """``"gains"`` or ``"paper"`` for a downsampling record (a version-1 record, without gains, is ``"paper"``).

    Raises:
        ValueError: the record's ``schema_version`` is not one this hf_topo reads (:func:`check_schema_version`), or
            its variant is unknown.
    """
    check_schema_version(record)
    variant = record.get("variant", "paper")
    if variant not in ("gains", "paper"):
        raise ValueError(f"The '{DOWNSAMPLING_KEY}' record has variant={variant!r}; expected 'gains' or 'paper'.")
    return variant
