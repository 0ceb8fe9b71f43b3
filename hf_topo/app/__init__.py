"""The TopoNet explorer: a web app (Gradio) to look at a model's cortical sheets, and a Hub Space for a TopoNet.

=============  ===================================================================================================
module         concept
=============  ===================================================================================================
``explorer``   :class:`TopoNetExplorer`: a model (and its baseline, its analysis report) → sheet maps and PNGs,
               computed with :mod:`hf_topo.analysis` (no gradio needed)
``ui``         :func:`build_explorer` / :func:`launch_explorer`: the ``gradio.Blocks`` page and its API
``space``      :func:`write_space_folder` (``app.py``, ``requirements.txt``, ``README.md`` of a Space that loads a
               TopoNet from the Hub) and :func:`push_space`
=============  ===================================================================================================

The page needs the optional extra: ``pip install "hf_topo[app]"``; ``hf-topo app --model PATH_OR_HUB_ID`` serves it.
"""

from .explorer import TokenResponses, TopoNetExplorer, parse_stimuli, read_report
from .space import SPACE_MODEL_ENV, push_space, write_space_folder
from .ui import build_explorer, launch_explorer

__all__ = [
    "SPACE_MODEL_ENV",
    "TokenResponses",
    "TopoNetExplorer",
    "build_explorer",
    "launch_explorer",
    "parse_stimuli",
    "push_space",
    "read_report",
    "write_space_folder",
]
