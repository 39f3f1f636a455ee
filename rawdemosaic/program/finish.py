"""The finishing stage of :func:`rawdemosaic.develop` as one Halide pass over the demosaicked image.

``out(c, x, y) = curve(clamp(sum_k M[c, k] rgb(k, x, y), 0, 1))``, optionally rounded to ``uint8`` or
``uint16`` codes: the camera-to-output matrix, the clip to the gamut, the space's transfer curve and the
quantisation a writer would do, fused. In numpy these steps took ten times as long as a cheap kernel's
demosaicking (12 MP, 2 cores: about 0.7 s for the sRGB curve's ``power`` alone).

The matrix is a run-time argument, so one library per (curve, output type) and target serves every
camera. Curves are a power with an optional linear toe (:data:`CURVES`), evaluated with ``fast_pow``:
within a few 1e-6 of :mod:`rawdemosaic.color`'s numpy curves (a tenth of a uint16 step; tested for every
space). The libraries live in the kernel cache (:func:`rawdemosaic.program.compiler.cache_dir`).
"""

from __future__ import annotations

import ctypes
import hashlib
import threading
from pathlib import Path
from typing import Any, NamedTuple, Optional

import numpy as np

from .compiler import _Buffer, _build_library, _error_detail, _halide_version, _hbuf, _hl, _library_ok, _load_library, cache_dir, host_target

__all__ = ["Curve", "CURVES", "Finisher"]


class Curve(NamedTuple):
    """``slope * x`` for ``x <= knee`` (``x < knee`` for a strict toe), else ``scale * x ** (1 / gamma) - offset``."""

    gamma: float
    knee: float = 0.0
    slope: float = 0.0
    scale: float = 1.0
    offset: float = 0.0
    strict: bool = False


# the transfer curves of :data:`rawdemosaic.color.SPACES` by space name (None: linear)
CURVES: dict[str, Optional[Curve]] = {
    "srgb": Curve(2.4, 0.0031308, 12.92, 1.055, 0.055),
    "adobe": Curve(563.0 / 256.0),
    "prophoto": Curve(1.8, 1.0 / 512.0, 16.0, strict=True),  # ROMM: slope 16 below 1/512
    "xyz": None,
    "raw": None,
}

_OUT = {"float32": np.float32, "uint16": np.uint16, "uint8": np.uint8}
_LOAD_LOCK = threading.Lock()


def _key() -> str:
    """Fingerprint of this module and the compiler it links with."""
    h = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for name in ("finish.py", "compiler.py"):
        h.update((here / name).read_bytes())
    return h.hexdigest()[:8]


def _curve_expr(hl: Any, curve: Optional[Curve], v: Any) -> Any:
    if curve is None:
        return v
    f = hl.f32
    powered = f(curve.scale) * hl.fast_pow(hl.max(v, f(1e-30)), f(1.0 / curve.gamma)) - f(curve.offset)
    if curve.knee <= 0:
        return hl.select(v > f(0.0), powered, f(0.0))
    toe = (v < f(curve.knee)) if curve.strict else (v <= f(curve.knee))
    return hl.select(toe, v * f(curve.slope), powered)


def build_finish(curve: Optional[Curve], out_dtype: str = "float32", target: Optional[str] = None):
    """``(pipeline, arguments)``: interleaved float32 RGB and the 9 matrix entries (row-major) in, ``out_dtype`` out."""
    from .compiler import _widths

    if out_dtype not in _OUT:
        raise ValueError(f"out_dtype must be one of {', '.join(_OUT)}, got {out_dtype!r}")
    hl = _hl()
    rgb = hl.ImageParam(hl.Float(32), 3, "rgb")
    m = [[hl.Param(hl.Float(32), f"m{i}{k}") for k in range(3)] for i in range(3)]
    c, x, y = hl.Var("c"), hl.Var("x"), hl.Var("y")
    row = [m[0][k] for k in range(3)]
    for i in (1, 2):
        row = [hl.select(c == i, m[i][k], row[k]) for k in range(3)]
    v = row[0] * rgb[0, x, y] + row[1] * rgb[1, x, y] + row[2] * rgb[2, x, y]
    e = _curve_expr(hl, curve, hl.clamp(v, hl.f32(0.0), hl.f32(1.0)))
    out = hl.Func("finished")
    if out_dtype == "float32":
        out[c, x, y] = e
    else:  # the nearest code, ties to even: numpy's rint of the float output times full scale, bit for bit
        top = 255.0 if out_dtype == "uint8" else 65535.0
        out[c, x, y] = hl.cast(hl.UInt(8) if out_dtype == "uint8" else hl.UInt(16), hl.round(e * hl.f32(top)))
    # interleaved (H, W, 3) arrays in and out: channels innermost, unit stride
    rgb.dim(0).set_bounds(0, 3).set_stride(1)
    rgb.dim(1).set_stride(3)
    ob = out.output_buffer()
    ob.dim(0).set_bounds(0, 3).set_stride(1)
    ob.dim(1).set_stride(3)
    lanes = _widths(target or host_target()).lanes
    xi, yo, yi = hl.Var("xi"), hl.Var("yo"), hl.Var("yi")
    out.bound(c, 0, 3).reorder(c, x, y).unroll(c)
    out.split(x, x, xi, lanes, hl.TailStrategy.GuardWithIf).vectorize(xi)
    out.split(y, yo, yi, 16, hl.TailStrategy.GuardWithIf).reorder(c, xi, x, yi, yo).parallel(yo)
    return hl.Pipeline(out), [rgb, *[p for r in m for p in r]]


