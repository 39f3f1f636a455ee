"""Develop a :class:`~rawdemosaic.frame.RawFrame` into a finished RGB image.

The pipeline follows dcraw/LibRaw (``dcraw_process`` with highlight mode 0) so that, apart from the
demosaicking kernel, results match ``rawpy.postprocess`` closely:

1. white balance per CFA position, multipliers normalised so that the smallest is 1;
2. highlight clipping: every channel is clipped to ``[0, 1]`` after white balance, so saturated areas
   come out white (LibRaw highlight mode 0);
3. demosaicking (:func:`rawdemosaic.demosaic.demosaic`) of that white-balanced, clipped, linear mosaic;
4. camera -> output matrix (:func:`rawdemosaic.color.camera_to_output`), clipped to ``[0, 1]``;
5. the output transfer curve (unless ``linear``);
6. EXIF orientation.
"""

from __future__ import annotations

import os
import threading
import warnings
from numbers import Real
from typing import Optional, Sequence, Union

import numpy as np

from . import color as _color
from .cfa import CFA, as_pattern
from .frame import RawFrame

__all__ = ["develop", "white_balance_multipliers", "apply_orientation", "DevelopWarning", "HIGHLIGHT_MODES"]

HIGHLIGHT_MODES = ("clip",)
_WB_NAMES = ("camera", "daylight")


class DevelopWarning(UserWarning):
    """Something the frame lacks was replaced by a fallback (white balance, colour matrix)."""


# ---------------------------------------------------------------------------------------------------
# Orientation
# ---------------------------------------------------------------------------------------------------


def apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """Turn an image stored with EXIF ``orientation`` (1..8) upright (returns a view when possible).

    ===  =========================================  =====================================
    1    as stored                                  ``image``
    2    mirrored left-right                        ``image[:, ::-1]``
    3    rotated 180                                ``image[::-1, ::-1]``
    4    mirrored top-bottom                        ``image[::-1]``
    5    transposed (mirror + rotate 270 CW)        ``swapaxes(0, 1)``
    6    needs a 90 degree clockwise turn           ``rot90(k=-1)``
    7    transversed (mirror + rotate 90 CW)        ``image[::-1, ::-1].swapaxes(0, 1)``
    8    needs a 90 degree counter-clockwise turn   ``rot90(k=1)``
    ===  =========================================  =====================================
    """
    o = _check_orientation(orientation)
    if o == 1:
        return image
    if o == 2:
        return image[:, ::-1]
    if o == 3:
        return image[::-1, ::-1]
    if o == 4:
        return image[::-1]
    if o == 5:
        return image.swapaxes(0, 1)
    if o == 6:
        return np.rot90(image, k=-1)
    if o == 7:
        return image[::-1, ::-1].swapaxes(0, 1)
    return np.rot90(image, k=1)


def _check_orientation(orientation) -> int:
    if isinstance(orientation, (bool, np.bool_)) or not isinstance(orientation, (int, np.integer)):
        raise ValueError(f"orientation must be an EXIF code 1..8, got {orientation!r}")
    if not 1 <= int(orientation) <= 8:
        raise ValueError(f"orientation must be an EXIF code 1..8, got {orientation!r}")
    return int(orientation)


# ---------------------------------------------------------------------------------------------------
# White balance
# ---------------------------------------------------------------------------------------------------


def _valid_mul(m) -> Optional[np.ndarray]:
    if m is None:
        return None
    try:
        a = np.asarray(m, np.float64).ravel()
    except (TypeError, ValueError):
        return None
    if a.size not in (3, 4) or not np.all(np.isfinite(a)) or np.any(a <= 0):
        return None
    return a


def white_balance_multipliers(frame: RawFrame, wb: Union[str, Sequence[float]] = "camera") -> np.ndarray:
    """The four multipliers ``(R, G, B, G2)`` develop applies, normalised so the smallest is 1.

    ``G2`` is the green sharing a row with blue on Bayer sensors (LibRaw's colour 3); it equals ``G`` unless
    four multipliers are given. See :func:`develop` for the meaning of ``wb`` and the fallbacks.

    Raises
    ------
    ValueError
        ``wb`` is neither ``"camera"``, ``"daylight"`` nor 3 or 4 positive finite numbers.
    """
    if isinstance(wb, str):
        key = wb.strip().lower()
        if key not in _WB_NAMES:
            raise ValueError(f"unknown wb {wb!r}: use 'camera', 'daylight' or 3-4 multipliers R,G,B[,G2]")
        mul = None
        if key == "camera":
            mul = _valid_mul(frame.wb_as_shot)
            if mul is None:
                warnings.warn(
                    "wb='camera': the file has no usable as-shot white balance; using daylight",
                    DevelopWarning,
                    stacklevel=3,
                )
        if mul is None:
            mul = _valid_mul(frame.wb_daylight)
        if mul is None and frame.xyz_to_cam is not None:
            try:
                mul = _color.daylight_multipliers(frame.xyz_to_cam)
            except ValueError:
                mul = None
        if mul is None:
            warnings.warn(
                "no daylight white balance known for this camera; using unity multipliers",
                DevelopWarning,
                stacklevel=3,
            )
            mul = np.ones(3)
    else:
        if isinstance(wb, (bytes, Real)) or not hasattr(wb, "__len__"):
            raise ValueError(f"wb must be 'camera', 'daylight' or 3-4 multipliers R,G,B[,G2], got {wb!r}")
        mul = _valid_mul(wb)
        if mul is None:
            raise ValueError(f"wb multipliers must be 3 or 4 positive finite numbers R,G,B[,G2], got {list(wb)!r}")
    if mul.size == 3:
        mul = np.append(mul, mul[1])
    return mul / mul.min()


