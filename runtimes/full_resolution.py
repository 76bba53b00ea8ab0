"""The guided filter's full-resolution step as one pass over the frame, compiled with Numba.

Every RVM refiner ends in the same step (`rvm.model.refiners.apply_coefficients`): the low-resolution
coefficients `a` and `b` (4 channels each) are upsampled bilinearly to the frame, and
`clamp(a * [src, luma] + b, 0, 1)` split into the foreground (3 channels) and alpha (1). Graph runtimes run it
as separate full-resolution operators (two Resize, a MatMul for the luma, Mul, Add, Clip, Split), each
writing the whole frame: at 1080p about 500 MB a frame, and ONNX Runtime's CPU Resize runs at a fraction of the
memory bandwidth. Fused, the step reads the frame once and writes the outputs once: `a` and `b` are first
interpolated along the width at their own height (8 x h x W, a quarter of the frame at ratio 0.25), then each
output row blends two of those rows and applies the filter.

The arithmetic is the graph's in ONNX Runtime: its `half_pixel` linear sampling, luma as the sum of the
channels each times float32(1/3), the clamp after the multiply-add; outputs differ from the graph's by float
rounding (~1e-6). PyTorch computes its sampling positions another way (in/out instead of out/in, float32), which
moves outputs by up to ~1e-5 where the upsampling factor is not a whole number, as the graph does.

Needs Numba (in `pip install 'rvm-toolkit[onnx]'`): runtimes import this module only where it is installed.
"""
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Tuple

import numpy as np
from numba import njit

# Compiled on first use and cached by Numba beside this file (or in the user's cache folder where that is
# read-only). `nogil`: rows are split across a thread pool of our own, so no Numba threading layer (whose default
# one aborts when two threads launch kernels at once) is involved.


@njit(cache=True, nogil=True)
def sample_taps(size_out, size_in):
    """Per output index: the two input indices and the second one's weight, sampled as ONNX Runtime's Resize
    does (`half_pixel`, float32 arithmetic, edges clamped), so that the fused step matches the graph's."""
    first, second = np.empty(size_out, np.int64), np.empty(size_out, np.int64)
    weight = np.empty(size_out, np.float32)
    scale, half = np.float32(size_out) / np.float32(size_in), np.float32(0.5)
    for o in range(size_out):
        position = (np.float32(o) + half) / scale - half
        position = min(max(position, np.float32(0)), np.float32(size_in - 1))
        index = int(position)
        first[o], second[o], weight[o] = index, min(index + 1, size_in - 1), position - np.float32(index)
    return first, second, weight


@njit(cache=True, nogil=True)
def widen(a, b, out, row_from, row_to):
    """a and b ([N,4,h,w]) interpolated along the width into out [N,8,h,W] (a's channels, then b's), for
    the rows (image, y) numbered row_from..row_to-1."""
    height, width, out_width = a.shape[2], a.shape[3], out.shape[3]
    x0, x1, wx = sample_taps(out_width, width)
    one = np.float32(1)
    for row in range(row_from, row_to):
        image, y = row // height, row % height
        for channel in range(4):
            for x in range(out_width):
                left, right, weight = x0[x], x1[x], wx[x]
                out[image, channel, y, x] = ((one - weight) * a[image, channel, y, left]
                                             + weight * a[image, channel, y, right])
                out[image, 4 + channel, y, x] = ((one - weight) * b[image, channel, y, left]
                                                 + weight * b[image, channel, y, right])


