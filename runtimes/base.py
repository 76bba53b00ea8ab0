"""The one interface over every artifact: frames in, foreground and alpha out, recurrent state kept inside.

A backend implements `_run` on NCHW float32 numpy frames with its own native state objects
(torch tensors, ORT values, TF tensors...), plus the two state conversions. Everything else —
input layouts, dtypes, the downsample ratio, resolution changes, conversion — is written here once.
"""
import importlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from rvm import formats, tuning
from rvm.contracts import auto_downsample_ratio
from rvm.errors import ArtifactError, ResolutionChangedError, UsageError
from rvm.metadata import METADATA_FILE, PRODUCER, ArtifactMetadata
from rvm.targets import REFERENCE

log = logging.getLogger(__name__)
Ratio = Union[float, str, None]


@dataclass
class RuntimeInfo:
    backend: str
    device: str
    precision: str
    path: Optional[str] = None
    fixed_resolution: Optional[Tuple[int, int]] = None  # (width, height) when the artifact is fixed-size
    baked_downsample_ratio: Optional[float] = None
    metadata: Optional[ArtifactMetadata] = None  # None for artifacts that carry none (the official downloads)

    def __post_init__(self):
        static = self.metadata is not None and self.metadata.static
        if static and self.fixed_resolution is None:
            self.fixed_resolution = self.metadata.resolution
        if static and self.baked_downsample_ratio is None:
            self.baked_downsample_ratio = self.metadata.downsample_ratio


@dataclass(frozen=True)
class SettingsSweep:
    """Load options of a runtime that `rvm bench` measures side by side on one artifact (CPU, repeats taken in
    turns): the numbers behind the runtime's defaults. Declared by the runtime (`Runtime.settings_sweeps`), so
    bench runs every declared sweep without knowing any format."""
    key: str  # the list's key in bench's JSON result
    title: str  # the heading of its markdown table
    columns: Tuple[Tuple[str, str], ...]  # (option, column heading) of the table, in order
    settings: Tuple[Dict[str, Any], ...]  # `from_path` options, one row each
    precision: str = "fp32"  # measured on our export (not a peer download) in this precision...
    static: bool = False  # ...with a static or a dynamic profile