def _multiplier_map(cfa, mul4: np.ndarray) -> np.ndarray:
    """Per-CFA-position ``(p, p)`` multipliers (G2 = green in a blue row, Bayer only)."""
    pat = cfa.pattern
    tile = mul4[:3][pat].astype(np.float64)
    if cfa.kind is CFA.BAYER:
        for i in range(2):
            if 2 in pat[i]:  # the blue row: its green is G2
                tile[i][pat[i] == 1] = mul4[3]
    return tile


# ---------------------------------------------------------------------------------------------------
# develop
# ---------------------------------------------------------------------------------------------------


_DTYPES = ("float32", "uint16", "uint8")


def _out_dtype(dtype) -> str:
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = None
    if name not in _DTYPES or isinstance(dtype, bool):
        raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
    return name


_FINISHERS: dict = {}
_FINISHERS_LOCK = threading.Lock()


def _finisher(space: str, linear: bool, out_dtype: str):
    """The compiled matrix + clip + curve pass for an output space (one per curve and type, per process)."""
    from .program.finish import CURVES, Finisher

    key = (None if linear else CURVES[space], out_dtype)
    with _FINISHERS_LOCK:
        if key not in _FINISHERS:
            _FINISHERS[key] = Finisher(*key)
        return _FINISHERS[key]


