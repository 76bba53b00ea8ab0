"""rvm-toolkit: the PyTorch reference of Robust Video Matting and the jobs built on it."""
from .batch import batch_convert
from .checkpoints import load_model
from .convert import convert_video
from .model import MattingNetwork

__version__ = "0.1.0"
__all__ = ["MattingNetwork", "load_model", "convert_video", "batch_convert", "__version__"]
