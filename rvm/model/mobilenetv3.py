"""MobileNetV3-Large encoder with torchvision parameter names (dilated last stage, as RVM uses it)."""
from typing import List, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

# in, kernel, expanded, out, squeeze-excitation, activation ('RE' ReLU / 'HS' hardswish), stride, dilation
BLOCKS = [
    (16, 3, 16, 16, False, "RE", 1, 1),
    (16, 3, 64, 24, False, "RE", 2, 1),
    (24, 3, 72, 24, False, "RE", 1, 1),
    (24, 5, 72, 40, True, "RE", 2, 1),
    (40, 5, 120, 40, True, "RE", 1, 1),
    (40, 5, 120, 40, True, "RE", 1, 1),
    (40, 3, 240, 80, False, "HS", 2, 1),
    (80, 3, 200, 80, False, "HS", 1, 1),
    (80, 3, 184, 80, False, "HS", 1, 1),
    (80, 3, 184, 80, False, "HS", 1, 1),
    (80, 3, 480, 112, True, "HS", 1, 1),
    (112, 3, 672, 112, True, "HS", 1, 1),
    (112, 5, 672, 160, True, "HS", 1, 2),  # stride 2 replaced by dilation 2
    (160, 5, 960, 160, True, "HS", 1, 2),
    (160, 5, 960, 160, True, "HS", 1, 2),
]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def make_divisible(value: float, divisor: int = 8) -> int:
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class ConvBNActivation(nn.Sequential):
    """Keys `0` (conv), `1` (BatchNorm eps 1e-3); activation unnamed-parameterless at `2`."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
                 dilation: int = 1, activation: str = ""):
        layers: List[nn.Module] = [
            nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2 * dilation, dilation=dilation,
                      groups=groups, bias=False),
            nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01),
        ]
        if activation == "RE":
            layers.append(nn.ReLU(inplace=True))
        elif activation == "HS":
            layers.append(nn.Hardswish(inplace=True))
        super().__init__(*layers)


class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        scale = F.adaptive_avg_pool2d(x, 1)
        scale = F.hardsigmoid(self.fc2(F.relu(self.fc1(scale))))
        return x * scale


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, kernel: int, expanded: int, cout: int, se: bool, activation: str,
                 stride: int, dilation: int):
        super().__init__()
        self.use_residual = stride == 1 and cin == cout
        layers: List[nn.Module] = []
        if expanded != cin:
            layers.append(ConvBNActivation(cin, expanded, 1, activation=activation))
        layers.append(ConvBNActivation(expanded, expanded, kernel, stride, groups=expanded,
                                       dilation=dilation, activation=activation))
        if se:
            layers.append(SqueezeExcitation(expanded, make_divisible(expanded // 4, 8)))
        layers.append(ConvBNActivation(expanded, cout, 1))
        self.block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        y = self.block(x)
        return x + y if self.use_residual else y


class MobileNetV3LargeEncoder(nn.Module):
    """Returns features at 1/2 (16 ch), 1/4 (24), 1/8 (40) and 1/16 (960) of the input."""

    feature_channels = (16, 24, 40, 960)

    def __init__(self):
        super().__init__()
        layers: List[nn.Module] = [ConvBNActivation(3, 16, 3, stride=2, activation="HS")]
        layers += [InvertedResidual(*cfg) for cfg in BLOCKS]
        layers.append(ConvBNActivation(160, 960, 1, activation="HS"))
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        x = (x - self.mean) / self.std
        features: List[Tensor] = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index == 1 or index == 3 or index == 6:
                features.append(x)
        return features[0], features[1], features[2], x
