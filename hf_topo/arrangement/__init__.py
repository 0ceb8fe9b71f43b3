"""Post-hoc topography: arrange the MLP units of any model on its cortical sheets without changing what it computes.

==============  ===================================================================================================
module          what it holds
==============  ===================================================================================================
``mlp``         an MLP's hidden units across its layers; permuting them exactly; what cannot be permuted safely
``search``      the search for the arrangement: MDS initial layout, vectorized pairwise-swap refinement
``arrange``     :func:`arrange_units` on a model, and the record it leaves in the model's topography
``run``         ``hf-topo arrange`` on a saved model
==============  ===================================================================================================
"""

from .arrange import ARRANGE_METHOD, ArrangementReport, LayerArrangement, arrange_units
from .mlp import MLP_EXPANSIONS, MlpUnits, mlp_units, permute_units_
from .search import ARRANGE_INITS, ARRANGE_OBJECTIVES, SearchResult, find_arrangement, mds_layout, sheet_objective

__all__ = [
    "ARRANGE_INITS",
    "ARRANGE_METHOD",
    "ARRANGE_OBJECTIVES",
    "ArrangementReport",
    "LayerArrangement",
    "MLP_EXPANSIONS",
    "MlpUnits",
    "SearchResult",
    "arrange_units",
    "find_arrangement",
    "mds_layout",
    "mlp_units",
    "permute_units_",
    "sheet_objective",
]
