"""Where a TopoNet keeps its topographic record, and reading it from there.

The record (what :meth:`hf_topo.config.TopoConfig.to_dict` writes, schema in :mod:`hf_topo.config`) lives

* in the model's ``config.json``, under the key :data:`TOPOGRAPHY_KEY` (``"topography"``): the model's
  ``PreTrainedConfig`` carries it as an attribute, so ``save_pretrained`` writes it and ``from_pretrained`` reads it
  with no extra code;
* in :data:`TOPOGRAPHY_FILE` (``topography.json``) beside a PEFT adapter, whose folder has no ``config.json``.

This module finds the record of a model, a ``PreTrainedConfig``, a local folder or a Hub repo and returns it as
stored; :meth:`TopoConfig.from_pretrained <hf_topo.config.TopoConfig.from_pretrained>` parses and checks it.
"""

from __future__ import annotations

import json
import os
from typing import Any

from torch import nn

__all__ = [
    "TOPOGRAPHY_KEY",
    "TOPOGRAPHY_FILE",
    "ARRANGEMENT_KEY",
    "append_to_record",
    "read_topography_record",
    "stored_topography",
    "write_adapter_record",
]

#: Key of the record in a model's ``config.json`` (an attribute of its ``PreTrainedConfig``).
TOPOGRAPHY_KEY = "topography"
#: File holding the record next to a PEFT adapter, which has no config.json of its own.
TOPOGRAPHY_FILE = "topography.json"
#: Key, inside the record, of the list of post-hoc arrangements of the units (:func:`hf_topo.arrange_units`).
ARRANGEMENT_KEY = "arrangement"


def stored_topography(model_or_config: Any) -> Any:
    """The record stored in a model's config (or in a ``PreTrainedConfig``) as it is, ``None`` when there is none."""
    model_config = (
        getattr(model_or_config, "config", None) if isinstance(model_or_config, nn.Module) else model_or_config
    )
    return getattr(model_config, TOPOGRAPHY_KEY, None)


def read_topography_record(source: Any, **hub_kwargs) -> tuple[Any, str]:
    """``(record as stored, name of where it was read)`` of a model, a ``PreTrainedConfig``, a local folder or a Hub
    repo id.

    A folder with ``topography.json`` and no ``config.json`` is a PEFT adapter saved by ``TopoTrainer``: the record is
    that file's content. Otherwise the record is the ``"topography"`` entry of the config, read through
    ``AutoConfig.from_pretrained(source, **hub_kwargs)`` for a folder or repo id (``revision``, ``token``,
    ``cache_dir`` pass through).

    Raises:
        ValueError: the source has no record (it is not a saved TopoNet), or its ``topography.json`` is not JSON.
    """
    if isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        adapter_record = os.path.join(source, TOPOGRAPHY_FILE)
        if os.path.isfile(adapter_record) and not os.path.isfile(os.path.join(source, "config.json")):
            with open(adapter_record) as f:
                try:
                    return json.load(f), adapter_record
                except json.JSONDecodeError as err:
                    raise ValueError(
                        f"{adapter_record} is not valid JSON ({err}); re-save the adapter with TopoTrainer."
                    ) from None
        from transformers import AutoConfig

        model_config = AutoConfig.from_pretrained(source, **hub_kwargs)
    else:
        name = type(source).__name__
        model_config = getattr(source, "config", None) if isinstance(source, nn.Module) else source
    record = stored_topography(model_config)
    if record is None:
        raise ValueError(
            f"{name} has no '{TOPOGRAPHY_KEY}' metadata in its config, so it is not a saved TopoNet. Train it with "
            "TopoTrainer, or describe its layers with TopoConfig(target_modules=..., tau=...) yourself."
        )
    return record, name


def write_adapter_record(directory: str | os.PathLike, record: Any) -> None:
    """Write ``record`` as :data:`TOPOGRAPHY_FILE` into ``directory`` (a PEFT adapter's folder)."""
    with open(os.path.join(directory, TOPOGRAPHY_FILE), "w") as f:
        json.dump(record, f, indent=2)


def append_to_record(model_config: Any, key: str, entry: dict) -> dict:
    """Append ``entry`` to the list under ``key`` of the record stored in ``model_config`` (a ``PreTrainedConfig``),
    the rest of the record kept as stored; returns the new record.

    Raises:
        ValueError: ``model_config`` holds no record (attach one first, e.g. with
            :func:`hf_topo.attach_inferred_topography`).
    """
    record = stored_topography(model_config)
    if not isinstance(record, dict):
        raise ValueError(
            f"{type(model_config).__name__} holds no '{TOPOGRAPHY_KEY}' record to add {key!r} to: attach one first "
            "(TopoConfig.attach_to or hf_topo.attach_inferred_topography)."
        )
    record = dict(record)
    record[key] = list(record.get(key) or []) + [entry]
    setattr(model_config, TOPOGRAPHY_KEY, record)
    return record
