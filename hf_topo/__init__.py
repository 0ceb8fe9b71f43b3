"""hf_topo: topographic vision and language models (TopoNets) in the Hugging Face stack.

TopoLoss (Deb, Deb & Murty, ICLR 2025) lays a layer's output units out on a 2D cortical sheet and rewards
the sheet for being similar to a blurred copy of itself; trained into the MLP expansion layers of a GPT,
it yields models with brain-like spatial organization.

Main entry points: :class:`TopoConfig`, :class:`TopoRegularizer`, :class:`TopoTrainer`,
:class:`TopoTrainingArguments`, :func:`resolve_checkpoint` (which checkpoint a run resumes from);
:func:`downsample_model` (smaller models through the sheet, A.5); :func:`arrange_units` (a post-hoc
arrangement of any model's units on the sheet, the same function); the analyses in :mod:`hf_topo.analysis`.

Importing hf_topo registers its model classes with the Auto classes (the downsampled models of
:mod:`hf_topo.downsampling`, the blur-pool ResNet of :mod:`hf_topo.vision`), so a saved downsampled or converted model
loads with ``AutoModelForCausalLM`` / ``AutoModelForImageClassification.from_pretrained`` and no
``trust_remote_code``; the registration happens when transformers' Auto classes load (:mod:`hf_topo._import_hooks`),
so ``import hf_topo`` itself imports neither torch nor transformers. Nothing else is imported up front: every public name below is loaded from its module
the first time it is used (PEP 562 ``__getattr__``, as TRL's ``_LazyModule`` does), so ``import hf_topo`` loads
neither peft, datasets nor the analysis, arrangement, app, BLiMP or Hub code until a name that needs them is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._import_hooks import register_with_auto_classes
from ._lazy import lazy_attributes
from ._version import __version__

# hf_topo's model classes (downsampled models, the blur-pool ResNet) join transformers' Auto classes as soon as those
# load (at once if they already have), and a broken torchvision is hidden before transformers looks for it; nothing
# else is imported up front (hf_topo._import_hooks).
register_with_auto_classes()

#: public name → the module that defines it (the only place each name is imported from).
_LAZY_NAMES: dict[str, str] = {
    "TOPOGRAPHY_KEY": "hf_topo.metadata",
    "TopoConfig": "hf_topo.config",
    "TopoRegularizer": "hf_topo.topo_regularizer",
    "attach_inferred_topography": "hf_topo.topo_regularizer",
    "TopoLayer": "hf_topo.targets",
    "find_target_modules": "hf_topo.targets",
    "TopoDownsampledLinear": "hf_topo.downsampling.layer",
    "downsample_model": "hf_topo.downsampling.api",
    "parameter_count": "hf_topo.downsampling.api",
    "TopoTrainer": "hf_topo.trainer",
    "TopoTrainingArguments": "hf_topo.trainer",
    "TauPhase": "hf_topo.schedule",
    "TauSchedule": "hf_topo.schedule",
    "CorticalSheet": "hf_topo.sheet",
    "as_cortical_sheet": "hf_topo.sheet",
    "most_square_shape": "hf_topo.sheet",
    "TARGET_PRESETS": "hf_topo.presets",
    "topolm_targets": "hf_topo.presets",
    "arrange_units": "hf_topo.arrangement.arrange",
    "bias_map_loss": "hf_topo.regularizers.bias_map",
    "blur_sheet": "hf_topo.regularizers.laplacian_pyramid",
    "laplacian_pyramid_loss": "hf_topo.regularizers.laplacian_pyramid",
    "neighbour_distance_loss": "hf_topo.regularizers.similarity",
    "sheet_cosine_loss": "hf_topo.regularizers.laplacian_pyramid",
    "spatial_correlation_loss": "hf_topo.regularizers.spatial_correlation",
    "load_toponet": "hf_topo.hub.loading",
    "resolve_checkpoint": "hf_topo.checkpoints",
}

__all__ = [
    "__version__",
    "CorticalSheet",
    "TARGET_PRESETS",
    "TOPOGRAPHY_KEY",
    "TauPhase",
    "TauSchedule",
    "TopoConfig",
    "TopoDownsampledLinear",
    "TopoLayer",
    "TopoRegularizer",
    "TopoTrainer",
    "TopoTrainingArguments",
    "arrange_units",
    "as_cortical_sheet",
    "attach_inferred_topography",
    "bias_map_loss",
    "blur_sheet",
    "downsample_model",
    "find_target_modules",
    "laplacian_pyramid_loss",
    "load_toponet",
    "most_square_shape",
    "neighbour_distance_loss",
    "parameter_count",
    "resolve_checkpoint",
    "sheet_cosine_loss",
    "spatial_correlation_loss",
    "topolm_targets",
]

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY_NAMES)


if TYPE_CHECKING:  # what IDEs and type checkers see; never run
    from .arrangement.arrange import arrange_units
    from .checkpoints import resolve_checkpoint
    from .config import TopoConfig
    from .downsampling.api import downsample_model, parameter_count
    from .downsampling.layer import TopoDownsampledLinear
    from .hub.loading import load_toponet
    from .metadata import TOPOGRAPHY_KEY
    from .presets import TARGET_PRESETS, topolm_targets
    from .regularizers.bias_map import bias_map_loss
    from .regularizers.laplacian_pyramid import blur_sheet, laplacian_pyramid_loss, sheet_cosine_loss
    from .regularizers.similarity import neighbour_distance_loss
    from .regularizers.spatial_correlation import spatial_correlation_loss
    from .schedule import TauPhase, TauSchedule
    from .sheet import CorticalSheet, as_cortical_sheet, most_square_shape
    from .targets import TopoLayer, find_target_modules
    from .topo_regularizer import TopoRegularizer, attach_inferred_topography
    from .trainer import TopoTrainer, TopoTrainingArguments
