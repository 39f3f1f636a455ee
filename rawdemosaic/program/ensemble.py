"""Geometric self-ensemble: a program averaged over reflections of the mosaic, in one kernel.

Every flip of a Bayer or X-Trans mosaic is a mosaic of the same family in another phase, so a program
can run on the reflected mosaic as on any other, its result be reflected back, and the results be
averaged (Timofte et al., "Seven ways to improve example-based single image super resolution", CVPR
2016). A program with ``ensemble = n`` does this over the first ``n`` :data:`REFLECTIONS`; it costs ``n``
times its graph. The compiler lowers each copy of the graph on its own reflected view of the extended
mosaic (:func:`reflection_origin`) and averages them in the program's domain, before the output
encoding; :func:`rawdemosaic.program.reference.run_reference` does the same in numpy.

Geometry
--------
Copy ``k`` reads ``mosaic(sx * x + A, sy * y + B)`` and its pixel ``(x, y)`` is the original's
``(sx * x + A, sy * y + B)``. ``A`` (for ``sx = -1``) is the reflection axis of the image,
``2 * x_min + width - 1``, moved down to ``a`` modulo the period: ``a`` makes the copy's layout the
canonical pattern. (X-Trans is the same pattern shifted by (3, 3), so a reflection has two such phases,
which a trained kernel does not treat alike; this picks the one ``A`` rounds down to.)
"""

from __future__ import annotations

import numpy as np

from ..errors import ProgramError

__all__ = ["REFLECTIONS", "ENSEMBLE_SIZES", "reflections", "pattern_offsets", "reflection_origin"]

REFLECTIONS: tuple[tuple[int, int], ...] = ((1, 1), (-1, -1), (-1, 1), (1, -1))  # (sx, sy): id, rot180, flips
ENSEMBLE_SIZES = (1, 2, 4)


def reflections(n: int) -> tuple[tuple[int, int], ...]:
    """The ``(sx, sy)`` of an ensemble of ``n`` (1: the program alone; 2: and rotated 180 degrees; 4: and both flips)."""
    if n not in ENSEMBLE_SIZES:
        raise ProgramError(f"ensemble must be one of {ENSEMBLE_SIZES}, got {n!r}")
    return REFLECTIONS[:n]


def pattern_offsets(pattern: np.ndarray, sx: int, sy: int) -> tuple[int, int]:
    """Smallest ``(a, b)`` with ``pattern[(sy y + b) % p, (sx x + a) % p] == pattern[y % p, x % p]`` everywhere."""
    p = pattern.shape[0]
    idx = np.arange(p)
    for b in range(p):
        for a in range(p):
            if np.array_equal(pattern[np.ix_((sy * idx + b) % p, (sx * idx + a) % p)], pattern):
                return a, b
    raise ProgramError(f"the reflection ({sx}, {sy}) of this CFA is not the same pattern in another phase")


def reflection_origin(lo, n, s: int, a: int, modulus: int):
    """``A`` of one axis: the shift ``a`` for ``s = 1`` (a flip of X-Trans along the other axis shifts it
    along this one); for ``s = -1`` the axis ``2 lo + n - 1`` moved down to ``a (mod modulus)``.

    Works on ints and on Halide expressions alike (``//`` floors on both).
    """
    if s == 1:
        return a
    return ((2 * lo + n - 1 - a) // modulus) * modulus + a
