"""Exceptions raised at the package boundary.

Every error a user can trigger with bad input derives from :class:`RawDemosaicError`; the command line
prints ``str(error)`` as one line and exits non-zero.
"""

from __future__ import annotations

__all__ = [
    "RawDemosaicError",
    "RawReadError",
    "UnsupportedCFAError",
    "ProgramError",
    "BudgetError",
    "KernelNotFoundError",
    "KernelBuildError",
    "OutputError",
]


class RawDemosaicError(Exception):
    """Base class of every error rawdemosaic raises on bad input or configuration."""


class RawReadError(RawDemosaicError):
    """A file could not be read as a camera raw (missing, truncated, corrupt or not a raw)."""


class UnsupportedCFAError(RawDemosaicError):
    """The sensor layout is not one we demosaic (monochrome, Foveon/linear, Quad Bayer, other periods)."""


class ProgramError(RawDemosaicError):
    """A demosaicking program (JSON + weights) is malformed or inconsistent."""


class BudgetError(RawDemosaicError):
    """No registry kernel fits the requested cost budget."""


class KernelNotFoundError(RawDemosaicError):
    """A kernel was requested by a name the registry does not hold (or for the wrong CFA)."""


class KernelBuildError(RawDemosaicError):
    """Compiling a program to a Halide kernel failed."""


class OutputError(RawDemosaicError):
    """An output file could not be written."""
