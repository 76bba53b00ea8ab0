"""MattingNetwork re-implemented in TensorFlow (NHWC), built from a torch MattingNetwork's weights.

No ONNX-to-TF conversion: each torch module is mirrored by a `tf.Module` that computes the same thing,
with BatchNorm folded into the preceding convolution at build time. Only ops that TF.js and every TF CPU
kernel path (oneDNN on and off) run are used (Conv2D, DepthwiseConv2dNative without dilations, SpaceToBatchND
and BatchToSpaceND around the dilated ones, ResizeBilinear, GatherV2, AvgPool, MaxPool, Mean, Relu/Relu6, Sigmoid,
Tanh, arithmetic, ConcatV2, Split, StridedSlice, Pad, BroadcastTo), and every size is read from tensors at
run time, so batch, height, width and the downsample ratio stay dynamic.

Torch matching details:
- torch pads symmetrically; TF 'SAME' pads asymmetrically at stride 2, so strided convs pad explicitly,
  and so do dilated ones (ONNX Runtime refuses SAME with dilation in a tf2onnx conversion).
- `avg_pool2d(2, 2, ceil_mode=True, count_include_pad=False)` is 'SAME' AvgPool: the odd edge is padded
  after, and TF leaves padding out of the average.
- The downsample samples with the ratio itself (`recompute_scale_factor=False`) onto floor(H * ratio) rows,
  which ResizeBilinear (scale from sizes) does not: `resize_by_ratio` gathers the torch sample points.
"""
from typing import List, Optional, Tuple

import numpy as np
import tensorflow as tf
from torch import nn

from rvm.errors import ExportError
from rvm.model import MattingNetwork
from rvm.model.decoder import BottleneckBlock, ConvGRU, OutputBlock, RecurrentDecoder, UpsamplingBlock
from rvm.model.lraspp import LRASPP
from rvm.model.mobilenetv3 import InvertedResidual, MobileNetV3LargeEncoder, SqueezeExcitation
from rvm.model.refiners import DeepGuidedFilterRefiner, FastGuidedFilterRefiner
from rvm.model.resnet import Bottleneck, ResNet50Encoder


# ---- elementwise and resampling ops ------------------------------------------------------------
def hardswish(x: tf.Tensor) -> tf.Tensor:
    return x * tf.nn.relu6(x + 3.0) / 6.0


def hardsigmoid(x: tf.Tensor) -> tf.Tensor:
    return tf.nn.relu6(x + 3.0) / 6.0


ACTIVATIONS = {"": tf.identity, "relu": tf.nn.relu, "hardswish": hardswish, "sigmoid": tf.sigmoid, "tanh": tf.tanh}


def torch_sample_points(in_size: tf.Tensor, out_size: tf.Tensor, inverse_ratio: tf.Tensor):
    """Indices and weights of torch's half-pixel bilinear sampling along one axis with a given scale."""
    source = (tf.range(out_size, dtype=tf.float32) + 0.5) * inverse_ratio - 0.5
    source = tf.maximum(source, 0.0)
    low = tf.floor(source)
    last = in_size - 1
    low_index = tf.minimum(tf.cast(low, tf.int32), last)
    high_index = tf.minimum(low_index + 1, last)
    return low_index, high_index, source - low


def resize_by_ratio(x: tf.Tensor, ratio: tf.Tensor) -> tf.Tensor:
    """torch `interpolate(x, scale_factor=ratio, mode='bilinear', align_corners=False,
    recompute_scale_factor=False)` on NHWC: floor(size * ratio) samples spaced 1 / ratio apart."""
    shape = tf.shape(x)
    height, width = shape[1], shape[2]
    out_height = tf.cast(tf.floor(tf.cast(height, tf.float32) * ratio), tf.int32)
    out_width = tf.cast(tf.floor(tf.cast(width, tf.float32) * ratio), tf.int32)
    inverse = 1.0 / ratio
    top, bottom, dy = torch_sample_points(height, out_height, inverse)
    left, right, dx = torch_sample_points(width, out_width, inverse)
    dy = tf.reshape(dy, [1, -1, 1, 1])
    dx = tf.reshape(dx, [1, 1, -1, 1])
    rows = tf.gather(x, top, axis=1) * (1.0 - dy) + tf.gather(x, bottom, axis=1) * dy
    return tf.gather(rows, left, axis=2) * (1.0 - dx) + tf.gather(rows, right, axis=2) * dx


