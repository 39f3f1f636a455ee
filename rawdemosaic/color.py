"""Output colour spaces: primaries, transfer curves, ICC profiles and the camera -> output matrix.

Five spaces are known (names are case-insensitive; a few aliases are accepted, see :func:`get_space`):

``srgb``
    IEC 61966-2-1 primaries, D65 white, piecewise sRGB curve (linear toe of slope 12.92).
``adobe``
    Adobe RGB (1998): wide-gamut green, D65 white, pure gamma ``563/256`` (~2.2).
``prophoto``
    ProPhoto RGB (ROMM RGB, ISO 22028-2): D50 white, gamma 1.8 with the ROMM linear toe
    (slope 16 below 1/512). Reached from the D65 working data by a Bradford adaptation.
``xyz``
    CIE XYZ with the D65 white (Y = 1 at diffuse white), linear.
``raw``
    Camera-native RGB after white balance: no matrix, linear.

Every matrix here is expressed relative to D65: ``space.xyz_from_rgb`` maps linear output RGB to XYZ (D65),
already including the Bradford D50 -> D65 adaptation for ProPhoto, so that output white (1, 1, 1) maps to
the D65 white for every RGB space. ICC profiles follow the v2 matrix/TRC model with D50 PCS colorants
(Bradford-adapted), as the sRGB and Adobe RGB reference profiles do.
"""

from __future__ import annotations

import datetime as _dt
import struct
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

__all__ = [
    "ColorSpace",
    "SPACES",
    "SPACE_NAMES",
    "get_space",
    "xyz_from_rgb",
    "rgb_from_xyz",
    "encode",
    "decode",
    "camera_to_output",
    "daylight_multipliers",
    "icc_profile",
    "bradford",
    "xy_to_XYZ",
    "D50",
    "D65",
]


# ---------------------------------------------------------------------------------------------------
# Basic colorimetry
# ---------------------------------------------------------------------------------------------------


def xy_to_XYZ(x: float, y: float, Y: float = 1.0) -> np.ndarray:
    """Chromaticity ``(x, y)`` -> XYZ with the given luminance."""
    return np.array([x * Y / y, Y, (1.0 - x - y) * Y / y], np.float64)


D65 = xy_to_XYZ(0.3127, 0.3290)
D50 = xy_to_XYZ(0.3457, 0.3585)
# The ICC PCS illuminant, exactly as the ICC specification encodes it.
_ICC_D50 = np.array([0.9642, 1.0, 0.8249])

_BRADFORD = np.array(
    [
        [0.8951, 0.2664, -0.1614],
        [-0.7502, 1.7135, 0.0367],
        [0.0389, -0.0685, 1.0296],
    ]
)


def bradford(src_white: np.ndarray, dst_white: np.ndarray) -> np.ndarray:
    """3x3 Bradford chromatic adaptation matrix taking XYZ under ``src_white`` to XYZ under ``dst_white``."""
    s = _BRADFORD @ np.asarray(src_white, np.float64)
    d = _BRADFORD @ np.asarray(dst_white, np.float64)
    return np.linalg.inv(_BRADFORD) @ np.diag(d / s) @ _BRADFORD


def _primaries_matrix(r, g, b, white: np.ndarray) -> np.ndarray:
    """RGB -> XYZ matrix of a space given its primaries' chromaticities and its white XYZ."""
    p = np.stack([xy_to_XYZ(*r), xy_to_XYZ(*g), xy_to_XYZ(*b)], axis=1)
    scale = np.linalg.solve(p, white)
    return p * scale[None, :]


# ---------------------------------------------------------------------------------------------------
# Transfer curves (encode: linear -> signal, decode: signal -> linear), all on [0, 1]
# ---------------------------------------------------------------------------------------------------


def _identity(x):
    return np.asarray(x, np.float64) if not isinstance(x, np.ndarray) else x


