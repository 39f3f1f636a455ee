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

# Functions are bound after their modules are imported, so `rawdemosaic.develop` stays the function
# even once `rawdemosaic.develop` the module is in sys.modules. Halide is only imported on first
# kernel use, and torch never.
from .demosaic import demosaic  # noqa: E402
from .develop import develop  # noqa: E402
from .raw import read  # noqa: E402
from .registry import KernelInfo, kernels  # noqa: E402

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


