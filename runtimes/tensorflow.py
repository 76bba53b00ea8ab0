"""TF SavedModel backend (ours or the official `rvm_*_tf/` download): NHWC inside, NCHW at the boundary.

States stay TF tensors (NHWC) between frames; the first frame gets scalar zeros, as the contract says.
"""
import logging
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from rvm.contracts import TF_INPUTS, TF_OUTPUTS
from rvm.errors import ArtifactError, BackendUnavailable, UsageError
from rvm.formats import SAVED_MODEL_FILE
from rvm.metadata import METADATA_FILE, ArtifactMetadata

from .base import Runtime, RuntimeInfo

log = logging.getLogger(__name__)


def import_tensorflow():
    try:
        import tensorflow as tf
    except ImportError as why:
        raise BackendUnavailable(f"tensorflow is not installed ({why}): pip install 'rvm-toolkit[tf]'") from None
    return tf


def set_threads(tf, threads: int) -> None:
    try:  # the same count again is a no-op; another one after TF's runtime started raises
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError as why:
        log.warning("TensorFlow keeps its threads (%s): %d threads asked for", why, threads)


class TensorflowRuntime(Runtime):
    backend = "tf"

    def __init__(self, path, device: str = "auto", **options):
        tf = import_tensorflow()
        self.tf = tf
        path = Path(path)
        if not (path / SAVED_MODEL_FILE).exists():
            raise ArtifactError(f"{path} is not a TF SavedModel folder (no {SAVED_MODEL_FILE}): pass the exported "
                                f"folder")
        self.device = self._pick_device(device)
        with tf.device(self.device):
            self.model = tf.saved_model.load(str(path))
        metadata_path = path / METADATA_FILE
        metadata = ArtifactMetadata.from_json(metadata_path.read_text()) if metadata_path.exists() else None
        # official SavedModels are Keras-callable; fall back to the serving signature otherwise
        self._call = self.model if callable(self.model) else self._serving(self.model)
        info = RuntimeInfo(self.backend, self.device, metadata.precision if metadata else "fp32", path=str(path),
                           metadata=metadata)
        super().__init__(info, **options)

    @classmethod
    def from_path(cls, path, device: str = "auto", threads: Optional[int] = None,
                  **options) -> "TensorflowRuntime":
        """`threads`: TF's intra- and inter-op threads, process-wide; they can only be set before TF's runtime
        starts (a later request is logged and left)."""
        if threads:
            set_threads(import_tensorflow(), threads)
        return cls(path, device=device, **options)

    def _pick_device(self, device: str) -> str:
        gpus = self.tf.config.list_physical_devices("GPU")
        if device == "auto":
            return "/GPU:0" if gpus else "/CPU:0"
        if device == "cpu":
            return "/CPU:0"
        if device.startswith("cuda") or device.startswith("gpu"):
            if not gpus:
                raise BackendUnavailable(f"device {device!r} asked for, but TensorFlow sees no GPU: use --device cpu")
            index = device.partition(":")[2] or "0"
            return f"/GPU:{index}"
        raise UsageError(f"unknown device {device!r} for TensorFlow: use auto, cpu or cuda[:N]")

    @staticmethod
    def _serving(model):
        signature = model.signatures["serving_default"]

        def call(inputs):
            return signature(**dict(zip(TF_INPUTS, inputs)))
        return call

    def _run(self, src, state, downsample_ratio):
        tf = self.tf
        with tf.device(self.device):
            rec = state if state is not None else [tf.constant(0.0)] * 4
            src_nhwc = tf.constant(np.ascontiguousarray(src.transpose(0, 2, 3, 1)))
            out = self._call([src_nhwc, *rec, tf.constant(downsample_ratio, tf.float32)])
        fgr = out["fgr"].numpy().transpose(0, 3, 1, 2)
        pha = out["pha"].numpy().transpose(0, 3, 1, 2)
        return fgr, pha, [out[name] for name in TF_OUTPUTS[2:]]

    def _state_to_numpy(self, state) -> List[np.ndarray]:
        return [np.ascontiguousarray(s.numpy().transpose(0, 3, 1, 2)) for s in state]

    def _state_from_numpy(self, arrays: Sequence[np.ndarray]):
        with self.tf.device(self.device):
            return [self.tf.constant(np.ascontiguousarray(a.transpose(0, 2, 3, 1))) for a in arrays]
