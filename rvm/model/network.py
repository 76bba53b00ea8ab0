"""MattingNetwork: encoder -> LR-ASPP -> recurrent decoder -> projection -> guided-filter refiner."""
from typing import List, Optional, Tuple

from torch import Tensor, nn
from torch.nn import functional as F

from rvm.model.decoder import RecurrentDecoder
from rvm.model.lraspp import LRASPP
from rvm.model.mobilenetv3 import MobileNetV3LargeEncoder
from rvm.model.refiners import DeepGuidedFilterRefiner, FastGuidedFilterRefiner
from rvm.model.resnet import ResNet50Encoder

VARIANTS = ("mobilenetv3", "resnet50")
REFINERS = ("deep_guided_filter", "fast_guided_filter")


class Projection(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


def downsample(src: Tensor, ratio: float) -> Tensor:
    # recompute_scale_factor=False: sampling uses the ratio itself, as the official model does
    return F.interpolate(src, scale_factor=ratio, mode="bilinear", align_corners=False,
                         recompute_scale_factor=False)


class MattingNetwork(nn.Module):
    def __init__(self, variant: str = "mobilenetv3", refiner: str = "deep_guided_filter"):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}: choose one of {', '.join(VARIANTS)}")
        if refiner not in REFINERS:
            raise ValueError(f"unknown refiner {refiner!r}: choose one of {', '.join(REFINERS)}")
        self.variant, self.refiner_name = variant, refiner
        if variant == "mobilenetv3":
            self.backbone = MobileNetV3LargeEncoder()
            self.aspp = LRASPP(960, 128)
            self.decoder = RecurrentDecoder([16, 24, 40, 128], [80, 40, 32, 16])
        else:
            self.backbone = ResNet50Encoder()
            self.aspp = LRASPP(2048, 256)
            self.decoder = RecurrentDecoder([64, 256, 512, 256], [128, 64, 32, 16])
        self.project_mat = Projection(16, 4)
        self.project_seg = Projection(16, 1)
        self.refiner = DeepGuidedFilterRefiner() if refiner == "deep_guided_filter" else FastGuidedFilterRefiner()

    def forward(self, src: Tensor, r1: Optional[Tensor] = None, r2: Optional[Tensor] = None,
                r3: Optional[Tensor] = None, r4: Optional[Tensor] = None,
                downsample_ratio: float = 1.0, segmentation_pass: bool = False) -> List[Tensor]:
        """`src` is `[B,3,H,W]` or `[B,T,3,H,W]` RGB in 0..1; returns `[fgr, pha, r1..r4]`
        (or `[seg, r1..r4]` on a segmentation pass). States are `[B,C,h,w]`; `None` means zeros."""
        time_series = src.dim() == 5
        frames = src.size(1) if time_series else 1
        flat = src.flatten(0, 1) if time_series else src
        refine = downsample_ratio != 1.0
        flat_sm = downsample(flat, downsample_ratio) if refine else flat
        hid, r1, r2, r3, r4 = self.decode(flat_sm, r1, r2, r3, r4, frames)
        if segmentation_pass:
            outputs = [self.project_seg(hid)]
        else:
            fgr, pha = self.matte(flat, flat_sm, hid, refine)
            outputs = [fgr, pha]
        if time_series:
            outputs = [x.unflatten(0, (src.size(0), frames)) for x in outputs]
        return outputs + [r1, r2, r3, r4]

    def decode(self, src_sm: Tensor, r1: Optional[Tensor], r2: Optional[Tensor], r3: Optional[Tensor],
               r4: Optional[Tensor], frames_per_batch: int = 1) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Encoder and recurrent decoder on the downsampled frames: the hidden features and new states."""
        f1, f2, f3, f4 = self.backbone(src_sm)
        return self.decoder(src_sm, f1, f2, f3, self.aspp(f4), r1, r2, r3, r4, frames_per_batch)

    def matte(self, src: Tensor, src_sm: Tensor, hid: Tensor, refine: bool) -> Tuple[Tensor, Tensor]:
        """Foreground and alpha at full resolution from the hidden features."""
        fgr_residual, pha = self.project_mat(hid).split([3, 1], dim=1)
        if refine:  # the refiner returns the final foreground and alpha, already clamped
            return self.refiner(src, src_sm, fgr_residual, pha, hid)
        return (fgr_residual + src).clamp(0.0, 1.0), pha.clamp(0.0, 1.0)