class Runtime:
    """Subclasses set `backend` and implement `_run`, `_state_to_numpy`, `_state_from_numpy`.

    Every `from_path` takes `threads: Optional[int]` (None: the backend's default), mapped to the backend's own
    CPU thread setting; backends without one accept and ignore it."""

    backend = "base"

    def __init__(self, info: RuntimeInfo, downsample_ratio: Ratio = "auto", on_resolution_change: str = "reset"):
        if on_resolution_change not in ("reset", "raise"):
            raise UsageError("on_resolution_change must be 'reset' or 'raise'")
        self.info = info
        self.downsample_ratio = downsample_ratio
        self.on_resolution_change = on_resolution_change
        self._state: Any = None
        # what the state belongs to: (batch, height, width, ratio), or ("restored", r1 shape)
        self._state_shape: Optional[tuple] = None

    # ---- loading -------------------------------------------------------------------------------
    @staticmethod
    def load(path, device: str = "auto", **options) -> "Runtime":
        """Pick the backend from the artifact (suffix, folder layout, metadata) and load it."""
        return load(path, device=device, **options)

    @classmethod
    def from_path(cls, path, device: str = "auto", **options) -> "Runtime":
        """Load an artifact of this backend; `threads` (see the class) and the backend's own options are read
        here, the rest go to the constructor (downsample_ratio...)."""
        raise NotImplementedError

    @classmethod
    def settings_sweeps(cls) -> List[SettingsSweep]:
        """The load options `rvm bench` compares for this runtime (none unless a backend declares some)."""
        return []

    # ---- backend hooks -------------------------------------------------------------------------
    def _run(self, src: np.ndarray, state: Any, downsample_ratio: float) -> Tuple[np.ndarray, np.ndarray, Any]:
        """`src` float32 `[B,3,H,W]` in 0..1; `state` native or None (zeros). Returns fgr, pha (float32
        NCHW numpy) and the new native state."""
        raise NotImplementedError

    def _state_to_numpy(self, state: Any) -> List[np.ndarray]:
        raise NotImplementedError

    def _state_from_numpy(self, arrays: Sequence[np.ndarray]) -> Any:
        raise NotImplementedError

    def close(self) -> None:
        """Release backend resources (processes, sessions)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- state ---------------------------------------------------------------------------------
    def reset(self) -> None:
        """Start a new shot: the next frame begins from zero state."""
        self._state, self._state_shape = None, None

    @property
    def state(self) -> Optional[List[np.ndarray]]:
        """The recurrent state r1..r4 as float32 NCHW arrays (None before the first frame)."""
        return None if self._state is None else [np.asarray(a, np.float32) for a in self._state_to_numpy(self._state)]

    @state.setter
    def state(self, arrays: Optional[Sequence[np.ndarray]]) -> None:
        if arrays is None:
            self.reset()
            return
        if len(arrays) != 4:
            raise UsageError(f"a recurrent state is 4 arrays r1..r4, got {len(arrays)}")
        arrays = [np.asarray(a, np.float32) for a in arrays]
        self._state = self._state_from_numpy(arrays)
        self._state_shape = ("restored", arrays[0].shape)

    # ---- frames --------------------------------------------------------------------------------
    def resolve_ratio(self, height: int, width: int, downsample_ratio: Ratio = None) -> float:
        if self.info.baked_downsample_ratio is not None:
            return self.info.baked_downsample_ratio
        ratio = self.downsample_ratio if downsample_ratio is None else downsample_ratio
        if ratio is None or ratio == "auto":
            return auto_downsample_ratio(height, width)
        ratio = float(ratio)
        if not 0 < ratio <= 1:
            raise UsageError(f"downsample_ratio must be in (0, 1], got {ratio}")
        return ratio

    def step(self, frame: np.ndarray, downsample_ratio: Ratio = None) -> Dict[str, np.ndarray]:
        """Matte one frame (or a batch), carrying the state to the next call.

        `frame` is float NCHW `[3,H,W]`/`[B,3,H,W]` in 0..1, or uint8 HWC `[H,W,3]`/`[B,H,W,3]`.
        Returns `{'fgr', 'pha'}` in the caller's layout and kind: float NCHW for float input,
        uint8 HWC for uint8 input.
        """
        src, as_image, batched = to_nchw_float(frame)
        fgr, pha = self.run_nchw(src, downsample_ratio)
        return from_nchw_float(fgr, pha, as_image, batched)

    def run_nchw(self, src: np.ndarray, downsample_ratio: Ratio = None) -> Tuple[np.ndarray, np.ndarray]:
        """`step` without layout conversion: float32 `[B,3,H,W]` in, float32 NCHW fgr and pha out."""
        batch, _, height, width = src.shape
        ratio = self.resolve_ratio(height, width, downsample_ratio)
        self._check_frame(src.shape, ratio)
        fgr, pha, self._state = self._run(src, self._state, ratio)
        self._state_shape = (batch, height, width, ratio)
        return fgr, pha

    def _check_frame(self, shape: Tuple[int, ...], ratio: float) -> None:
        batch, _, height, width = shape
        fixed = self.info.fixed_resolution
        if fixed is not None and (width, height) != tuple(fixed):
            raise UsageError(f"this {self.backend} artifact takes {fixed[0]}x{fixed[1]} frames only, got "
                             f"{width}x{height}: resize the input or export for that resolution")
        if self._state is None:
            return
        if self._state_shape[0] == "restored":
            # r1 lives at half the downsampled size: ceil(floor(H * ratio) / 2)
            expected = (batch, -(-int(height * ratio) // 2), -(-int(width * ratio) // 2))
            restored = self._state_shape[1]
            if (restored[0], restored[2], restored[3]) != expected:
                raise ResolutionChangedError(
                    f"the restored state (r1 {list(restored)}) belongs to another resolution, batch or ratio than "
                    f"this {width}x{height} frame at ratio {ratio:g} (expects r1 [{batch}, 16, {expected[1]}, "
                    f"{expected[2]}]): restore a state from the same stream, or reset()")
            return
        if self._state_shape != (batch, height, width, ratio):
            old_b, old_h, old_w, old_r = self._state_shape
            message = (f"frames changed from {old_w}x{old_h} (batch {old_b}, ratio {old_r:g}) to "
                       f"{width}x{height} (batch {batch}, ratio {ratio:g})")
            if self.on_resolution_change == "raise":
                raise ResolutionChangedError(message + ": call reset() before starting a new stream")
            log.info("%s: recurrent state reset", message)
            self.reset()

    def convert(self, request):
        """Run the whole conversion job, a `rvm.media.request.ConvertRequest`, on this runtime (see
        `rvm.media.pipeline.convert`)."""
        from rvm.media.pipeline import convert
        return convert(self, request)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.info.precision} on {self.info.device}: {self.info.path}>"


CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")


def runtime_class(path) -> type:
    """The Runtime subclass that runs the artifact at `path`: a registered format's runtime, or PyTorch eager
    for a checkpoint file or a checkpoint name (resolved by rvm.checkpoints)."""
    p = Path(path)
    entry = formats.detect(p)
    if entry is not None:
        entry.require(runtime=True)
        return entry.entry_point("runtime")
    if p.suffix.lower() in CHECKPOINT_SUFFIXES or not p.exists():
        module, name = REFERENCE.runtime.split(":")
        return getattr(importlib.import_module(module), name)
    titles = ", ".join(f.title for f in formats.FORMATS.values())
    if p.is_dir():
        entry = _format_of_metadata(p)
        if entry is not None:  # our export, with its model file missing
            raise entry.invalid(p, f"it holds {METADATA_FILE} but not the model")
        raise ArtifactError(f"{p} is a folder but no artifact of a known format ({titles}): pass the "
                            f"artifact itself")
    raise ArtifactError(f"cannot tell which backend runs {p}: expected a checkpoint (.pth/.pt) or an artifact of "
                        f"{titles}")


def _format_of_metadata(folder: Path) -> Optional[formats.Format]:
    """The registered format named by a folder's metadata file (METADATA_FILE), or None."""
    try:
        fields = json.loads((folder / METADATA_FILE).read_text())
        name = fields.get("format") if fields.get("producer") == PRODUCER else None
    except (OSError, ValueError, AttributeError):  # absent or unreadable: it says nothing about the format
        return None
    return formats.FORMATS.get(name) if isinstance(name, str) else None


