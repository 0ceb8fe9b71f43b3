"""TopoNets on the Hugging Face Hub: loading with sheet metadata, results, model cards, figures and the upload.

=====================  =====================================================================================
module                 concept
=====================  =====================================================================================
``loading``            :func:`load_toponet`: any causal LM or image classifier (Hub id or directory) with its
                       ``topography`` metadata, inferred sheets (``inferred: true``) attached to a model that has none
``results``            what is known about a model, read from ``metrics.json``, ``blimp.json``,
                       ``trainer_state.json`` and an analysis ``report.json`` (its typed summary)
``card``               :func:`toponet_card`: data in, ``ModelCard`` out (``templates/toponet_card.md``, Jinja)
``figures``            :func:`render_sheet_maps`: the weights' sheet maps shown on the card
``upload``             :func:`build_upload_folder` writes exactly what a Hub repo gets; :func:`push_folder` uploads it
``trainer_card``       :func:`write_training_card`: the card of a trained model from its arguments and log history;
                       :func:`write_trainer_card` is what ``TopoTrainer.create_model_card`` calls
=====================  =====================================================================================

Results come from the files hf_topo's commands leave next to a model: ``metrics.json`` and ``blimp.json``
(``hf-topo pretrain``), ``trainer_state.json`` (the log history) and, optionally, an analysis directory of
``hf-topo analyze`` (``report.json``, whose typed ``analysis_summary`` goes into the card, and PNG figures).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes

#: public name → the module that defines it, imported on first use (loading a model needs neither the card's
#: Jinja template nor the figures' matplotlib).
_LAZY_NAMES: dict[str, str] = {
    "CARD_TEMPLATE_NAME": "hf_topo.hub.card",
    "CITATION": "hf_topo.hub.card",
    "PAPER_URL": "hf_topo.hub.card",
    "TOPONET_TAGS": "hf_topo.hub.card",
    "card_template_path": "hf_topo.hub.card",
    "toponet_card": "hf_topo.hub.card",
    "render_sheet_maps": "hf_topo.hub.figures",
    "load_toponet": "hf_topo.hub.loading",
    "read_results": "hf_topo.hub.results",
    "recipe_from_trainer_state": "hf_topo.hub.results",
    "results_from_log_history": "hf_topo.hub.results",
    "write_trainer_card": "hf_topo.hub.trainer_card",
    "write_training_card": "hf_topo.hub.trainer_card",
    "build_upload_folder": "hf_topo.hub.upload",
    "check_hub_online": "hf_topo.hub.upload",
    "push_folder": "hf_topo.hub.upload",
}

__all__ = [
    "CARD_TEMPLATE_NAME",
    "CITATION",
    "PAPER_URL",
    "TOPONET_TAGS",
    "build_upload_folder",
    "card_template_path",
    "check_hub_online",
    "load_toponet",
    "push_folder",
    "read_results",
    "recipe_from_trainer_state",
    "render_sheet_maps",
    "results_from_log_history",
    "toponet_card",
    "write_trainer_card",
    "write_training_card",
]

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY_NAMES)

if TYPE_CHECKING:
    from .card import CARD_TEMPLATE_NAME, CITATION, PAPER_URL, TOPONET_TAGS, card_template_path, toponet_card
    from .figures import render_sheet_maps
    from .loading import load_toponet
    from .results import read_results, recipe_from_trainer_state, results_from_log_history
    from .trainer_card import write_trainer_card, write_training_card
    from .upload import build_upload_folder, check_hub_online, push_folder
