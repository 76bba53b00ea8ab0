from rvm.model.network import REFINERS, VARIANTS, MattingNetwork

__all__ = ["MattingNetwork", "VARIANTS", "REFINERS"]
