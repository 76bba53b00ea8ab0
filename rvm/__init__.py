"""rvm-toolkit: Robust Video Matting from one PyTorch reference to every deployment format.

The public API is imported on first use (PEP 562), so `import rvm` is fast and works with any subset of the
extras installed, and the package itself imports none of its layers.
"""
import importlib

from rvm.version import __version__

_API = {
    "MattingNetwork": "rvm.model",
    "load_model": "rvm.checkpoints",
    "Runtime": "rvm.runtimes",
    "convert_video": "rvm.media.convert",
    "ConvertRequest": "rvm.media.request",
    "batch_convert": "rvm.batch.driver",
    "BatchRequest": "rvm.batch.jobs",
    "export": "rvm.exporters",
    "ExportOptions": "rvm.formats",
    "FORMATS": "rvm.formats",
    "RVMError": "rvm.errors",
    "UsageError": "rvm.errors",
}
__all__ = sorted(_API) + ["__version__"]


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'rvm' has no attribute {name!r}")
    return getattr(importlib.import_module(_API[name]), name)
