"""Guided-filter refiners that lift the low-resolution matte to full resolution."""
from typing import Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def with_luma(x: Tensor) -> Tensor:
    return torch.cat([x, x.mean(1, keepdim=True)], dim=1)


def with_luma_full_resolution(x: Tensor) -> Tensor:
    """`with_luma` as one matrix product over the channels: at 1080p ONNX Runtime runs it in a third of the time
    of a channel mean plus a concat. Not for the low-resolution statistics: its mean differs in the last bit,
    which the fast guided filter's division by the local variance would amplify."""
    luma = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1 / 3, 1 / 3, 1 / 3]],
                        dtype=x.dtype, device=x.device)
    return torch.matmul(luma, x.flatten(2)).reshape(x.size(0), 4, x.size(2), x.size(3))


def resize_to(x: Tensor, like: Tensor) -> Tensor:
    return F.interpolate(x, (like.size(2), like.size(3)), mode="bilinear", align_corners=False)


def apply_coefficients(a: Tensor, b: Tensor, fine_src: Tensor) -> Tuple[Tensor, Tensor]:
    """The guided filter's full-resolution step, to the final foreground and alpha.

    `a * [src, luma] + b` (coefficients upsampled) is the foreground residual and the alpha; the foreground is
    residual + src, so the identity is added to `a` at low resolution instead: one full-resolution pass less."""
    a = a + torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=a.dtype, device=a.device).view(1, 4, 1, 1)
    fine_x = with_luma_full_resolution(fine_src)
    out = (resize_to(a, fine_x) * fine_x + resize_to(b, fine_x)).clamp(0.0, 1.0)
    fgr, pha = out.split([3, 1], dim=1)
    return fgr, pha


def local_statistics(mean_x: Tensor, mean_y: Tensor, mean_xy: Tensor, mean_xx: Tensor) -> Tuple[Tensor, Tensor]:
    """Covariance of x and y and variance of x from box means, the guided filter's core."""
    return mean_xy - mean_x * mean_y, mean_xx - mean_x * mean_x


class DeepGuidedFilterRefiner(nn.Module):
    def __init__(self, hid_channels: int = 16):
        super().__init__()
        self.box_filter = nn.Conv2d(4, 4, kernel_size=3, padding=1, bias=False, groups=4)
        nn.init.constant_(self.box_filter.weight, 1 / 9)
        self.conv = nn.Sequential(
            nn.Conv2d(4 * 2 + hid_channels, hid_channels, 1, bias=False), nn.BatchNorm2d(hid_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(hid_channels, hid_channels, 1, bias=False), nn.BatchNorm2d(hid_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(hid_channels, 4, 1, bias=True))

    def forward(self, fine_src: Tensor, base_src: Tensor, base_fgr: Tensor, base_pha: Tensor,
                base_hid: Tensor) -> Tuple[Tensor, Tensor]:
        base_x = with_luma(base_src)
        base_y = torch.cat([base_fgr, base_pha], dim=1)
        mean_x, mean_y = self.box_filter(base_x), self.box_filter(base_y)
        cov_xy, var_x = local_statistics(mean_x, mean_y, self.box_filter(base_x * base_y),
                                         self.box_filter(base_x * base_x))
        a = self.conv(torch.cat([cov_xy, var_x, base_hid], dim=1))
        b = mean_y - a * mean_x
        return apply_coefficients(a, b, fine_src)


def box_filter_3tap(x: Tensor) -> Tensor:
    """Separable 3x3 mean with zero padding (radius 1), as the fast guided filter defines it."""
    channels = int(x.size(1))  # int(): a traced ONNX graph gets a constant kernel shape, as conv needs
    kernel = torch.full((channels, 1, 1, 3), 1 / 3, dtype=x.dtype, device=x.device)
    x = F.conv2d(x, kernel, padding=(0, 1), groups=channels)
    return F.conv2d(x, kernel.transpose(2, 3), padding=(1, 0), groups=channels)


class FastGuidedFilterRefiner(nn.Module):
    def __init__(self, eps: float = 1e-5):
        super().__init__()
        self.eps = eps

    def forward(self, fine_src: Tensor, base_src: Tensor, base_fgr: Tensor, base_pha: Tensor,
                base_hid: Tensor) -> Tuple[Tensor, Tensor]:
        dtype = fine_src.dtype
        # eps (1e-5) and the local variances vanish in half precision: the filter always runs in fp32
        base_x = with_luma(base_src.float())
        base_y = torch.cat([base_fgr, base_pha], dim=1).float()
        mean_x, mean_y = box_filter_3tap(base_x), box_filter_3tap(base_y)
        cov_xy, var_x = local_statistics(mean_x, mean_y, box_filter_3tap(base_x * base_y),
                                         box_filter_3tap(base_x * base_x))
        a = cov_xy / (var_x + self.eps)
        b = mean_y - a * mean_x
        fgr, pha = apply_coefficients(a, b, fine_src.float())
        return fgr.to(dtype), pha.to(dtype)
