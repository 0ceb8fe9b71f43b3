"""Truong & Hasson's small CNN: convolutions, a 121-unit fully connected layer ``fc1`` laid out 11 × 11, a classifier.

"Beyond topography" (Truong & Hasson) regularizes the penultimate layer of a convolutional network, a fully connected
layer of 121 units on an 11 × 11 grid, with Weight or Activation Similarity. This is that network as a registered
``transformers`` model, sized for CPU and small grayscale images (scikit-learn's 8 × 8 digits):

===========================  ==============================================================================
module                       what it computes (shapes for the defaults on 8 × 8 digits)
===========================  ==============================================================================
``features``                 ``[Conv2d(k × k, padding k // 2), ReLU]`` per entry of ``config.conv_channels``
                             ``(B, 1, 8, 8) → (B, 32, 8, 8)``
``pool``                     ``AdaptiveAvgPool2d(pooled_size)`` then flatten: ``(B, 32 · 4 · 4) = (B, 512)``
``fc1``                      ``Linear(512, 121)``: the topographic layer (unit ``u`` at row ``u // 11``,
                             column ``u % 11``), then ReLU (and dropout)
``classifier``               ``Linear(121, num_labels)``
===========================  ==============================================================================

``fc1``'s output before the ReLU is what Activation Similarity reads (a unit's *pre-activation* responses over the
batch) and what the analyses of :mod:`hf_topo.experiments.truong_hasson` measure; its weight ``(121, 512)`` is what
Weight Similarity reads. Train it with ``TopoTrainer`` and ``topo_target_modules=["fc1"]`` (the sheet is the most
square factorization of 121, i.e. 11 × 11). Importing this module registers ``model_type =
"hf_topo_truong_hasson_cnn"`` with ``AutoModelForImageClassification``, so a saved model loads with
``AutoModelForImageClassification.from_pretrained`` after ``import hf_topo`` (no ``trust_remote_code``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForImageClassification, PreTrainedModel
from transformers import initialization as hf_init
from transformers.modeling_outputs import ImageClassifierOutputWithNoAttention

from .truong_hasson_cnn_config import TruongHassonCNNConfig

__all__ = ["TruongHassonCNNForImageClassification"]


class TruongHassonCNNForImageClassification(PreTrainedModel):
    """Truong & Hasson's CNN with its topographic ``fc1`` (see the module docstring for the layers and shapes).

    ``forward(pixel_values, labels=None)``: ``pixel_values`` ``(batch, num_channels, height, width)``; with
    ``labels`` ``(batch,)`` the loss is the mean cross-entropy. Returns an ``ImageClassifierOutputWithNoAttention``.
    """

    config_class = TruongHassonCNNConfig
    config: TruongHassonCNNConfig
    main_input_name = "pixel_values"
    input_modalities = ("image",)

    def __init__(self, config: TruongHassonCNNConfig):
        super().__init__(config)
        layers: list[nn.Module] = []
        channels = config.num_channels
        for out_channels in config.conv_channels:
            layers += [
                nn.Conv2d(channels, out_channels, config.kernel_size, padding=config.kernel_size // 2),
                nn.ReLU(),
            ]
            channels = out_channels
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(config.pooled_size)
        self.fc1 = nn.Linear(channels * config.pooled_size**2, config.fc1_units)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.fc1_units, config.num_labels)
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # PyTorch's own defaults for Conv2d and Linear (what the paper's plain PyTorch network starts from), not
        # transformers' N(0, 0.02), which starves a ReLU network without normalization of signal.
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            hf_init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            fan_in = module.weight[0].numel()
            bound = 1 / math.sqrt(fan_in)
            hf_init.uniform_(module.bias, -bound, bound)

    def forward(
        self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None, return_dict: bool | None = None
    ) -> ImageClassifierOutputWithNoAttention | tuple:
        if pixel_values.ndim != 4 or pixel_values.shape[1] != self.config.num_channels:
            raise ValueError(
                f"pixel_values must be (batch, {self.config.num_channels}, height, width), got "
                f"{tuple(pixel_values.shape)}."
            )
        features = self.pool(self.features(pixel_values)).flatten(1)  # (B, C · p · p)
        hidden = self.dropout(F.relu(self.fc1(features)))  # (B, 121)
        logits = self.classifier(hidden)  # (B, num_labels)
        loss = None if labels is None else F.cross_entropy(logits, labels.to(logits.device).long())
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if not return_dict:
            return (logits,) if loss is None else (loss, logits)
        return ImageClassifierOutputWithNoAttention(loss=loss, logits=logits)


# AutoModelForImageClassification resolves "hf_topo_truong_hasson_cnn" once this module is imported (exist_ok: a
# re-import must not fail).
AutoModelForImageClassification.register(TruongHassonCNNConfig, TruongHassonCNNForImageClassification, exist_ok=True)