def _srgb_encode(x):
    x = np.asarray(x)
    xp = np.maximum(x, 0.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(xp, 1.0 / 2.4) - 0.055).astype(x.dtype if x.dtype.kind == "f" else np.float64)


def _srgb_decode(v):
    v = np.asarray(v)
    vp = np.maximum(v, 0.0)
    return np.where(v <= 0.04045, v / 12.92, np.power((vp + 0.055) / 1.055, 2.4)).astype(v.dtype if v.dtype.kind == "f" else np.float64)


_ADOBE_GAMMA = 563.0 / 256.0


def _adobe_encode(x):
    x = np.asarray(x)
    return np.power(np.maximum(x, 0.0), 1.0 / _ADOBE_GAMMA).astype(x.dtype if x.dtype.kind == "f" else np.float64)


def _adobe_decode(v):
    v = np.asarray(v)
    return np.power(np.maximum(v, 0.0), _ADOBE_GAMMA).astype(v.dtype if v.dtype.kind == "f" else np.float64)


_ROMM_ET = 1.0 / 512.0  # linear-toe threshold (ISO 22028-2)


def _romm_encode(x):
    x = np.asarray(x)
    xp = np.maximum(x, 0.0)
    return np.where(x < _ROMM_ET, 16.0 * x, np.power(xp, 1.0 / 1.8)).astype(x.dtype if x.dtype.kind == "f" else np.float64)


def _romm_decode(v):
    v = np.asarray(v)
    vp = np.maximum(v, 0.0)
    return np.where(v < 16.0 * _ROMM_ET, v / 16.0, np.power(vp, 1.8)).astype(v.dtype if v.dtype.kind == "f" else np.float64)


# ---------------------------------------------------------------------------------------------------
# The spaces
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ColorSpace:
    """An output colour space.

    Attributes
    ----------
    name
        Canonical short name (``"srgb"``, ``"adobe"``, ``"prophoto"``, ``"xyz"``, ``"raw"``).
    description
        Human-readable name (also the ICC ``desc``).
    xyz_from_rgb
        ``(3, 3)`` linear RGB -> CIE XYZ (D65-relative; Bradford-adapted for D50 spaces). ``None`` for
        ``raw``.
    native_white
        XYZ of the space's own white (D50 for ProPhoto, D65 otherwise).
    white
        Output coordinates of the D65 scene white: ``(1, 1, 1)`` for RGB spaces, D65 XYZ for ``xyz``.
    gamma
        Pure power of the curve (for ICC ``curv`` with one entry), or ``None`` when the curve is
        piecewise (sampled into the ICC profile) or linear (``1.0``).
    """

    name: str
    description: str
    xyz_from_rgb: Optional[np.ndarray]
    native_white: np.ndarray
    white: np.ndarray
    gamma: Optional[float]
    _encode: Callable
    _decode: Callable

    @property
    def rgb_from_xyz(self) -> Optional[np.ndarray]:
        return None if self.xyz_from_rgb is None else np.linalg.inv(self.xyz_from_rgb)

    @property
    def is_linear(self) -> bool:
        return self.gamma == 1.0

    def encode(self, linear):
        """Linear light -> encoded signal (the space's transfer curve, OETF-like)."""
        return self._encode(linear)

    def decode(self, signal):
        """Encoded signal -> linear light (inverse of :meth:`encode`)."""
        return self._decode(signal)

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return f"ColorSpace({self.name!r})"


_SRGB_M = _primaries_matrix((0.64, 0.33), (0.30, 0.60), (0.15, 0.06), D65)
_ADOBE_M = _primaries_matrix((0.64, 0.33), (0.21, 0.71), (0.15, 0.06), D65)
_PROPHOTO_M_D50 = _primaries_matrix((0.7347, 0.2653), (0.1596, 0.8404), (0.0366, 0.0001), D50)
_PROPHOTO_M = bradford(D50, D65) @ _PROPHOTO_M_D50