def resize_to(x: tf.Tensor, height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
    """torch `interpolate(size=...)` bilinear, align_corners=False: scale from sizes, as ResizeBilinear."""
    return tf.raw_ops.ResizeBilinear(images=x, size=tf.stack([height, width]), align_corners=False,
                                     half_pixel_centers=True)


def upsample_double_like(x: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    """Upsample x2 then crop to `like`'s height and width (odd sizes), as the decoder does."""
    shape, target = tf.shape(x), tf.shape(like)
    x = resize_to(x, shape[1] * 2, shape[2] * 2)
    return x[:, :target[1], :target[2], :]


def avg_pool_half(x: tf.Tensor) -> tf.Tensor:
    return tf.nn.avg_pool2d(x, 2, 2, "SAME")


def with_luma(x: tf.Tensor) -> tf.Tensor:
    return tf.concat([x, tf.reduce_mean(x, axis=-1, keepdims=True)], axis=-1)


def global_mean(x: tf.Tensor) -> tf.Tensor:
    return tf.reduce_mean(x, axis=[1, 2], keepdims=True)


def constant(array: np.ndarray) -> tf.Variable:
    return tf.Variable(np.asarray(array, np.float32), trainable=False)


# ---- layers built from torch modules -----------------------------------------------------------
class Conv(tf.Module):
    """A torch Conv2d (dense or depthwise), with an optional BatchNorm folded in, then an activation."""

    def __init__(self, conv: nn.Conv2d, bn: Optional[nn.BatchNorm2d] = None, activation: str = ""):
        super().__init__()
        weight = conv.weight.detach().double().cpu().numpy()
        bias = (conv.bias.detach().double().cpu().numpy() if conv.bias is not None
                else np.zeros(weight.shape[0]))
        if bn is not None:
            scale = bn.weight.detach().double().numpy() / np.sqrt(bn.running_var.double().numpy() + bn.eps)
            weight = weight * scale[:, None, None, None]
            bias = (bias - bn.running_mean.double().numpy()) * scale + bn.bias.detach().double().numpy()
        self.depthwise = conv.groups > 1
        if self.depthwise and not conv.groups == conv.in_channels == conv.out_channels:
            raise ExportError(f"grouped convolution {conv} is neither dense nor depthwise: not supported in TF")
        # torch OIHW -> TF HWIO (dense) or HW,C,multiplier (depthwise)
        self.kernel = constant(weight.transpose(2, 3, 0, 1) if self.depthwise else weight.transpose(2, 3, 1, 0))
        self.bias = constant(bias)
        self.stride, self.dilation, pad = conv.stride[0], conv.dilation[0], conv.padding[0]
        kernel_size = conv.kernel_size[0]
        if pad == 0:
            self.explicit_pad, self.padding = 0, "VALID"
        elif self.stride == 1 and self.dilation == 1 and 2 * pad == kernel_size - 1:
            self.explicit_pad, self.padding = 0, "SAME"  # symmetric at stride 1, as torch
        else:
            self.explicit_pad, self.padding = pad, "VALID"
        self.activation = ACTIVATIONS[activation]
        self.scope = "conv"  # set by TFMattingNetwork to the module path, see there

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        with tf.name_scope(self.scope):
            return self.convolve(x)

    def convolve(self, x: tf.Tensor) -> tf.Tensor:
        if self.explicit_pad:
            p = self.explicit_pad
            x = tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]])
        strides = [1, self.stride, self.stride, 1]
        if self.depthwise:
            # not the raw DepthwiseConv2dNative with dilations: only oneDNN has a kernel for that (AVX-512
            # CPUs), the default CPU kernels refuse it; tf.nn wraps a dilated one in SpaceToBatchND /
            # BatchToSpaceND, which every TF CPU path, TF.js and tf2onnx run
            x = tf.nn.depthwise_conv2d(x, self.kernel, strides, self.padding, dilations=[self.dilation] * 2)
        else:
            x = tf.nn.conv2d(x, self.kernel, strides, self.padding, dilations=[1, self.dilation, self.dilation, 1])
        return self.activation(tf.nn.bias_add(x, self.bias))