class Finisher:
    """The compiled finishing pass for one output curve and type (see the module docstring).

    Parameters
    ----------
    curve
        A :class:`Curve`, or ``None`` for linear output.
    out_dtype
        ``"float32"`` (values in [0, 1]), ``"uint16"`` or ``"uint8"`` (rounded codes of full scale).
    target
        Halide target string; default :func:`~rawdemosaic.program.compiler.host_target`.
    """

    def __init__(self, curve: Optional[Curve], out_dtype: str = "float32", target: Optional[str] = None, quiet: bool = False):
        if out_dtype not in _OUT:
            raise ValueError(f"out_dtype must be one of {', '.join(_OUT)}, got {out_dtype!r}")
        self.curve, self.out_dtype = curve, out_dtype
        self.target = target or host_target()
        self.quiet = quiet
        self._fn = None

    @property
    def _tag(self) -> str:
        c = self.curve
        return "linear" if c is None else hashlib.sha256(repr(tuple(c)).encode()).hexdigest()[:10]

    @property
    def path(self) -> Path:
        tkey = hashlib.sha256(self.target.encode()).hexdigest()[:10]
        return cache_dir() / f"halide-{_halide_version()}-{_key()}" / tkey / f"finish-{self._tag}-{self.out_dtype}.so"

    @property
    def fn_name(self) -> str:
        return f"rd_finish_{self._tag}_{self.out_dtype}"

    def is_cached(self) -> bool:
        """A whole library for this pass is in the cache."""
        return _library_ok(self.path)

    def build(self) -> Path:
        """Compile to the cache if needed; returns the shared library's path."""
        what = f"finishing pass ({'linear' if self.curve is None else f'gamma {self.curve.gamma:g}'} -> {self.out_dtype})"
        return _build_library(self.path, what, what, lambda: build_finish(self.curve, self.out_dtype, self.target), self.fn_name, self.target, self.quiet)

    def _load(self):
        with _LOAD_LOCK:  # one library handle and error list per instance, whichever thread comes first
            if self._fn is None:
                argtypes = [ctypes.POINTER(_Buffer)] + [ctypes.c_float] * 9 + [ctypes.POINTER(_Buffer)]
                self._lib, self._fn, self._errors, self._handler = _load_library(self.build(), self.fn_name, argtypes)
        return self._fn

    def __call__(self, rgb: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        """Finish ``rgb`` (``(H, W, 3)`` float32, channels contiguous) with the ``(3, 3)`` ``matrix``
        (output = matrix @ input per pixel); returns a new C-contiguous ``(H, W, 3)`` array of ``out_dtype``."""
        a = np.asarray(rgb)
        if a.dtype != np.float32 or a.ndim != 3 or a.shape[2] != 3:
            raise ValueError(f"rgb must be (H, W, 3) float32, got {a.dtype} {a.shape}")
        if a.strides[2] != 4 or a.strides[1] != 12:
            a = np.ascontiguousarray(a)
        mat = np.asarray(matrix, np.float64)
        if mat.shape != (3, 3) or not np.all(np.isfinite(mat)):
            raise ValueError(f"matrix must be a finite (3, 3) array, got {mat.shape}")
        fn = self._load()
        out = np.empty(a.shape, _OUT[self.out_dtype])
        if a.size == 0:
            return out
        ib, _d1 = _hbuf(a, (0, 0, 0))
        ob, _d2 = _hbuf(out, (0, 0, 0))
        before = len(self._errors)
        rc = fn(ctypes.byref(ib), *[float(v) for v in mat.ravel()], ctypes.byref(ob))
        if rc != 0:
            raise RuntimeError(f"finishing pass failed with Halide error {rc}: {_error_detail(self._errors, before)}")
        return out
