"""hf_topo: topographic language models (TopoNets) in the Hugging Face stack.

TopoLoss (Deb, Deb & Murty, ICLR 2025) lays a layer's output units out on a 2D cortical sheet and rewards
the sheet for being similar to a blurred copy of itself; trained into the MLP expansion layers of a GPT,
it yields models with brain-like spatial organization.

Main entry points: :class:`TopoConfig`, :class:`TopoLoss`, :class:`TopoTrainer`,
:class:`TopoTrainingArguments`, :func:`resolve_checkpoint` (which checkpoint a run resumes from);
:func:`downsample_model` (smaller models through the sheet, A.5); :func:`arrange_units` (a post-hoc
arrangement of any model's units on the sheet, the same function); the analyses in :mod:`hf_topo.analysis`.
Importing hf_topo registers the downsampled model classes with the Auto classes, so a saved downsampled model loads
with ``AutoModelForCausalLM.from_pretrained`` and no ``trust_remote_code``.
"""

from . import _torchvision_guard  # noqa: F401  first: a torchvision that fails to import must not break transformers
from ._version import __version__
from .arrangement import arrange_units
from .checkpoints import resolve_checkpoint
from .config import TopoConfig
from .downsampling import TopoDownsampledLinear, downsample_model, parameter_count
from .hub import load_toponet
from .metadata import TOPOGRAPHY_KEY
from .presets import TARGET_PRESETS, topolm_targets
from .regularizers import (
    bias_map_loss,
    blur_sheet,
    laplacian_pyramid_loss,
    neighbour_distance_loss,
    sheet_cosine_loss,
    spatial_correlation_loss,
)
from .regularizers.model import TopoLoss, TopoRegularizer, attach_inferred_topography
from .schedule import TauPhase, TauSchedule
from .sheet import CorticalSheet, as_cortical_sheet, most_square_shape
from .targets import TopoLayer, find_target_modules
from .trainer import TopoTrainer, TopoTrainingArguments
from .vision import blurpool_resnet as _blurpool_resnet  # noqa: F401  registers the blur-pool ResNet (Auto classes)

__all__ = [
    "__version__",
    "TOPOGRAPHY_KEY",
    "TopoConfig",
    "TopoLoss",
    "TopoRegularizer",
    "TopoLayer",
    "TopoDownsampledLinear",
    "TopoTrainer",
    "TopoTrainingArguments",
    "TauPhase",
    "TauSchedule",
    "CorticalSheet",
    "TARGET_PRESETS",
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
