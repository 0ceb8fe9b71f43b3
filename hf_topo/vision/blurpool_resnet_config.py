"""The config of the blur-pool ResNet (:mod:`hf_topo.vision.blurpool_resnet`), registered with ``AutoConfig`` on import.

Apart from the model class so that ``AutoConfig`` resolves ``hf_topo_blurpool_resnet`` as soon as transformers'
configuration Auto module loads, without the model code (:mod:`hf_topo._import_hooks`).
"""

from __future__ import annotations

from transformers import AutoConfig, ResNetConfig

__all__ = ["BlurPoolResNetConfig"]


class BlurPoolResNetConfig(ResNetConfig):
    """``ResNetConfig`` of a ResNet with blur-pool convolutions (model type ``hf_topo_blurpool_resnet``).

    Args:
        blurpool_min_channels (`int`, defaults to 16): a strided convolution with at least this many input channels
            blurs its input first (FFCV's and the authors' rule).
        **kwargs: :class:`transformers.ResNetConfig`'s arguments.
    """

    model_type = "hf_topo_blurpool_resnet"
    blurpool_min_channels: int = 16


AutoConfig.register(BlurPoolResNetConfig.model_type, BlurPoolResNetConfig, exist_ok=True)
