"""Colour filter arrays: the two families we demosaic, their canonical layouts and phase detection.

A CFA *pattern* is a small ``(p, p)`` integer array of colour indices (0 = red, 1 = green, 2 = blue) that
tiles the sensor from its top-left visible pixel. Every program in the registry is written for the
*canonical* pattern of its family; a sensor whose pattern is the canonical one shifted by ``(dy, dx)``
(``pattern[i, j] == canonical[(i + dy) % p, (j + dx) % p]``) is served by the same program, run in
canonical coordinates offset by that phase.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Union

import numpy as np

from .errors import UnsupportedCFAError

__all__ = ["CFA", "CFAPattern", "as_pattern", "detect", "mosaic", "BAYER_NAMES"]

R, G, B = 0, 1, 2


class CFA(str, enum.Enum):
    """Family of colour filter array.

    Attributes
    ----------
    BAYER
        2x2 period, one red, two greens, one blue (RGGB and its 3 other phases).
    XTRANS
        Fujifilm X-Trans, 6x6 period: 20 greens, 8 reds, 8 blues; every row and column holds all three.
    """

    BAYER = "bayer"
    XTRANS = "xtrans"

    @property
    def period(self) -> int:
        return 2 if self is CFA.BAYER else 6

    @property
    def canonical(self) -> np.ndarray:
        """The layout the registry's programs are written for (a fresh copy)."""
        return _CANONICAL[self].copy()


_CANONICAL = {
    CFA.BAYER: np.array([[R, G], [G, B]], np.uint8),
    CFA.XTRANS: np.array(
        [
            [G, G, R, G, G, B],
            [G, G, B, G, G, R],
            [B, R, G, R, B, G],
            [G, G, B, G, G, R],
            [G, G, R, G, G, B],
            [R, B, G, B, R, G],
        ],
        np.uint8,
    ),
}

BAYER_NAMES = ("RGGB", "GRBG", "GBRG", "BGGR")
_LETTERS = {"R": R, "G": G, "B": B}


@dataclass(frozen=True)
class CFAPattern:
    """A detected layout: its family and its phase relative to the family's canonical pattern."""

    kind: CFA
    dy: int
    dx: int

    @property
    def period(self) -> int:
        return self.kind.period

    @property
    def pattern(self) -> np.ndarray:
        return np.roll(self.kind.canonical, (-self.dy, -self.dx), axis=(0, 1))

    @property
    def name(self) -> str:
        if self.kind is CFA.BAYER:
            return "".join("RGB"[c] for c in self.pattern.ravel())
        return "X-Trans"

    def __str__(self) -> str:  # pragma: no cover - cosmetic
        return self.name


PatternLike = Union[str, np.ndarray, "CFAPattern", list]


def detect(pattern: np.ndarray) -> CFAPattern:
    """Identify the CFA family and phase of a ``(p, p)`` pattern of 0/1/2 colour indices.

    Raises
    ------
    UnsupportedCFAError
        When the pattern is neither a Bayer nor an X-Trans layout in any phase.
    """
    pat = np.asarray(pattern)
    if pat.ndim != 2 or pat.shape[0] != pat.shape[1]:
        raise UnsupportedCFAError(f"CFA pattern of shape {pat.shape} is not square")
    pat = _reduce_period(pat.astype(np.int64))
    for kind in CFA:
        p = kind.period
        if pat.shape[0] != p:
            continue
        canon = _CANONICAL[kind]
        for dy in range(p):
            for dx in range(p):
                if np.array_equal(np.roll(canon, (-dy, -dx), axis=(0, 1)), pat):
                    return CFAPattern(kind, dy, dx)
    colours = sorted({int(c) for c in pat.ravel()})
    raise UnsupportedCFAError(
        f"unsupported CFA layout (period {pat.shape[0]}, colours {colours}): "
        "only Bayer 2x2 and X-Trans 6x6 are demosaicked"
    )


def _reduce_period(pat: np.ndarray) -> np.ndarray:
    """Shrink a pattern given at a multiple of its true period (e.g. Bayer written as 4x4 or 6x6)."""
    n = pat.shape[0]
    for p in (1, 2, 3, 6):
        if n % p == 0 and p < n and np.array_equal(np.tile(pat[:p, :p], (n // p, n // p)), pat):
            return pat[:p, :p]
    return pat


def as_pattern(cfa: PatternLike) -> CFAPattern:
    """Accept a :class:`CFAPattern`, a Bayer name (``"RGGB"``...), ``"xtrans"`` or a pattern array."""
    if isinstance(cfa, CFAPattern):
        return cfa
    if isinstance(cfa, CFA):
        return CFAPattern(cfa, 0, 0)
    if isinstance(cfa, str):
        name = cfa.strip().upper().replace("-", "")
        if name in ("XTRANS", "X TRANS"):
            return CFAPattern(CFA.XTRANS, 0, 0)
        if name == "BAYER":
            return CFAPattern(CFA.BAYER, 0, 0)
        if len(name) == 4 and set(name) <= set(_LETTERS):
            return detect(np.array([_LETTERS[c] for c in name]).reshape(2, 2))
        raise UnsupportedCFAError(f"unknown CFA name {cfa!r}: use one of {', '.join(BAYER_NAMES)} or 'xtrans'")
    arr = np.asarray(cfa)
    if arr.dtype.kind not in "iu" or arr.size == 0 or arr.min() < 0 or arr.max() > 2:
        raise UnsupportedCFAError("a CFA pattern array must hold colour indices 0 (R), 1 (G), 2 (B)")
    return detect(arr)


def mosaic(rgb: np.ndarray, cfa: PatternLike) -> np.ndarray:
    """Sample an ``(H, W, 3)`` image through a CFA: the ``(H, W)`` mosaic a sensor would record."""
    pat = as_pattern(cfa).pattern
    h, w = rgb.shape[:2]
    p = pat.shape[0]
    idx = np.tile(pat, (-(-h // p), -(-w // p)))[:h, :w]
    return np.take_along_axis(rgb, idx[..., None].astype(np.intp), axis=2)[..., 0]
