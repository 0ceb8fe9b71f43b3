"""The config of Truong & Hasson's small CNN (:mod:`hf_topo.vision.truong_hasson_cnn`), registered with ``AutoConfig``.

Apart from the model class so that ``AutoConfig`` resolves ``hf_topo_truong_hasson_cnn`` as soon as transformers'
configuration Auto module loads, without the model code (:mod:`hf_topo._import_hooks`).
"""

from __future__ import annotations

from transformers import AutoConfig, PretrainedConfig

__all__ = ["TruongHassonCNNConfig"]


class TruongHassonCNNConfig(PretrainedConfig):
    """Config of :class:`~hf_topo.vision.truong_hasson_cnn.TruongHassonCNNForImageClassification` (model type
    ``hf_topo_truong_hasson_cnn``): convolutions, a fully connected layer ``fc1`` of ``sheet_height × sheet_width``
    units (Truong & Hasson's topographic 11 × 11 grid), a classifier.

    Args:
        num_channels (`int`, defaults to `1`): channels of the input images (1: grayscale).
        conv_channels (`list[int]`, defaults to `[16, 32]`): output channels of each 3 × 3 convolution (stride 1,
            padding 1, each followed by a ReLU).
        kernel_size (`int`, defaults to `3`): side of every convolution kernel (odd; padding keeps the image size).
        pooled_size (`int`, defaults to `4`): the last feature maps are average-pooled to `pooled_size × pooled_size`
            (adaptive, so any input size works) and flattened into `fc1`.
        sheet_height (`int`, defaults to `11`), sheet_width (`int`, defaults to `11`): `fc1` has
            `sheet_height · sheet_width` units, laid out row by row on that sheet.
        dropout (`float`, defaults to `0.0`): dropout after `fc1`'s ReLU.
        **kwargs: :class:`transformers.PretrainedConfig`'s arguments (`num_labels`, `id2label`, ...).
    """

    model_type = "hf_topo_truong_hasson_cnn"

    def __init__(
        self,
        num_channels: int = 1,
        conv_channels: list[int] | tuple[int, ...] = (16, 32),
        kernel_size: int = 3,
        pooled_size: int = 4,
        sheet_height: int = 11,
        sheet_width: int = 11,
        dropout: float = 0.0,
        **kwargs,
    ):
        conv_channels = [int(c) for c in conv_channels]
        for name, value in (
            ("num_channels", num_channels),
            ("kernel_size", kernel_size),
            ("pooled_size", pooled_size),
            ("sheet_height", sheet_height),
            ("sheet_width", sheet_width),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer.")
        if not conv_channels or min(conv_channels) < 1:
            raise ValueError(f"conv_channels={conv_channels!r} must list one positive channel count per convolution.")
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size={kernel_size} must be odd (its padding keeps the image size).")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout!r} must lie in [0, 1).")
        self.num_channels = num_channels
        self.conv_channels = conv_channels
        self.kernel_size = kernel_size
        self.pooled_size = pooled_size
        self.sheet_height = sheet_height
        self.sheet_width = sheet_width
        self.dropout = float(dropout)
        super().__init__(**kwargs)

    @property
    def fc1_units(self) -> int:
        """Units of ``fc1``: ``sheet_height · sheet_width``."""
        return self.sheet_height * self.sheet_width


AutoConfig.register(TruongHassonCNNConfig.model_type, TruongHassonCNNConfig, exist_ok=True)