def activation_of(sequence: nn.Sequential) -> str:
    for module in sequence:
        if isinstance(module, nn.ReLU):
            return "relu"
        if isinstance(module, nn.Hardswish):
            return "hardswish"
        if isinstance(module, nn.Sigmoid):
            return "sigmoid"
        if isinstance(module, nn.Tanh):
            return "tanh"
    return ""


def conv_bn_act(sequence: nn.Sequential) -> Conv:
    """`Sequential(conv, [bn], [activation])` as one folded Conv."""
    bn = next((m for m in sequence if isinstance(m, nn.BatchNorm2d)), None)
    return Conv(sequence[0], bn, activation_of(sequence))


def conv_chain(sequence: nn.Sequential) -> List[Conv]:
    """A run of conv [bn] [activation] groups as folded Convs."""
    convs, current = [], []
    for module in sequence:
        if isinstance(module, nn.Conv2d) and current:
            convs.append(conv_bn_act(nn.Sequential(*current)))
            current = []
        current.append(module)
    convs.append(conv_bn_act(nn.Sequential(*current)))
    return convs


class SqueezeExcite(tf.Module):
    def __init__(self, se: SqueezeExcitation):
        super().__init__()
        self.fc1, self.fc2 = Conv(se.fc1, activation="relu"), Conv(se.fc2)

    def __call__(self, x):
        return x * hardsigmoid(self.fc2(self.fc1(global_mean(x))))


class InvertedResidualBlock(tf.Module):
    def __init__(self, block: InvertedResidual):
        super().__init__()
        self.use_residual = block.use_residual
        self.layers = [SqueezeExcite(m) if isinstance(m, SqueezeExcitation) else conv_bn_act(m) for m in block.block]

    def __call__(self, x):
        y = x
        for layer in self.layers:
            y = layer(y)
        return x + y if self.use_residual else y


class MobileNetV3(tf.Module):
    def __init__(self, encoder: MobileNetV3LargeEncoder):
        super().__init__()
        self.mean = constant(encoder.mean.numpy().reshape(3))
        self.std = constant(encoder.std.numpy().reshape(3))
        self.layers = [InvertedResidualBlock(m) if isinstance(m, InvertedResidual) else conv_bn_act(m)
                       for m in encoder.features]

    def __call__(self, x):
        x = (x - self.mean) / self.std
        features = []
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index in (1, 3, 6):
                features.append(x)
        return features[0], features[1], features[2], x