SPACES: dict[str, ColorSpace] = {
    "srgb": ColorSpace("srgb", "sRGB IEC61966-2.1", _SRGB_M, D65, np.ones(3), None, _srgb_encode, _srgb_decode),
    "adobe": ColorSpace(
        "adobe", "Adobe RGB (1998) compatible", _ADOBE_M, D65, np.ones(3), _ADOBE_GAMMA, _adobe_encode, _adobe_decode
    ),
    "prophoto": ColorSpace(
        "prophoto", "ProPhoto RGB (ROMM)", _PROPHOTO_M, D50, np.ones(3), None, _romm_encode, _romm_decode
    ),
    "xyz": ColorSpace("xyz", "CIE XYZ (D65)", np.eye(3), D65, D65.copy(), 1.0, _identity, _identity),
    "raw": ColorSpace("raw", "Camera native RGB", None, D65, np.ones(3), 1.0, _identity, _identity),
}
SPACE_NAMES = tuple(SPACES)

_ALIASES = {
    "srgb": "srgb",
    "s-rgb": "srgb",
    "adobe": "adobe",
    "adobergb": "adobe",
    "adobe-rgb": "adobe",
    "adobe_rgb": "adobe",
    "adobergb1998": "adobe",
    "prophoto": "prophoto",
    "prophotorgb": "prophoto",
    "prophoto-rgb": "prophoto",
    "romm": "prophoto",
    "xyz": "xyz",
    "raw": "raw",
    "camera": "raw",
}


def get_space(space) -> ColorSpace:
    """Resolve a :class:`ColorSpace` or a name (``srgb``, ``adobe``, ``prophoto``, ``xyz``, ``raw``).

    Raises
    ------
    ValueError
        Unknown name; the message lists the valid ones.
    """
    if isinstance(space, ColorSpace):
        return space
    if isinstance(space, str):
        key = _ALIASES.get(space.strip().lower())
        if key is not None:
            return SPACES[key]
    raise ValueError(f"unknown colorspace {space!r}: use one of {', '.join(SPACE_NAMES)}")


def xyz_from_rgb(space) -> np.ndarray:
    """Linear RGB -> XYZ (D65) of a space (a copy). ``raw`` has no such matrix (ValueError)."""
    s = get_space(space)
    if s.xyz_from_rgb is None:
        raise ValueError("colorspace 'raw' has no XYZ matrix (it is camera-native)")
    return s.xyz_from_rgb.copy()


def rgb_from_xyz(space) -> np.ndarray:
    """XYZ (D65) -> linear RGB of a space."""
    return np.linalg.inv(xyz_from_rgb(space))


def encode(linear, space):
    """Apply ``space``'s transfer curve to linear values (identity for ``xyz`` and ``raw``)."""
    return get_space(space).encode(linear)


def decode(signal, space):
    """Invert ``space``'s transfer curve."""
    return get_space(space).decode(signal)


# ---------------------------------------------------------------------------------------------------
# Camera -> output
# ---------------------------------------------------------------------------------------------------


def _as_cam_matrix(xyz_to_cam) -> np.ndarray:
    m = np.asarray(xyz_to_cam, np.float64)
    if m.ndim != 2 or m.shape[1] != 3 or m.shape[0] not in (3, 4):
        raise ValueError(f"xyz_to_cam must be a 3x3 matrix, got shape {m.shape}")
    if m.shape[0] == 4:  # LibRaw's 4x3 rgb_xyz_matrix: a fourth (second-green) row, zero for RGB cameras
        m = m[:3]
    if not np.all(np.isfinite(m)) or not np.any(m):
        raise ValueError("xyz_to_cam is empty or not finite")
    return m