# no NaN/inf in the coefficients or the frame (asserted by the contract's 0..1 input): lets min/max vectorise
@njit(cache=True, nogil=True, fastmath={"nnan", "ninf", "nsz"})
def apply(wide, src, fgr, pha, row_from, row_to):
    """fgr, pha rows (image, Y) row_from..row_to-1: wide's rows blended along the height, then the filter."""
    height, out_height, out_width = wide.shape[2], src.shape[2], src.shape[3]
    y0, y1, wy = sample_taps(out_height, height)
    third, zero, one = np.float32(1.0 / 3.0), np.float32(0), np.float32(1)
    for row in range(row_from, row_to):
        image, y = row // out_height, row % out_height
        t = wy[y]
        s, top, bottom = one - t, y0[y], y1[y]
        for channel in range(3):
            for x in range(out_width):
                value = ((s * wide[image, channel, top, x] + t * wide[image, channel, bottom, x])
                         * src[image, channel, y, x]
                         + (s * wide[image, 4 + channel, top, x] + t * wide[image, 4 + channel, bottom, x]))
                fgr[image, channel, y, x] = min(max(value, zero), one)
        for x in range(out_width):
            luma = src[image, 0, y, x] * third + src[image, 1, y, x] * third + src[image, 2, y, x] * third
            value = ((s * wide[image, 3, top, x] + t * wide[image, 3, bottom, x]) * luma
                     + (s * wide[image, 7, top, x] + t * wide[image, 7, bottom, x]))
            pha[image, 0, y, x] = min(max(value, zero), one)


class RecycledArrays:
    """New float32 arrays that reuse the memory of arrays handed out before once nothing else refers to them.

    A 1080p frame's outputs are 33 MB; freshly allocated each frame, the allocator maps new pages and the kernel
    faults and zeroes every one of them as the step writes them (measured: 9.4 ms a step instead of 4.5). Callers
    may keep outputs (a pipeline composites frame t while frame t+1 runs), so an array is reused only when this
    pool holds its only reference: any view, tensor (`torch.from_numpy`) or buffer made from it refers to it."""

    def __init__(self, kept: int = 4):
        self.kept = kept  # per shape: what a caller may hold at once, beyond which arrays are simply new
        self._arrays: Dict[Tuple[int, ...], List[np.ndarray]] = {}

    def get(self, shape: Tuple[int, ...]) -> np.ndarray:
        if shape not in self._arrays and len(self._arrays) >= 4:  # a new resolution: forget the oldest's
            self._arrays.pop(next(iter(self._arrays)))
        arrays = self._arrays.setdefault(shape, [])
        for array in arrays:
            if sys.getrefcount(array) == 3:  # the list's reference, this loop's, getrefcount's argument
                return array
        array = np.empty(shape, np.float32)
        arrays.append(array)
        del arrays[:-self.kept]
        return array


class FusedFullResolutionStep:
    """`step(a, b, src) -> (fgr, pha)`, all float32 NCHW, rows split over `threads` threads. `seconds`: the
    wall time spent in it so far (what `rvm profile` adds to the refiner's time)."""

    def __init__(self, threads: int = 1):
        self.threads = max(1, int(threads))
        self.seconds = 0.0
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="rvm-full-resolution")
        self._wide = RecycledArrays(kept=1)  # ours alone: the same one every frame
        self._outputs = RecycledArrays()

    def _rows(self, kernel, rows: int, *arrays) -> None:
        chunk = -(-rows // self.threads)
        for future in [self._pool.submit(kernel, *arrays, start, min(start + chunk, rows))
                       for start in range(0, rows, chunk)]:
            future.result()

    def __call__(self, a: np.ndarray, b: np.ndarray, src: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        started = time.perf_counter()
        a, b, src = (np.ascontiguousarray(x, np.float32) for x in (a, b, src))
        batch, _, height, width = src.shape
        wide = self._wide.get((batch, 8, a.shape[2], width))
        self._rows(widen, batch * a.shape[2], a, b, wide)
        fgr, pha = self._outputs.get((batch, 3, height, width)), self._outputs.get((batch, 1, height, width))
        self._rows(apply, batch * height, wide, src, fgr, pha)
        self.seconds += time.perf_counter() - started
        return fgr, pha

    def close(self) -> None:
        self._pool.shutdown(wait=False)
