"""The bundled model's architecture: a hybrid ViT (the ViT paper's hybrid: patch tokens cut from a
CNN feature map, then a standard transformer encoder), registered with the transformers Auto classes.

The CNN is a small ResNet (a 3x3 stride-1 stem and residual stages, no max-pool), because on 48x48
faces the accuracy lives in the convolutional stages; its last feature map, one token per cell,
feeds transformers' own ViT: [CLS], position embeddings, attention, MLPs and the classifier head.
Importing this module registers the classes, so ``AutoModelForImageClassification.from_pretrained``
loads the bundled folder with no remote code.
"""

from __future__ import annotations

import math

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import AutoConfig, AutoModelForImageClassification, ViTConfig, ViTForImageClassification


@strict
class HybridViTConfig(ViTConfig):
    model_type = "emotion-hybrid-vit"
    stem_width: int = 32  # channels of the 3x3 stride-1 stem convolution
    # One entry per residual stage: output channels, basic blocks, stride of its first block.
    # The token grid is image_size / prod(stage_strides) on a side (48 -> 6x6).
    stage_channels: list[int] | tuple[int, ...] = (32, 64, 128, 256)
    stage_blocks: list[int] | tuple[int, ...] = (1, 2, 2, 2)
    stage_strides: list[int] | tuple[int, ...] = (1, 2, 2, 2)
    # The first bundled model's CNN (conv, batch norm, ReLU, 2x2 max-pool per entry); when set, it
    # replaces the residual stages above, so folders trained with it keep loading.
    stem_channels: list[int] | tuple[int, ...] | None = None

    def __post_init__(self, **kwargs):
        strides = [2] * len(self.stem_channels) if self.stem_channels else self.stage_strides
        self.patch_size = math.prod(strides)
        super().__post_init__(**kwargs)


class BasicBlock(nn.Module):
    """ResNet's two 3x3 convolutions with a shortcut (1x1 projection where the shape changes)."""

    def __init__(self, channels_in: int, channels_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels_out)
        self.shortcut = nn.Identity()
        if stride != 1 or channels_in != channels_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(channels_in, channels_out, 1, stride, bias=False), nn.BatchNorm2d(channels_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class ConvPatchEmbeddings(nn.Module):
    """Replaces ViT's single strided convolution: one token per cell of the CNN's last feature map."""

    def __init__(self, config: HybridViTConfig):
        super().__init__()
        side = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
        self.num_patches = (side // config.patch_size) ** 2
        self.num_channels = config.num_channels
        layers, channels = [], config.num_channels
        if config.stem_channels:
            for out in config.stem_channels:
                layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out)]
                layers += [nn.ReLU(), nn.MaxPool2d(2)]
                channels = out
        else:
            layers += [nn.Conv2d(channels, config.stem_width, 3, padding=1, bias=False)]
            layers += [nn.BatchNorm2d(config.stem_width), nn.ReLU()]
            channels = config.stem_width
            for out, blocks, stride in zip(config.stage_channels, config.stage_blocks, config.stage_strides):
                for i in range(blocks):
                    layers.append(BasicBlock(channels, out, stride if i == 0 else 1))
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
