"""Recurrent decoder: ConvGRU blocks that carry the temporal state r1..r4.

Every module here works on frames flattened to `[B*T, C, H, W]`; only the ConvGRU needs the
time axis, so it receives `frames_per_batch` (T) and walks over it.
"""
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def avg_pool_half(x: Tensor) -> Tensor:
    return F.avg_pool2d(x, 2, 2, count_include_pad=False, ceil_mode=True)


def upsample_double(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


class ConvGRU(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        self.ih = nn.Sequential(nn.Conv2d(channels * 2, channels * 2, 3, padding=1), nn.Sigmoid())
        self.hh = nn.Sequential(nn.Conv2d(channels * 2, channels, 3, padding=1), nn.Tanh())

    def step(self, x: Tensor, h: Tensor) -> Tensor:
        r, z = self.ih(torch.cat([x, h], dim=1)).split(self.channels, dim=1)
        c = self.hh(torch.cat([x, r * h], dim=1))
        return (1 - z) * h + z * c

    def forward(self, x: Tensor, h: Optional[Tensor], frames_per_batch: int) -> Tuple[Tensor, Tensor]:
        if frames_per_batch == 1:
            # a [1,1,1,1] zero state (the ONNX / TF contract) broadcasts to the full size; expand_as keeps
            # the exported graph to one Shape + Expand
            h = torch.zeros_like(x) if h is None else h.expand_as(x)
            h = self.step(x, h)
            return h, h
        batch = x.size(0) // frames_per_batch
        if h is None:
            h = torch.zeros((batch, x.size(1), x.size(2), x.size(3)), dtype=x.dtype, device=x.device)
        else:
            h = h.expand(batch, x.size(1), x.size(2), x.size(3))
        outputs: List[Tensor] = []
        for xt in x.unflatten(0, (batch, frames_per_batch)).unbind(1):
            h = self.step(xt, h)
            outputs.append(h)
        return torch.stack(outputs, 1).flatten(0, 1), h


class BottleneckBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        self.gru = ConvGRU(channels // 2)

    def forward(self, x: Tensor, r: Optional[Tensor], frames_per_batch: int) -> Tuple[Tensor, Tensor]:
        a, b = x.split(self.channels // 2, dim=1)
        b, r = self.gru(b, r, frames_per_batch)
        return torch.cat([a, b], dim=1), r


class UpsamplingBlock(nn.Module):
    def __init__(self, cin: int, skip: int, src: int, cout: int):
        super().__init__()
        self.out_channels = cout
        self.conv = nn.Sequential(nn.Conv2d(cin + skip + src, cout, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(cout), nn.ReLU(inplace=True))
        self.gru = ConvGRU(cout // 2)

    def forward(self, x: Tensor, f: Tensor, s: Tensor, r: Optional[Tensor],
                frames_per_batch: int) -> Tuple[Tensor, Tensor]:
        x = upsample_double(x)[:, :, : s.size(2), : s.size(3)]
        x = self.conv(torch.cat([x, f, s], dim=1))
        a, b = x.split(self.out_channels // 2, dim=1)
        b, r = self.gru(b, r, frames_per_batch)
        return torch.cat([a, b], dim=1), r


class OutputBlock(nn.Module):
    def __init__(self, cin: int, src: int, cout: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(cin + src, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    def forward(self, x: Tensor, s: Tensor) -> Tensor:
        x = upsample_double(x)[:, :, : s.size(2), : s.size(3)]
        return self.conv(torch.cat([x, s], dim=1))


class RecurrentDecoder(nn.Module):
    def __init__(self, feature_channels: List[int], decoder_channels: List[int]):
        super().__init__()
        self.decode4 = BottleneckBlock(feature_channels[3])
        self.decode3 = UpsamplingBlock(feature_channels[3], feature_channels[2], 3, decoder_channels[0])
        self.decode2 = UpsamplingBlock(decoder_channels[0], feature_channels[1], 3, decoder_channels[1])
        self.decode1 = UpsamplingBlock(decoder_channels[1], feature_channels[0], 3, decoder_channels[2])
        self.decode0 = OutputBlock(decoder_channels[2], 3, decoder_channels[3])

    def forward(self, s0: Tensor, f1: Tensor, f2: Tensor, f3: Tensor, f4: Tensor,
                r1: Optional[Tensor], r2: Optional[Tensor], r3: Optional[Tensor], r4: Optional[Tensor],
                frames_per_batch: int) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        s1 = avg_pool_half(s0)
        s2 = avg_pool_half(s1)
        s3 = avg_pool_half(s2)
        x4, r4 = self.decode4(f4, r4, frames_per_batch)
        x3, r3 = self.decode3(x4, f3, s3, r3, frames_per_batch)
        x2, r2 = self.decode2(x3, f2, s2, r2, frames_per_batch)
        x1, r1 = self.decode1(x2, f1, s1, r1, frames_per_batch)
        return self.decode0(x1, s0), r1, r2, r3, r4
