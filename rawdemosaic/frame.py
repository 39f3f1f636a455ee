"""The in-memory raw frame: what :func:`rawdemosaic.read` returns and :func:`rawdemosaic.develop` consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from .cfa import CFAPattern

__all__ = ["RawFrame", "camera_name"]


@dataclass(frozen=True, eq=False)
class RawFrame:
    """A decoded camera raw, normalised and described.

    Attributes
    ----------
    path
        File it was read from (``None`` for frames built in memory).
    mosaic
        ``(H, W)`` float32 visible area, black-subtracted per CFA position and divided by
        ``white - black``: 0 is black, 1 is the sensor's clipping point (values may exceed 1 slightly
        or dip below 0 from noise; nothing is clipped here).
    cfa
        Detected layout, aligned to ``mosaic[0, 0]``.
    wb_as_shot, wb_daylight
        White-balance multipliers ``(R, G, B)`` normalised so that green is 1 (``None`` if unknown).
    xyz_to_cam
        ``(3, 3)`` matrix from CIE XYZ (D65 illuminant) to camera-native RGB, rows R, G, B, exactly as the
        file states it (LibRaw's ``rgb_xyz_matrix`` or the DNG ``ColorMatrix`` tag for D65, not normalised).
        ``None`` if the file carries no usable matrix.
    orientation
        EXIF orientation code 1..8 (1 = as stored).
    """

    path: Optional[str]
    mosaic: np.ndarray
    cfa: CFAPattern
    black_level: tuple[float, ...] = (0.0,)
    white_level: float = 1.0
    wb_as_shot: Optional[tuple[float, float, float]] = None
    wb_daylight: Optional[tuple[float, float, float]] = None
    xyz_to_cam: Optional[np.ndarray] = None
    orientation: int = 1
    make: str = ""
    model: str = ""
    iso: Optional[float] = None
    exposure_time: Optional[float] = None
    aperture: Optional[float] = None
    focal_length: Optional[float] = None
    timestamp: Optional[float] = None
    extra: dict = field(default_factory=dict)

    @property
    def camera(self) -> str:
        """Make and model for people to read (see :func:`camera_name`); ``""`` if both are unknown."""
        return camera_name(self.make, self.model)

    @property
    def shape(self) -> tuple[int, int]:
        return self.mosaic.shape  # type: ignore[return-value]


def camera_name(make: str, model: str) -> str:
    """``"make model"``, without repeating the maker: many cameras' model tag starts with (a word of) the make,
    e.g. Canon's ``"Canon PowerShot S40"`` or Kodak's ``"Kodak DC50"`` under ``"Eastman Kodak Company"``."""
    make, model = " ".join(make.split()), " ".join(model.split())
    first = model.split(" ", 1)[0].lower() if model else ""
    if first and first in make.lower().split():
        return model
    return " ".join(x for x in (make, model) if x)
