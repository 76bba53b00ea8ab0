"""ResNet50 encoder with torchvision parameter names; layer4 dilated instead of strided (as RVM uses it)."""
from typing import Optional, Tuple

from torch import Tensor, nn


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: Optional[nn.Module] = None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def make_layer(cin: int, planes: int, blocks: int, stride: int, dilate: bool) -> nn.Sequential:
    # torchvision's rule: a dilated layer keeps stride 1, its first block keeps the previous dilation
    first_dilation, dilation = 1, (stride if dilate else 1)
    if dilate:
        stride = 1
    downsample = None
    if stride != 1 or cin != planes * 4:
        downsample = nn.Sequential(nn.Conv2d(cin, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4))
    layers = [Bottleneck(cin, planes, stride, first_dilation, downsample)]
    layers += [Bottleneck(planes * 4, planes, dilation=dilation) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


class ResNet50Encoder(nn.Module):
    """Returns features at 1/2 (64 ch), 1/4 (256), 1/8 (512) and 1/16 (2048). No input normalisation."""

    feature_channels = (64, 256, 512, 2048)

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = make_layer(64, 64, 3, 1, False)
        self.layer2 = make_layer(256, 128, 4, 2, False)
        self.layer3 = make_layer(512, 256, 6, 2, False)
        self.layer4 = make_layer(1024, 512, 3, 2, True)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        f1 = self.relu(self.bn1(self.conv1(x)))
        f2 = self.layer1(self.maxpool(f1))
        f3 = self.layer2(f2)
        f4 = self.layer4(self.layer3(f3))
        return f1, f2, f3, f4