class ResNetBottleneck(tf.Module):
    def __init__(self, block: Bottleneck):
        super().__init__()
        self.conv1 = Conv(block.conv1, block.bn1, "relu")
        self.conv2 = Conv(block.conv2, block.bn2, "relu")
        self.conv3 = Conv(block.conv3, block.bn3)
        self.downsample = None if block.downsample is None else conv_bn_act(block.downsample)

    def __call__(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        return tf.nn.relu(self.conv3(self.conv2(self.conv1(x))) + identity)


class ResNet50(tf.Module):
    def __init__(self, encoder: ResNet50Encoder):
        super().__init__()
        self.stem = Conv(encoder.conv1, encoder.bn1, "relu")
        self.stages = [[ResNetBottleneck(b) for b in layer]
                       for layer in (encoder.layer1, encoder.layer2, encoder.layer3, encoder.layer4)]

    def __call__(self, x):
        f1 = self.stem(x)
        # torch pads max-pool with -inf; zero padding is the same here because f1 >= 0 after ReLU
        x = tf.nn.max_pool2d(tf.pad(f1, [[0, 0], [1, 1], [1, 1], [0, 0]]), 3, 2, "VALID")
        features = []
        for stage in self.stages:
            for block in stage:
                x = block(x)
            features.append(x)
        return f1, features[0], features[1], features[3]


class LiteRASPP(tf.Module):
    def __init__(self, aspp: LRASPP):
        super().__init__()
        self.branch = conv_bn_act(aspp.aspp1)
        self.gate = Conv(aspp.aspp2[1], activation="sigmoid")

    def __call__(self, x):
        return self.branch(x) * self.gate(global_mean(x))


# ---- recurrent decoder -------------------------------------------------------------------------
class GRU(tf.Module):
    def __init__(self, gru: ConvGRU):
        super().__init__()
        self.channels = gru.channels
        self.ih, self.hh = conv_bn_act(gru.ih), conv_bn_act(gru.hh)

    def __call__(self, x, h):
        # a scalar zero state (the TF contract) broadcasts to the full size
        h = tf.broadcast_to(h, tf.shape(x))
        r, z = tf.split(self.ih(tf.concat([x, h], axis=-1)), 2, axis=-1)
        c = self.hh(tf.concat([x, r * h], axis=-1))
        h = (1.0 - z) * h + z * c
        return h, h


def split_gru(x, h, gru: GRU, half: int):
    a, b = x[..., :half], x[..., half:]
    b, h = gru(b, h)
    return tf.concat([a, b], axis=-1), h


class Bottleneck4(tf.Module):
    def __init__(self, block: BottleneckBlock):
        super().__init__()
        self.half, self.gru = block.channels // 2, GRU(block.gru)

    def __call__(self, x, r):
        return split_gru(x, r, self.gru, self.half)


class Upsampling(tf.Module):
    def __init__(self, block: UpsamplingBlock):
        super().__init__()
        self.half, self.conv, self.gru = block.out_channels // 2, conv_bn_act(block.conv), GRU(block.gru)

    def __call__(self, x, f, s, r):
        x = self.conv(tf.concat([upsample_double_like(x, s), f, s], axis=-1))
        return split_gru(x, r, self.gru, self.half)


class Output(tf.Module):
    def __init__(self, block: OutputBlock):
        super().__init__()
        self.convs = conv_chain(block.conv)

    def __call__(self, x, s):
        x = tf.concat([upsample_double_like(x, s), s], axis=-1)
        for conv in self.convs:
            x = conv(x)
        return x


class Decoder(tf.Module):
    def __init__(self, decoder: RecurrentDecoder):
        super().__init__()
        self.decode4 = Bottleneck4(decoder.decode4)
        self.decode3 = Upsampling(decoder.decode3)
        self.decode2 = Upsampling(decoder.decode2)
        self.decode1 = Upsampling(decoder.decode1)
        self.decode0 = Output(decoder.decode0)

    def __call__(self, s0, f1, f2, f3, f4, r1, r2, r3, r4):
        s1 = avg_pool_half(s0)
        s2 = avg_pool_half(s1)
        s3 = avg_pool_half(s2)
        x4, r4 = self.decode4(f4, r4)
        x3, r3 = self.decode3(x4, f3, s3, r3)
        x2, r2 = self.decode2(x3, f2, s2, r2)
        x1, r1 = self.decode1(x2, f1, s1, r1)
        return self.decode0(x1, s0), r1, r2, r3, r4


# ---- guided-filter refiners --------------------------------------------------------------------
def guided_output(a, b, fine_x):
    shape = tf.shape(fine_x)
    out = resize_to(a, shape[1], shape[2]) * fine_x + resize_to(b, shape[1], shape[2])
    return out[..., :3], out[..., 3:]


class DeepGuidedFilter(tf.Module):
    def __init__(self, refiner: DeepGuidedFilterRefiner):
        super().__init__()
        self.box = Conv(refiner.box_filter)
        self.convs = conv_chain(refiner.conv)

    def __call__(self, fine_src, base_src, base_fgr, base_pha, base_hid):
        fine_x, mean_x, mean_y, cov_xy, var_x = guided_statistics(self.box, fine_src, base_src,
                                                                  base_fgr, base_pha)
        a = tf.concat([cov_xy, var_x, base_hid], axis=-1)
        for conv in self.convs:
            a = conv(a)
        return guided_output(a, mean_y - a * mean_x, fine_x)


def guided_statistics(box, fine_src, base_src, base_fgr, base_pha):
    """What both guided filters compute from their box filter: the guides with luma, box means of x and y,
    covariance of x and y and variance of x."""
    fine_x, base_x = with_luma(fine_src), with_luma(base_src)
    base_y = tf.concat([base_fgr, base_pha], axis=-1)
    mean_x, mean_y = box(base_x), box(base_y)
    cov_xy = box(base_x * base_y) - mean_x * mean_y
    var_x = box(base_x * base_x) - mean_x * mean_x
    return fine_x, mean_x, mean_y, cov_xy, var_x


class FastGuidedFilter(tf.Module):
    def __init__(self, refiner: FastGuidedFilterRefiner):
        super().__init__()
        self.eps = refiner.eps
        # separable 3-tap mean with zero padding, on the 4 channels of x (RGB + luma) and y (fgr + pha)
        self.row_kernel = constant(np.full((1, 3, 4, 1), 1 / 3))
        self.column_kernel = constant(np.full((3, 1, 4, 1), 1 / 3))

    def box(self, x):
        for kernel in (self.row_kernel, self.column_kernel):
            x = tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], "SAME")
        return x

    def __call__(self, fine_src, base_src, base_fgr, base_pha, base_hid):
        fine_x, mean_x, mean_y, cov_xy, var_x = guided_statistics(self.box, fine_src, base_src,
                                                                  base_fgr, base_pha)
        a = cov_xy / (var_x + self.eps)
        return guided_output(a, mean_y - a * mean_x, fine_x)


