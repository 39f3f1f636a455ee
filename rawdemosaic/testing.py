"""Helpers for tests and sample generation (public but undocumented): write minimal raw DNGs.

:func:`write_dng` writes a single-IFD, uncompressed CFA DNG with ``tifffile`` that LibRaw (rawpy) reads
back bit-exactly. It is meant for synthetic data the project generates itself, not as a general DNG
writer.
"""

from __future__ import annotations

import datetime as _dt
from fractions import Fraction
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

__all__ = ["write_dng", "ILLUMINANT_D65", "ILLUMINANT_A"]

ILLUMINANT_A = 17
ILLUMINANT_D65 = 21


def _rational(x: float, signed: bool, denominator: int = 10000) -> tuple[int, int]:
    f = Fraction(float(x)).limit_denominator(denominator)
    num, den = f.numerator, f.denominator
    if not signed and num < 0:
        raise ValueError(f"unsigned rational cannot hold negative value {x}")
    return int(num), int(den)


def _rationals(values, signed: bool, denominator: int = 10000) -> tuple[int, ...]:
    out: list[int] = []
    for v in np.asarray(values, dtype=np.float64).ravel():
        out.extend(_rational(v, signed, denominator))
    return tuple(out)


def _pattern_array(pattern) -> np.ndarray:
    """A CFAPattern / Bayer name / 'xtrans' through :func:`cfa.as_pattern`; a raw array is kept as is
    (so that tests can write layouts the reader must reject)."""
    if isinstance(pattern, np.ndarray) or isinstance(pattern, (list, tuple)):
        pat = np.asarray(pattern, dtype=np.uint8)
    else:
        from .cfa import as_pattern

        pat = as_pattern(pattern).pattern.astype(np.uint8)
    if pat.ndim != 2:
        raise ValueError("CFA pattern must be 2-D")
    return pat


def write_dng(
    path: Union[str, Path],
    cfa_data_uint16: np.ndarray,
    pattern,
    black: Union[float, Sequence[float]] = 0,
    white: int = 65535,
    xyz_to_cam: Optional[np.ndarray] = None,
    as_shot_neutral: Optional[Sequence[float]] = None,
    orientation: int = 1,
    make: str = "RawDemosaic",
    model: str = "Synthetic",
    iso: Optional[int] = None,
    exposure_time: Optional[float] = None,
    aperture: Optional[float] = None,
    focal_length: Optional[float] = None,
    timestamp: Optional[Union[_dt.datetime, str]] = None,
    illuminant: int = ILLUMINANT_D65,
    xyz_to_cam2: Optional[np.ndarray] = None,
    illuminant2: Optional[int] = None,
    bits_per_sample: Optional[int] = None,
    active_area: Optional[Sequence[int]] = None,
) -> Path:
    """Write an uncompressed CFA DNG.

    Parameters
    ----------
    cfa_data_uint16
        ``(H, W)`` raw sensor values (black level included), stored as is.
    pattern
        The colour at each position of the repeating tile (0 = R, 1 = G, 2 = B), as a ``(p, p)`` array
        (written verbatim, whatever it is), or a name/``CFAPattern`` accepted by ``cfa.as_pattern``.
    black
        Scalar BlackLevel, or ``p*p`` values (one per tile position, row-major; BlackLevelRepeatDim p x p).
    white
        WhiteLevel.
    xyz_to_cam
        ``(3, 3)`` ColorMatrix1 (XYZ -> camera), for ``illuminant`` (CalibrationIlluminant1, 21 = D65).
        ``xyz_to_cam2``/``illuminant2`` optionally add ColorMatrix2/CalibrationIlluminant2.
    as_shot_neutral
        AsShotNeutral ``(R, G, B)`` (the camera response to neutral: 1 / white-balance multipliers).
    orientation
        TIFF/EXIF orientation 1..8.
    active_area
        Optional DNG ActiveArea ``(top, left, bottom, right)``; the CFA pattern is relative to its
        top-left corner (DNG specification).
    """
    import tifffile

    data = np.ascontiguousarray(cfa_data_uint16)
    if data.ndim != 2:
        raise ValueError("cfa_data_uint16 must be 2-D")
    if data.dtype != np.uint16:
        if data.size and (data.min() < 0 or data.max() > 65535):
            raise ValueError("raw values out of uint16 range")
        data = data.astype(np.uint16)
    pat = _pattern_array(pattern)
    ph, pw = pat.shape

    tags: list[tuple] = [
        (271, "s", 0, str(make), True),
        (272, "s", 0, str(model), True),
        (274, "H", 1, (int(orientation),), True),
        (33421, "H", 2, (ph, pw), True),
        (33422, "B", ph * pw, tuple(int(v) for v in pat.ravel()), True),
        (50706, "B", 4, (1, 4, 0, 0), True),
        (50707, "B", 4, (1, 1, 0, 0), True),
        (50708, "s", 0, f"{make} {model}".strip(), True),
        (50717, "I", 1, (int(white),), True),
    ]
    blacks = np.atleast_1d(np.asarray(black, dtype=np.float64)).ravel()
    if blacks.size == 1:
        b = float(blacks[0])
        if b == int(b):
            tags.append((50714, "I", 1, (int(b),), True))
        else:
            tags.append((50714, "2I", 1, _rationals([b], False), True))
    else:
        n = int(round(np.sqrt(blacks.size)))
        if n * n != blacks.size:
            raise ValueError("black must be a scalar or one value per square tile position")
        tags.append((50713, "H", 2, (n, n), True))
        if np.all(blacks == np.round(blacks)):
            tags.append((50714, "I", blacks.size, tuple(int(v) for v in blacks), True))
        else:
            tags.append((50714, "2I", blacks.size, _rationals(blacks, False), True))
    if xyz_to_cam is not None:
        m = np.asarray(xyz_to_cam, dtype=np.float64).reshape(3, 3)
        tags.append((50721, "2i", 9, _rationals(m, True), True))
        tags.append((50778, "H", 1, (int(illuminant),), True))
    if xyz_to_cam2 is not None:
        m2 = np.asarray(xyz_to_cam2, dtype=np.float64).reshape(3, 3)
        tags.append((50722, "2i", 9, _rationals(m2, True), True))
        tags.append((50779, "H", 1, (int(illuminant2 if illuminant2 is not None else ILLUMINANT_D65),), True))
    if as_shot_neutral is not None:
        tags.append((50728, "2I", 3, _rationals(as_shot_neutral, False, 1_000_000), True))
    if active_area is not None:
        tags.append((50829, "I", 4, tuple(int(v) for v in active_area), True))
    if exposure_time is not None:
        tags.append((33434, "2I", 1, _rationals([exposure_time], False, 1_000_000), True))
    if aperture is not None:
        tags.append((33437, "2I", 1, _rationals([aperture], False), True))
    if iso is not None:
        tags.append((34855, "H", 1, (int(iso),), True))
    if timestamp is not None:
        if isinstance(timestamp, _dt.datetime):
            timestamp = timestamp.strftime("%Y:%m:%d %H:%M:%S")
        tags.append((36867, "s", 0, str(timestamp), True))
    if focal_length is not None:
        tags.append((37386, "2I", 1, _rationals([focal_length], False), True))

    path = Path(path)
    kwargs = {}
    if bits_per_sample is not None:
        kwargs["bitspersample"] = int(bits_per_sample)
    tifffile.imwrite(
        path,
        data,
        photometric=32803,
        extratags=tags,
        subfiletype=0,
        software="rawdemosaic.testing",
        metadata=None,
        **kwargs,
    )
    return path