def load(path, device: str = "auto", resolution: Optional[Tuple[int, int]] = None, **options) -> Runtime:
    """The runtime for `path`: a registered format's (an artifact it cannot load raises ArtifactError, see
    `Format.load`), or PyTorch eager for a checkpoint (CheckpointError).

    `path` may also be `auto`, `auto:fast` or `auto:exact` with `resolution=(width, height)`: the artifact this
    machine's tuning record chose for that size and quality class (`rvm.tuning`; `downsample_ratio` in `options`
    picks the record, auto by default). Records are only read here: where there is none, a UsageError names the
    `rvm tune` to run (the CLI's `--model auto` tunes first: `rvm.measure.tune.tuned_model`)."""
    if tuning.parse_auto(path) is not None:
        path = tuning.resolve(path, resolution, options.get("downsample_ratio", "auto"), device)
    entry = formats.detect(Path(path))
    if entry is not None:
        return entry.load(path, device=device, **options)
    return runtime_class(path).from_path(path, device=device, **options)


def to_nchw_float(frame: np.ndarray) -> Tuple[np.ndarray, bool, bool]:
    """Returns (float32 [B,3,H,W], input was a uint8 HWC image, input had a batch axis)."""
    frame = np.asarray(frame)
    if frame.dtype == np.uint8:
        if frame.ndim not in (3, 4) or frame.shape[-1] != 3:
            raise UsageError(f"a uint8 frame must be HWC [H,W,3] or [B,H,W,3] RGB, got shape {frame.shape}")
        batched = frame.ndim == 4
        images = frame if batched else frame[None]
        return np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0, True, batched
    if frame.ndim not in (3, 4) or frame.shape[-3] != 3:
        raise UsageError(f"a float frame must be NCHW [3,H,W] or [B,3,H,W] RGB in 0..1, got shape {frame.shape}")
    batched = frame.ndim == 4
    src = frame if batched else frame[None]
    return np.ascontiguousarray(src, dtype=np.float32), False, batched


def from_nchw_float(fgr: np.ndarray, pha: np.ndarray, as_image: bool, batched: bool) -> Dict[str, np.ndarray]:
    fgr, pha = np.asarray(fgr, np.float32), np.asarray(pha, np.float32)
    if as_image:
        fgr = (fgr.transpose(0, 2, 3, 1) * 255 + 0.5).clip(0, 255).astype(np.uint8)
        pha = (pha.transpose(0, 2, 3, 1) * 255 + 0.5).clip(0, 255).astype(np.uint8)
    if not batched:
        fgr, pha = fgr[0], pha[0]
    return {"fgr": fgr, "pha": pha}

