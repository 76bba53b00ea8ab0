"""`Runtime.load(path)`: one loader that picks the backend from the artifact.

Backends import their framework lazily, so `import runtimes` works with only the extras installed.
"""
import importlib
import zipfile
from pathlib import Path
from typing import Dict

from .base import BackendUnavailable, ResolutionChangedError, Runtime, RuntimeInfo

# backend name -> "module:class"
BACKENDS: Dict[str, str] = {
    "pytorch": "runtimes.pytorch:PyTorchRuntime",
    "torchscript": "runtimes.torchscript:TorchScriptRuntime",
    "onnx": "runtimes.onnxruntime:OnnxRuntime",
    "tf": "runtimes.tensorflow:TensorflowRuntime",
    "tfjs": "runtimes.tfjs:TfjsRuntime",
    "coreml": "runtimes.coreml:CoreMLRuntime",
    "openvino": "runtimes.openvino:OpenVinoRuntime",
}


def backend_class(name: str) -> type:
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def detect_backend(path) -> str:
    """The backend an artifact needs, from its suffix or folder layout."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix in (".mlmodel", ".mlpackage"):
        return "coreml"
    if suffix == ".torchscript":
        return "torchscript"
    if suffix == ".xml":
        return "openvino"
    if p.is_dir():
        if (p / "model.xml").exists():
            return "openvino"
        if (p / "saved_model.pb").exists():
            return "tf"
        if (p / "model.json").exists():
            return "tfjs"
        raise ValueError(f"{p} is a folder but neither a TF SavedModel (saved_model.pb), a TF.js model "
                         f"(model.json) nor an OpenVINO IR (model.xml): pass the artifact folder itself")
    if p.name == "model.json":
        return "tfjs"
    if suffix in (".pt", ".pth", ".ckpt") and p.is_file() and zipfile.is_zipfile(p):
        with zipfile.ZipFile(p) as archive:  # TorchScript archives hold code/, checkpoints don't
            if any("/code/" in name for name in archive.namelist()):
                return "torchscript"
    if suffix in (".pt", ".pth", ".ckpt") or not p.exists():
        return "pytorch"  # a checkpoint file, or a checkpoint name resolved by rvm.checkpoints
    raise ValueError(f"cannot tell which backend runs {p}: expected .pth/.pt (PyTorch), .torchscript, .onnx, "
                     f".mlmodel/.mlpackage, a SavedModel folder or a TF.js model.json")


def load(path, device: str = "auto", backend: str = None, **options) -> Runtime:
    name = backend or detect_backend(path)
    return backend_class(name).from_path(path, device=device, **options)



__all__ = ["BackendUnavailable", "Runtime", "RuntimeInfo", "ResolutionChangedError", "load", "detect_backend", "BACKENDS"]