# ---- the network -------------------------------------------------------------------------------
class TFMattingNetwork(tf.Module):
    """`(src NHWC, r1..r4 NHWC or scalar zeros, ratio scalar) -> fgr, pha, r1..r4`. As the official
    SavedModel and ONNX graphs, the refiner always runs: the ratio is a tensor, not a Python float."""

    def __init__(self, model: MattingNetwork):
        super().__init__()
        self.variant, self.refiner_name = model.variant, model.refiner_name
        self.backbone = MobileNetV3(model.backbone) if model.variant == "mobilenetv3" else ResNet50(model.backbone)
        self.aspp = LiteRASPP(model.aspp)
        self.decoder = Decoder(model.decoder)
        self.project_mat = Conv(model.project_mat.conv)
        self.refiner = (DeepGuidedFilter(model.refiner) if model.refiner_name == "deep_guided_filter"
                        else FastGuidedFilter(model.refiner))
        # each convolution's ops, and so its weights in a frozen graph, are named after its module path
        # ("backbone/layers/13/layers/1/..."): TF.js quantization picks weights by name pattern
        for path, conv in self._flatten(with_path=True, predicate=lambda module: isinstance(module, Conv)):
            conv.scope = "/".join(map(str, path))

    def __call__(self, src, r1, r2, r3, r4, ratio) -> Tuple[tf.Tensor, ...]:
        src_sm = resize_by_ratio(src, ratio)
        f1, f2, f3, f4 = self.backbone(src_sm)
        hid, r1, r2, r3, r4 = self.decoder(src_sm, f1, f2, f3, self.aspp(f4), r1, r2, r3, r4)
        projected = self.project_mat(hid)
        fgr_residual, pha = self.refiner(src, src_sm, projected[..., :3], projected[..., 3:], hid)
        fgr = tf.clip_by_value(fgr_residual + src, 0.0, 1.0)
        return fgr, tf.clip_by_value(pha, 0.0, 1.0), r1, r2, r3, r4