def camera_to_output(xyz_to_cam, space="srgb") -> np.ndarray:
    """3x3 matrix from white-balanced camera RGB to linear output ``space``, the dcraw/LibRaw way.

    Follows dcraw's ``cam_xyz_coeff``: ``cam_from_out = xyz_to_cam @ space.xyz_from_rgb``, its rows are
    normalised so that the output white maps to camera ``(1, 1, 1)`` (i.e. white-balanced camera white),
    and the result is pseudo-inverted. For RGB spaces the output white is ``(1, 1, 1)``; for ``xyz`` it is
    the D65 white, so camera white lands on ``XYZ(D65)`` like LibRaw's XYZ output. ``raw`` gives the
    identity.

    Parameters
    ----------
    xyz_to_cam
        ``(3, 3)`` XYZ (D65) -> camera matrix as stored in the file (DNG ``ColorMatrix``/LibRaw
        ``rgb_xyz_matrix``), any scale. A LibRaw-style ``(4, 3)`` array with a zero fourth row is accepted.
    space
        Output colour space name or :class:`ColorSpace`.
    """
    s = get_space(space)
    if s.xyz_from_rgb is None:
        return np.eye(3)
    cam_from_out = _as_cam_matrix(xyz_to_cam) @ s.xyz_from_rgb
    w = cam_from_out @ s.white
    if np.any(np.abs(w) < 1e-12):
        raise ValueError("xyz_to_cam is singular against the output white (a row sums to zero)")
    cam_from_out = cam_from_out / w[:, None]
    return np.linalg.pinv(cam_from_out)


def daylight_multipliers(xyz_to_cam) -> np.ndarray:
    """D65 white-balance multipliers ``(R, G, B)`` implied by a camera matrix (green = 1), as dcraw does.

    They are the reciprocals of the camera's response to the D65 white (``pre_mul = 1 / rowsum``).
    """
    w = _as_cam_matrix(xyz_to_cam) @ SPACES["srgb"].xyz_from_rgb @ np.ones(3)
    if np.any(w <= 0):
        raise ValueError("xyz_to_cam gives a non-positive response to white")
    mul = 1.0 / w
    return mul / mul[1]


# ---------------------------------------------------------------------------------------------------
# ICC v2 profiles (matrix/TRC)
# ---------------------------------------------------------------------------------------------------


def _s15f16(v: float) -> bytes:
    return struct.pack(">i", int(round(float(v) * 65536.0)))


def _xyz_tag(xyz) -> bytes:
    return b"XYZ " + b"\0" * 4 + b"".join(_s15f16(c) for c in xyz)


def _desc_tag(text: str) -> bytes:
    a = text.encode("ascii", "replace") + b"\0"
    # textDescriptionType: ASCII part, empty Unicode part, empty ScriptCode part (67 bytes of zeros)
    return b"desc" + b"\0" * 4 + struct.pack(">I", len(a)) + a + struct.pack(">II", 0, 0) + struct.pack(">HB", 0, 0) + b"\0" * 67


def _text_tag(text: str) -> bytes:
    return b"text" + b"\0" * 4 + text.encode("ascii", "replace") + b"\0"


def _curv_tag(space: ColorSpace, linear: bool, n: int = 1024) -> bytes:
    if linear or space.gamma == 1.0:
        return b"curv" + b"\0" * 4 + struct.pack(">I", 0)  # identity
    if space.gamma is not None:
        g = int(round(space.gamma * 256.0))  # u8Fixed8Number; 563/256 is exact
        return b"curv" + b"\0" * 4 + struct.pack(">IH", 1, g) + b"\0\0"
    x = np.linspace(0.0, 1.0, n)
    y = np.clip(np.round(space.decode(x) * 65535.0), 0, 65535).astype(">u2")
    return b"curv" + b"\0" * 4 + struct.pack(">I", n) + y.tobytes()


