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

from .card import CARD_TEMPLATE_NAME, CITATION, PAPER_URL, TOPONET_TAGS, card_template_path, toponet_card
from .figures import render_sheet_maps
from .loading import load_toponet
from .results import read_results, recipe_from_trainer_state, results_from_log_history
from .trainer_card import write_trainer_card, write_training_card
from .upload import build_upload_folder, check_hub_online, push_folder

__all__ = [
    "CARD_TEMPLATE_NAME",
    "TOPONET_TAGS",
    "PAPER_URL",
    "CITATION",
    "card_template_path",
    "load_toponet",
    "read_results",
    "results_from_log_history",
    "recipe_from_trainer_state",
    "toponet_card",
    "render_sheet_maps",
    "build_upload_folder",
    "push_folder",
    "check_hub_online",
    "write_trainer_card",
    "write_training_card",
]
