"""`Runtime.load(path)`: one loader that picks the backend from the artifact, through the format registry.

Backends import their framework lazily, so `import rvm.runtimes` works with only the extras installed.
"""
from rvm.errors import BackendUnavailable, ResolutionChangedError

from .base import Runtime, RuntimeInfo, load, runtime_class

__all__ = ["BackendUnavailable", "Runtime", "RuntimeInfo", "ResolutionChangedError", "load", "runtime_class"]