def _pad4(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


def icc_profile(space="srgb", linear: bool = False, xyz_to_cam=None) -> bytes:
    """A minimal ICC v2 display (``mntr``) RGB matrix/TRC profile for ``space``.

    Parameters
    ----------
    space
        Colour space name or :class:`ColorSpace`. For ``xyz`` the profile's colorants are the
        Bradford D65 -> D50 adaptation (data are XYZ D65 values). For ``raw`` the colorants come from
        ``xyz_to_cam`` (rows normalised like :func:`camera_to_output`) when given; without a matrix the
        profile is a nominal, uncalibrated one with sRGB primaries.
    linear
        Describe linear-light data (identity TRCs) instead of the space's transfer curve.
    xyz_to_cam
        Camera matrix, only used for ``raw``.

    Returns
    -------
    bytes
        The profile; it parses with ``PIL.ImageCms.ImageCmsProfile(io.BytesIO(b))``.
    """
    s = get_space(space)
    desc = s.description
    if s.name == "raw":
        if xyz_to_cam is not None:
            m = np.linalg.inv(camera_to_output(xyz_to_cam, "srgb"))  # cam_from_srgb (normalised rows)
            xyz_from_rgb_d65 = SPACES["srgb"].xyz_from_rgb @ np.linalg.inv(m)
        else:
            xyz_from_rgb_d65 = SPACES["srgb"].xyz_from_rgb
            desc += " (uncalibrated)"
        white = D65
    else:
        xyz_from_rgb_d65 = s.xyz_from_rgb
        white = s.native_white
    if linear and s.gamma != 1.0:
        desc += " (linear)"
    # PCS colorants: adapt the D65-relative matrix to the ICC D50 PCS white, then nudge so that the
    # colorants sum exactly to the PCS illuminant (as reference profiles do).
    # (For ``xyz`` the device white is D65 XYZ, not (1, 1, 1), so the colorants are the plain adaptation.)
    cols = bradford(D65, _ICC_D50) @ xyz_from_rgb_d65
    if s.name != "xyz":
        cols = cols * (_ICC_D50 / cols.sum(axis=1))[:, None]

    trc = _curv_tag(s, linear)
    tags = [
        (b"desc", _desc_tag(desc)),
        (b"cprt", _text_tag("No copyright, use freely")),
        (b"wtpt", _xyz_tag(white / white[1])),
        (b"rXYZ", _xyz_tag(cols[:, 0])),
        (b"gXYZ", _xyz_tag(cols[:, 1])),
        (b"bXYZ", _xyz_tag(cols[:, 2])),
        (b"rTRC", trc),
        (b"gTRC", trc),
        (b"bTRC", trc),
    ]
    table_len = 4 + 12 * len(tags)
    offset = 128 + table_len
    table = struct.pack(">I", len(tags))
    data = b""
    shared: dict[bytes, tuple[int, int]] = {}
    for sig, body in tags:
        if body in shared:  # rTRC/gTRC/bTRC share one copy
            off, size = shared[body]
        else:
            off, size = offset + len(data), len(body)
            shared[body] = (off, size)
            data += _pad4(body)
        table += sig + struct.pack(">II", off, size)
    size = 128 + table_len + len(data)
    when = _dt.datetime(2024, 1, 1)  # fixed: profiles are byte-for-byte reproducible
    header = (
        struct.pack(">I", size)
        + b"\0\0\0\0"  # preferred CMM
        + struct.pack(">I", 0x02100000)  # version 2.1.0
        + b"mntr"
        + b"RGB "
        + b"XYZ "
        + struct.pack(">6H", when.year, when.month, when.day, when.hour, when.minute, when.second)
        + b"acsp"
        + b"\0\0\0\0"  # platform
        + b"\0\0\0\0"  # flags
        + b"\0\0\0\0"  # manufacturer
        + b"\0\0\0\0"  # model
        + b"\0" * 8  # attributes
        + struct.pack(">I", 0)  # perceptual intent
        + b"".join(_s15f16(c) for c in _ICC_D50)
        + b"\0\0\0\0"  # creator
        + b"\0" * 16  # profile ID (v4 only)
        + b"\0" * 28
    )
    assert len(header) == 128
    return header + table + data