def develop(
    frame: Union[RawFrame, str, os.PathLike],
    *,
    budget: Optional[float] = None,
    kernel: Optional[str] = None,
    wb: Union[str, Sequence[float]] = "camera",
    colorspace: str = "srgb",
    linear: bool = False,
    highlight: str = "clip",
    orient: bool = True,
    models=None,
    dtype="float32",
) -> np.ndarray:
    """Develop a raw frame into a finished ``(H, W, 3)`` image: float32 in ``[0, 1]``, or 8/16-bit codes.

    Parameters
    ----------
    frame
        A :class:`~rawdemosaic.frame.RawFrame`, or a path to a raw file (read with
        :func:`rawdemosaic.read`).
    budget
        Cost budget forwarded to :func:`rawdemosaic.demosaic.demosaic`: the best registry kernel whose
        cost fits is used. ``None`` lets the demosaicker choose its default.
    kernel
        Name of a specific registry kernel, forwarded to the demosaicker (overrides ``budget`` there).
    wb
        White balance: ``"camera"`` (the as-shot multipliers; falls back to daylight with a
        :class:`DevelopWarning` when the file has none), ``"daylight"`` (the camera's daylight multipliers,
        else those implied by its colour matrix, else unity with a warning), or a sequence of 3 or 4
        positive multipliers ``(R, G, B[, G2])`` (``G2``: the Bayer green in the blue row). Multipliers
        are normalised so that the smallest is 1, as dcraw does, so nothing is brightened beyond what
        white balance needs.
    colorspace
        Output space: ``"srgb"``, ``"adobe"`` (Adobe RGB 1998), ``"prophoto"`` (ROMM, D50, Bradford),
        ``"xyz"`` (CIE XYZ, D65) or ``"raw"`` (camera native, no matrix). See :mod:`rawdemosaic.color`.
        A frame without a colour matrix is delivered in camera colours (as LibRaw does) with a warning.
    linear
        Return linear light instead of applying the space's transfer curve (``xyz`` and ``raw`` are
        always linear).
    highlight
        Highlight handling. Only ``"clip"``: each channel is clipped at the sensor's saturation after
        white balance (LibRaw highlight mode 0), so blown areas come out neutral white.
    orient
        Apply the frame's EXIF orientation (1..8) so the image comes out upright; ``False`` returns it
        as stored on the sensor.
    models
        Model/registry location forwarded to the demosaicker (``None``: its default).
    dtype
        ``"float32"`` (default), or ``"uint16"`` / ``"uint8"`` for the rounded codes of full scale 65535 /
        255 that :func:`rawdemosaic.writers.write_image` would write (saves the caller the quantisation).

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3)`` of ``dtype``, C-contiguous, float values in ``[0, 1]`` (``(W, H, 3)`` for
        orientations 5..8).

    Notes
    -----
    Steps 4 and 5 (matrix, clip to ``[0, 1]``, transfer curve, and the rounding to ``dtype``) run as one
    compiled Halide pass (:mod:`rawdemosaic.program.finish`), within a few 1e-6 of the numpy curves of
    :mod:`rawdemosaic.color`; it is built once per curve and type on first use (about a second).

    Raises
    ------
    ValueError
        A keyword has a bad value (the message names it), or the frame's mosaic is not 2-D.
    rawdemosaic.errors.RawDemosaicError
        Reading the file or demosaicking failed (see :func:`rawdemosaic.read`,
        :func:`rawdemosaic.demosaic.demosaic`).
    """
    # ---- validate the options before doing any work
    space = _color.get_space(colorspace)  # ValueError names the colorspace
    if not isinstance(highlight, str) or highlight.strip().lower() not in HIGHLIGHT_MODES:
        raise ValueError(f"unknown highlight mode {highlight!r}: use one of {', '.join(HIGHLIGHT_MODES)}")
    if not isinstance(linear, (bool, np.bool_)):
        raise ValueError(f"linear must be True or False, got {linear!r}")
    if not isinstance(orient, (bool, np.bool_)):
        raise ValueError(f"orient must be True or False, got {orient!r}")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, Real) or not np.isfinite(budget) or budget <= 0):
        raise ValueError(f"budget must be a positive number, got {budget!r}")
    if kernel is not None and not isinstance(kernel, str):
        raise ValueError(f"kernel must be a kernel name (str), got {kernel!r}")
    out_dtype = _out_dtype(dtype)
    if isinstance(wb, str):
        if wb.strip().lower() not in _WB_NAMES:
            raise ValueError(f"unknown wb {wb!r}: use 'camera', 'daylight' or 3-4 multipliers R,G,B[,G2]")
    else:
        if isinstance(wb, (bytes, Real)) or not hasattr(wb, "__len__") or _valid_mul(wb) is None:
            raise ValueError(f"wb must be 'camera', 'daylight' or 3-4 positive multipliers R,G,B[,G2], got {wb!r}")

    if isinstance(frame, (str, os.PathLike)):
        from .raw import read

        frame = read(frame)
    if not isinstance(frame, RawFrame):
        raise ValueError(f"frame must be a RawFrame or a path, got {type(frame).__name__}")
    if orient:
        _check_orientation(frame.orientation)
    mosaic = np.asarray(frame.mosaic)
    if mosaic.ndim != 2:
        raise ValueError(f"frame.mosaic must be 2-D, got shape {mosaic.shape}")
    cfa = as_pattern(frame.cfa)

    # ---- 1-2: white balance and highlight clipping on the mosaic
    mul4 = white_balance_multipliers(frame, wb)
    tile = _multiplier_map(cfa, mul4).astype(np.float32)
    h, w = mosaic.shape
    p = tile.shape[0]
    # one row of multipliers per row phase: every row is then one contiguous product
    rows = np.tile(tile, (1, -(-w // p)))[:, :w]
    wbm = np.empty((h, w), np.float32)
    for i in range(min(p, h)):
        np.multiply(mosaic[i::p], rows[i], out=wbm[i::p], dtype=np.float32, casting="unsafe")
    # clip to [0, 1] with NaN -> 0 (fmax/fmin skip NaN; +inf -> 1, -inf -> 0) in two passes
    np.fmax(wbm, 0.0, out=wbm)
    np.fmin(wbm, 1.0, out=wbm)

    # ---- 3: demosaic
    from .demosaic import demosaic

    rgb = demosaic(wbm, cfa, budget=budget, kernel=kernel, models=models)
    rgb = np.asarray(rgb)
    if rgb.shape != (h, w, 3):
        raise ValueError(f"demosaic returned shape {rgb.shape}, expected {(h, w, 3)}")

    # ---- 4-5: colour matrix, clip, transfer curve (and quantisation): one compiled pass
    if space.name == "raw":
        m = np.eye(3)
    elif frame.xyz_to_cam is None:
        warnings.warn(
            f"the file has no colour matrix; output is camera-native RGB, not {space.name}",
            DevelopWarning,
            stacklevel=2,
        )
        m = np.eye(3)
    else:
        m = _color.camera_to_output(frame.xyz_to_cam, space)
    out = _finisher(space.name, bool(linear), out_dtype)(np.asarray(rgb, np.float32), m)

    # ---- 6: orientation
    if orient:
        out = apply_orientation(out, frame.orientation)
    return np.ascontiguousarray(out)
