"""rawdemosaic: a raw-photo developer built on searched demosaicking programs compiled with Halide.

Public API::

    frame = rawdemosaic.read("photo.dng")            # RawFrame
    rgb = rawdemosaic.demosaic(mosaic, "RGGB", budget=100)
    img = rawdemosaic.develop(frame, budget=100)     # finished (H, W, 3) image
    rawdemosaic.kernels("bayer")                     # registry entries
"""

from __future__ import annotations

from .cfa import CFA, CFAPattern
from .errors import (
    BudgetError,
    KernelNotFoundError,
    RawDemosaicError,
    RawReadError,
    UnsupportedCFAError,
)
from .frame import RawFrame

__all__ = [
    "CFA",
    "CFAPattern",
    "RawFrame",
    "read",
    "demosaic",
    "develop",
    "kernels",
    "KernelInfo",
    "RawDemosaicError",
    "RawReadError",
    "UnsupportedCFAError",
    "BudgetError",
    "KernelNotFoundError",
    "__version__",
]

__version__ = "0.1.0"


def __getattr__(name: str):  # lazy: keep `import rawdemosaic` cheap (no Halide, no rawpy)
    if name == "read":
        from .raw import read

        return read
    if name == "demosaic":
        from .demosaic import demosaic

        return demosaic
    if name == "develop":
        from .develop import develop

        return develop
    if name in ("kernels", "KernelInfo"):
        from . import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'rawdemosaic' has no attribute {name!r}")
