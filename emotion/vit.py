"""The bundled model's architecture: a hybrid ViT (the original ViT paper's convolutional patch
embedding in front of a standard transformer encoder), registered with the transformers Auto classes.

Everything but the patch embedding is transformers' own ViT: attention, MLPs, [CLS] pooling
and the classifier head. Importing this module registers the classes, so
``AutoModelForImageClassification.from_pretrained`` loads the bundled folder with no remote code.
"""

from __future__ import annotations

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import AutoConfig, AutoModelForImageClassification, ViTConfig, ViTForImageClassification


@strict
class HybridViTConfig(ViTConfig):
    model_type = "emotion-hybrid-vit"
    # Channels of the convolutional stages; each stage halves the side, so the
    # token grid is image_size / 2**len(stem_channels) on a side (48 -> 6x6).
    stem_channels: list[int] | tuple[int, ...] = (32, 64, 128)

    def __post_init__(self, **kwargs):
        self.patch_size = 2 ** len(self.stem_channels)
        super().__post_init__(**kwargs)


class ConvPatchEmbeddings(nn.Module):
    """Replaces ViT's single strided convolution: small faces need local features before attention."""

    def __init__(self, config: HybridViTConfig):
        super().__init__()
        side = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
        self.num_patches = (side // config.patch_size) ** 2
        self.num_channels = config.num_channels
        layers, channels = [], config.num_channels
        for out in config.stem_channels:
            layers += [
                nn.Conv2d(channels, out, 3, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            channels = out
        self.stem = nn.Sequential(*layers)
        self.projection = nn.Conv2d(channels, config.hidden_size, kernel_size=1)

    def forward(self, pixel_values: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return self.projection(self.stem(pixel_values)).flatten(2).transpose(1, 2)


class HybridViTForImageClassification(ViTForImageClassification):
    config_class = HybridViTConfig

    def __init__(self, config: HybridViTConfig):
        super().__init__(config)
        self.vit.embeddings.patch_embeddings = ConvPatchEmbeddings(config)
        self.post_init()


AutoConfig.register(HybridViTConfig.model_type, HybridViTConfig, exist_ok=True)
AutoModelForImageClassification.register(HybridViTConfig, HybridViTForImageClassification, exist_ok=True)
