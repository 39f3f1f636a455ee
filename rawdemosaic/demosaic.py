"""Demosaic a mosaic with a registry kernel chosen by name or cost budget."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from .cfa import as_pattern
from .errors import KernelNotFoundError
from .registry import KernelInfo, kernels, select

__all__ = ["demosaic", "get_kernel", "choose"]

_KERNELS: dict[tuple, object] = {}
_LOCK = threading.Lock()


def choose(cfa, budget: float | None = None, kernel: str | None = None, models: str | Path | None = None) -> KernelInfo:
    """The registry entry :func:`demosaic` would use (see :func:`rawdemosaic.registry.select`)."""
    pat = as_pattern(cfa)
    return select(kernels(models=models), pat.kind, budget=budget, name=kernel)  # select names a wrong-CFA kernel


def get_kernel(info: KernelInfo, in_dtype: str = "float32", out_dtype: str = "float32"):
    """The compiled :class:`~rawdemosaic.program.compiler.Kernel` of an entry (memoised per process).

    Kernels take and return linear light: one trained for sRGB-encoded data encodes and decodes inside.
    """
    from .program.compiler import Kernel

    files = (info.program_path, info.program_path.with_suffix(".npz"))  # the graph and its weights
    key = (str(info.program_path), *(f.stat().st_mtime_ns if f.exists() else 0 for f in files), in_dtype, out_dtype)
    with _LOCK:
        k = _KERNELS.get(key)
        if k is None:
            k = _KERNELS[key] = Kernel(info.program(), in_dtype, out_dtype, linear_io=True)
    return k


def demosaic(mosaic: np.ndarray, cfa, budget: float | None = None, kernel: str | None = None, models: str | Path | None = None, dtype=np.float32) -> np.ndarray:
    """Demosaic a 2-D mosaic through a compiled registry kernel.

    Parameters
    ----------
    mosaic
        ``(H, W)`` float32 in [0, 1] (other float dtypes are converted) or uint16 (full scale 65535).
    cfa
        The mosaic's layout: a pattern array of 0/1/2 (R/G/B) of shape 2x2 or 6x6, a Bayer name such as
        ``"RGGB"``, ``"xtrans"`` (canonical phase) or a :class:`~rawdemosaic.CFAPattern`.
    budget
        Cost budget in operations per output pixel: the best-quality kernel that fits is used.
    kernel
        Name of a registry entry (overrides ``budget``).
    models
        Registry directory (default: the built-in registry or ``$RAWDEMOSAIC_MODELS``).
    dtype
        Output dtype, ``float32`` (default) or ``uint16``.

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3)`` RGB. Values are not clipped in float32 output (kernels trained on sRGB-encoded data
        saturate at 2.54, the decode of an encoded 1.5).
    """
    m = np.asarray(mosaic)
    if m.ndim != 2:
        raise ValueError(f"mosaic must be a 2-D array, got shape {m.shape}")
    pat = as_pattern(cfa)
    if min(m.shape) < 2 * pat.period:
        raise ValueError(f"mosaic {m.shape} is too small: at least {2 * pat.period} pixels each way for {pat.kind.value}")
    if m.dtype.kind == "u" and m.dtype.itemsize == 2:
        m = m.astype(np.uint16, copy=False)  # native byte order (a big-endian ">u2" is swapped)
        in_dt = "uint16"
    else:
        if m.dtype.kind != "f":
            raise ValueError(f"mosaic must be float (values in [0, 1]) or uint16, got {m.dtype}")
        m = m.astype(np.float32, copy=False)
        in_dt = "float32"
    out_dt = np.dtype(dtype).name
    if out_dt not in ("float32", "uint16"):
        raise ValueError(f"dtype must be float32 or uint16, got {out_dt}")
    info = choose(pat, budget=budget, kernel=kernel, models=models)
    if info.cfa is not pat.kind:  # pragma: no cover - select guarantees it
        raise KernelNotFoundError(f"kernel {info.name} serves {info.cfa.value}")
    return get_kernel(info, in_dt, out_dt)(m, pat)
