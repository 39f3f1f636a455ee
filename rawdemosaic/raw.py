"""Reading camera raws (every format LibRaw reads, through rawpy) into a :class:`RawFrame`.

What :func:`read` does
----------------------
* ``mosaic``: LibRaw's ``raw_image_visible`` as float32, minus the black level of each CFA position
  (``black_level_per_channel`` indexed by LibRaw's colour index at that position), divided by
  ``white_level - black``. Nothing is clipped, nothing is estimated: the levels are what LibRaw reports
  for the file (a DNG whose BlackLevel tag is wrong is read as it says).
* ``cfa``: LibRaw's per-pixel colours of the visible area (``raw_colors_visible``, which is where the
  mosaic starts) mapped through ``color_desc`` to 0 = R, 1 = G, 2 = B (both greens to 1), then
  :func:`rawdemosaic.cfa.detect`. For DNGs the file's own CFAPattern tag is checked as well, because
  LibRaw silently folds layouts it cannot represent (Quad Bayer, 4x4 tiles) into a 2-column pattern.
* ``wb_as_shot``: LibRaw's ``camera_whitebalance`` (for DNGs LibRaw derives it from AsShotNeutral;
  read the tag ourselves if LibRaw did not), ``wb_daylight``: ``daylight_whitebalance``. Both normalised
  so that green is 1, ``None`` when zero/unknown. LibRaw reports a daylight balance of exactly (1, 1, 1)
  as a placeholder when it has no colour data for the camera; with no colour matrix in the file that is
  treated as unknown.
* ``xyz_to_cam``: ``rgb_xyz_matrix[:3]`` when non-zero, else the DNG ColorMatrix for D65
  (CalibrationIlluminant 21), else ColorMatrix2, else ColorMatrix1; ``None`` when there is none.
* ``orientation``: LibRaw's ``sizes.flip`` converted to the EXIF code. LibRaw maps EXIF -> flip with
  ``"50132467"[exif & 7]``; the inverse used here is::

      flip 0 (as stored)                      -> EXIF 1
      flip 1 (mirror left-right)              -> EXIF 2
      flip 2 (mirror top-bottom)              -> EXIF 4
      flip 3 (rotate 180)                     -> EXIF 3
      flip 4 (transpose)                      -> EXIF 5
      flip 5 (rotate 90 CCW to display)       -> EXIF 8
      flip 6 (rotate 90 CW to display)        -> EXIF 6
      flip 7 (transverse)                     -> EXIF 7

* metadata (make/model/ISO/exposure/aperture/focal length/timestamp): rawpy's ``other`` where it
  reports a value, else TIFF/EXIF tags read with tifffile (TIFF-based formats: DNG, CR2, NEF, KDC...),
  make/model of Canon CIFF (CRW) files from the CIFF heap. Best effort: missing metadata never fails.

Errors: :class:`~rawdemosaic.errors.RawReadError` for missing, empty, unreadable, truncated or non-raw
files; :class:`~rawdemosaic.errors.UnsupportedCFAError` for monochrome, Foveon/linear (non-flat) raws and
any layout other than Bayer and X-Trans. Messages are one line and name the file.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import struct
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from . import cfa as _cfa
from .errors import RawReadError, UnsupportedCFAError
from .frame import RawFrame

__all__ = ["read", "read_metadata", "FLIP_TO_EXIF"]

#: LibRaw ``sizes.flip`` code -> EXIF orientation.
FLIP_TO_EXIF = {0: 1, 1: 2, 2: 4, 3: 3, 4: 5, 5: 8, 6: 6, 7: 7}

_ILLUMINANT_D65 = 21
_LETTER_TO_INDEX = {"R": 0, "G": 1, "B": 2}


def read(path: Union[str, os.PathLike]) -> RawFrame:
    """Read a camera raw file into a normalised :class:`RawFrame`.

    Raises
    ------
    RawReadError
        The file is missing, empty, unreadable, truncated, corrupt or not a raw LibRaw reads.
    UnsupportedCFAError
        The sensor is monochrome, not a flat CFA (Foveon, linear DNG), or its layout is neither Bayer nor
        X-Trans.
    """
    name = os.fspath(path)
    _check_file(name)
    try:
        import rawpy
    except ImportError as exc:  # pragma: no cover - rawpy is a hard dependency
        raise RawReadError(f"{name}: rawpy is not installed ({exc})") from None

    tags = _tiff_tags(name)
    if tags.get(256) is not None and not any(k in tags for k in (271, 272, 50706, "cfa")):
        # LibRaw decodes any uncompressed greyscale TIFF as if it were an RGGB raw: refuse plain images.
        raise RawReadError(f"{name}: a plain TIFF image (no camera, DNG or CFA tags), not a camera raw")
    try:
        with rawpy.imread(name) as raw:
            return _build_frame(name, raw, tags)
    except (UnsupportedCFAError, RawReadError):
        raise
    except rawpy.LibRawError as exc:
        raise RawReadError(f"{name}: cannot read as a camera raw ({_libraw_reason(exc)})") from None
    except getattr(rawpy, "NotSupportedError", ()) as exc:
        raise RawReadError(f"{name}: cannot read as a camera raw ({_one_line(exc)})") from None
    except (OSError, ValueError, MemoryError) as exc:
        raise RawReadError(f"{name}: cannot read as a camera raw ({type(exc).__name__}: {_one_line(exc)})") from None


def read_metadata(path: Union[str, os.PathLike]) -> dict:
    """Camera and capture metadata of a raw file without decoding its pixels: ``make``, ``model``, ``iso``,
    ``exposure_time``, ``aperture``, ``focal_length`` and ``timestamp``, as :func:`read` fills them into the
    :class:`RawFrame`. LibRaw only parses the file's headers, so this is cheap (name templates use it).

    Raises
    ------
    RawReadError
        The file is missing, empty, or LibRaw cannot open it.
    """
    name = os.fspath(path)
    _check_file(name)
    import rawpy

    tags = _tiff_tags(name)
    raw = rawpy.RawPy()
    try:
        raw.open_file(name)
        return _metadata(name, raw, tags)
    except rawpy.LibRawError as exc:
        raise RawReadError(f"{name}: cannot read as a camera raw ({_libraw_reason(exc)})") from None
    except (OSError, ValueError, MemoryError) as exc:  # as read() reports them
        raise RawReadError(f"{name}: cannot read as a camera raw ({type(exc).__name__}: {_one_line(exc)})") from None
    finally:
        raw.close()


# --------------------------------------------------------------------------------------------- helpers


def _one_line(exc: BaseException) -> str:
    text = exc.args[0] if exc.args else str(exc)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return " ".join(str(text).split()) or type(exc).__name__


def _libraw_reason(exc: BaseException) -> str:
    reason = _one_line(exc)
    kind = type(exc).__name__
    if kind == "LibRawIOError":
        return f"{reason}: file truncated or unreadable"
    if kind == "LibRawFileUnsupportedError":
        return f"{reason}"
    if kind == "LibRawDataError":
        return f"{reason}: raw data corrupt or truncated"
    return f"{kind}: {reason}"


def _check_file(name: str) -> None:
    p = Path(name)
    if not p.exists():
        raise RawReadError(f"{name}: no such file")
    if p.is_dir():
        raise RawReadError(f"{name}: is a directory, not a raw file")
    try:
        size = p.stat().st_size
        with open(p, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise RawReadError(f"{name}: cannot open ({exc.strerror or exc})") from None
    if size == 0:
        raise RawReadError(f"{name}: file is empty (0 bytes)")


def _build_frame(name: str, raw: Any, tags: dict) -> RawFrame:
    raw_type = getattr(raw.raw_type, "name", str(raw.raw_type))
    if raw_type != "Flat":
        raise UnsupportedCFAError(
            f"{name}: unsupported sensor: raw data is {raw_type.lower()} (Foveon or linear/demosaicked DNG), not a colour filter array"
        )
    num_colors = int(raw.num_colors)
    raw_pattern = raw.raw_pattern
    if raw_pattern is None or num_colors < 3:
        raise UnsupportedCFAError(f"{name}: unsupported sensor: monochrome ({num_colors} colour), no colour filter array")
    desc = raw.color_desc.decode("ascii", "replace") if isinstance(raw.color_desc, bytes) else str(raw.color_desc)

    # The file's own CFA tag (DNG/TIFF-EP): reject layouts LibRaw cannot represent faithfully.
    tag_pattern = _tag_cfa_pattern(tags)
    if tag_pattern is not None:
        if tag_pattern.max(initial=0) > 2:
            raise UnsupportedCFAError(
                f"{name}: unsupported CFA: colours other than red, green and blue (CFAPattern {tag_pattern.tolist()})"
            )
        try:
            _cfa.detect(tag_pattern)
        except UnsupportedCFAError as exc:
            raise UnsupportedCFAError(f"{name}: {exc}") from None

    colors_vis = np.asarray(raw.raw_colors_visible)
    image = raw.raw_image_visible
    if image is None or image.ndim != 2 or image.size == 0:
        raise RawReadError(f"{name}: no raw image data")
    p = int(np.asarray(raw_pattern).shape[0])
    h, w = image.shape
    if h < p or w < p:
        raise RawReadError(f"{name}: raw image of {h}x{w} pixels is smaller than its {p}x{p} CFA tile")
    tile_idx = colors_vis[:p, :p].astype(np.int64)  # LibRaw colour indices at the visible origin
    if not all(np.all(colors_vis[i::p, j::p] == tile_idx[i, j]) for i in range(p) for j in range(p)):
        raise UnsupportedCFAError(f"{name}: unsupported CFA: the colour layout does not repeat with period {p}")
    lut = []
    for ch in range(int(tile_idx.max()) + 1):
        letter = desc[ch] if ch < len(desc) else "?"
        lut.append(_LETTER_TO_INDEX.get(letter, -1))
    tile_rgb = np.array([[lut[c] for c in row] for row in tile_idx.tolist()], dtype=np.int64)
    if (tile_rgb < 0).any():
        used = "".join(sorted({desc[c] if c < len(desc) else "?" for c in tile_idx.ravel().tolist()}))
        raise UnsupportedCFAError(f"{name}: unsupported CFA: filter colours {used!r} are not red/green/blue")
    try:
        pattern = _cfa.detect(tile_rgb)
    except UnsupportedCFAError as exc:
        raise UnsupportedCFAError(f"{name}: {exc}") from None
    # The mosaic is analysed with the family period (a Bayer written by LibRaw as 4x4 is reduced).
    pp = pattern.period
    if p % pp:
        raise UnsupportedCFAError(f"{name}: unsupported CFA: LibRaw tile {p}x{p} does not match a {pp}x{pp} layout")

    # Levels per CFA position.
    bl_channel = [float(v) for v in raw.black_level_per_channel]
    black_tile = np.array(
        [[bl_channel[c] if c < len(bl_channel) else bl_channel[0] for c in row] for row in tile_idx.tolist()],
        dtype=np.float64,
    )
    white = float(raw.white_level)
    if not np.isfinite(white) or np.any(white <= black_tile):
        raise RawReadError(f"{name}: invalid levels (white {white:g} not above black {black_tile.max():g})")
    # (value - black) / (white - black) per CFA position, in place on one float32 copy (strided by the tile
    # where the levels differ): full-size tiles of the levels cost more than the arithmetic
    black32 = black_tile.astype(np.float32)
    scale32 = (1.0 / (white - black_tile)).astype(np.float32)
    mosaic = image.astype(np.float32)
    if (black32 == black32.flat[0]).all() and (scale32 == scale32.flat[0]).all():
        mosaic -= black32.flat[0]
        mosaic *= scale32.flat[0]
    else:
        for i in range(p):
            for j in range(p):
                view = mosaic[i::p, j::p]
                view -= black32[i, j]
                view *= scale32[i, j]

    # Colour.
    xyz_to_cam, matrix_source = _colour_matrix(raw, tags)
    idx = {letter: desc.index(letter) for letter in "RGB" if letter in desc}
    wb_as_shot = _normalise_wb(raw.camera_whitebalance, idx)
    wb_source = "libraw" if wb_as_shot is not None else None
    if wb_as_shot is None:
        neutral = _floats(tags.get(50728))
        if neutral is not None and len(neutral) >= 3 and all(v > 0 for v in neutral[:3]):
            wb_as_shot = _normalise_wb([1.0 / v for v in neutral[:3]], {"R": 0, "G": 1, "B": 2})
            wb_source = "AsShotNeutral" if wb_as_shot is not None else None
    wb_daylight = _normalise_wb(raw.daylight_whitebalance, idx)
    if wb_daylight is not None and xyz_to_cam is None and wb_daylight == (1.0, 1.0, 1.0):
        wb_daylight = None  # LibRaw's placeholder when it knows no colour data

    flip = int(getattr(raw.sizes, "flip", 0) or 0)
    orientation = FLIP_TO_EXIF.get(flip, 1)

    meta = _metadata(name, raw, tags)
    sizes = raw.sizes
    extra = {
        "libraw_flip": flip,
        "raw_pattern": np.array(raw_pattern).tolist(),
        "color_desc": desc,
        "black_level_per_channel": bl_channel,
        "camera_whitebalance": [float(v) for v in raw.camera_whitebalance],
        "daylight_whitebalance": [float(v) for v in raw.daylight_whitebalance],
        "raw_size": (int(sizes.raw_height), int(sizes.raw_width)),
        "margins": (int(sizes.top_margin), int(sizes.left_margin)),
        "matrix_source": matrix_source,
        "wb_source": wb_source,
    }
    return RawFrame(
        path=name,
        mosaic=mosaic,
        cfa=pattern,
        black_level=tuple(float(v) for v in black_tile[:pp, :pp].ravel()),
        white_level=white,
        wb_as_shot=wb_as_shot,
        wb_daylight=wb_daylight,
        xyz_to_cam=xyz_to_cam,
        orientation=orientation,
        extra=extra,
        **meta,
    )


def _normalise_wb(values, idx: dict) -> Optional[tuple[float, float, float]]:
    try:
        vals = [float(values[idx[c]]) for c in "RGB"]
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    if not all(math.isfinite(v) and v > 0 for v in vals):
        return None
    g = vals[1]
    return (vals[0] / g, 1.0, vals[2] / g)


def _colour_matrix(raw: Any, tags: dict) -> tuple[Optional[np.ndarray], Optional[str]]:
    m = np.asarray(raw.rgb_xyz_matrix, dtype=np.float64)
    if m.shape[0] >= 3 and m.shape[1] == 3 and np.any(m[:3] != 0) and np.all(np.isfinite(m[:3])):
        return m[:3].copy(), "libraw"
    candidates = []
    for mtag, itag in ((50721, 50778), (50722, 50779)):
        vals = _floats(tags.get(mtag))
        if vals is None or len(vals) < 9:
            continue
        mat = np.array(vals[:9], dtype=np.float64).reshape(3, 3)
        if not np.any(mat) or not np.all(np.isfinite(mat)):
            continue
        ill = _ints(tags.get(itag))
        candidates.append((mtag, ill[0] if ill else None, mat))
    if not candidates:
        return None, None
    for mtag, ill, mat in candidates:
        if ill == _ILLUMINANT_D65:
            return mat, f"ColorMatrix{1 if mtag == 50721 else 2} (D65)"
    mtag, ill, mat = candidates[-1]
    return mat, f"ColorMatrix{1 if mtag == 50721 else 2} (illuminant {ill})"


# ------------------------------------------------------------------------------------------- metadata


def _metadata(name: str, raw: Any, tags: dict) -> dict:
    out: dict = {"make": "", "model": "", "iso": None, "exposure_time": None, "aperture": None,
                 "focal_length": None, "timestamp": None}  # fmt: skip
    other = None
    try:
        other = raw.other
    except Exception:  # noqa: BLE001 - best effort
        other = None

    def pos(v) -> Optional[float]:
        try:
            f = float(v)
        except (TypeError, ValueError):
            return None
        return f if math.isfinite(f) and f > 0 else None

    if other is not None:
        out["iso"] = pos(getattr(other, "iso_speed", None))
        out["exposure_time"] = pos(getattr(other, "shutter_speed", None))
        out["aperture"] = pos(getattr(other, "aperture", None))
        out["focal_length"] = pos(getattr(other, "focal_length", None))
        ts = getattr(other, "timestamp", None)
        if isinstance(ts, _dt.datetime):
            try:
                t = ts.timestamp()
                out["timestamp"] = t if t > 0 else None
            except (OverflowError, OSError, ValueError):
                pass
    exif = tags.get("exif") or {}

    def tag(code: int, exif_name: str):
        v = tags.get(code)
        return v if v is not None else exif.get(exif_name)

    if out["iso"] is None:
        v = _floats(tag(34855, "ISOSpeedRatings"))
        out["iso"] = pos(v[0]) if v else None
    if out["exposure_time"] is None:
        v = _floats(tag(33434, "ExposureTime"), rational=True)
        out["exposure_time"] = pos(v[0]) if v else None
    if out["aperture"] is None:
        v = _floats(tag(33437, "FNumber"), rational=True)
        out["aperture"] = pos(v[0]) if v else None
    if out["focal_length"] is None:
        v = _floats(tag(37386, "FocalLength"), rational=True)
        out["focal_length"] = pos(v[0]) if v else None
    if out["timestamp"] is None:
        for v in (tag(36867, "DateTimeOriginal"), tags.get(306)):
            t = _parse_exif_time(v)
            if t is not None:
                out["timestamp"] = t
                break
    make = _text(tags.get(271))
    model = _text(tags.get(272))
    if not make and not model:
        mm = _ciff_make_model(name)
        if mm is not None:
            make, model = mm
    if not model:
        model = _text(tags.get(50708))
    out["make"], out["model"] = make, model
    return out


def _text(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bytes):
        v = v.split(b"\0", 1)[0].decode("latin-1", "replace")
    return " ".join(str(v).replace("\0", " ").split())


def _parse_exif_time(v) -> Optional[float]:
    s = _text(v)
    if not s:
        return None
    for fmt in ("%Y:%m:%d %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y:%m:%d"):
        try:
            t = _dt.datetime.strptime(s[:19], fmt).timestamp()  # local time, as LibRaw's mktime
            return t if t > 0 else None
        except (ValueError, OverflowError, OSError):
            continue
    return None


def _floats(v, rational: bool = False) -> Optional[list[float]]:
    """Tag value as floats; flat (num, den, num, den, ...) tuples from tifffile are paired up for
    rational tags (tifffile returns a single rational as a 2-tuple, several as a flat tuple)."""
    if v is None:
        return None
    try:
        if isinstance(v, (bytes, str)):
            return None
        if isinstance(v, (int, float, np.integer, np.floating)):
            return [float(v)]
        vals = [float(x) for x in np.asarray(v).ravel()]
    except (TypeError, ValueError):
        return None
    if not vals:
        return None
    if rational or _looks_rational(v):
        if len(vals) % 2:
            return vals
        out = []
        for a, b in zip(vals[0::2], vals[1::2]):
            out.append(a / b if b else float("nan"))
        return out
    return vals


def _looks_rational(v) -> bool:
    return isinstance(v, _RationalTuple)


class _RationalTuple(tuple):
    """Marks tifffile values of (S)RATIONAL tags so that :func:`_floats` pairs them."""


def _ints(v) -> Optional[list[int]]:
    if v is None:
        return None
    try:
        if isinstance(v, (int, np.integer)):
            return [int(v)]
        return [int(x) for x in np.asarray(v).ravel()]
    except (TypeError, ValueError):
        return None


def _tiff_tags(name: str) -> dict:
    """IFD0 tags (+ the raw IFD's CFA tags, + EXIF) of a TIFF-based file; ``{}`` if not TIFF or on error."""
    try:
        with open(name, "rb") as fh:
            magic = fh.read(4)
    except OSError:
        return {}
    if magic not in (b"II*\0", b"MM\0*"):
        return {}
    out: dict = {}
    try:
        import tifffile

        rational_types = {5, 10}
        with tifffile.TiffFile(name) as tif:
            pages = list(tif.pages)
            if not pages:
                return {}
            first = pages[0]

            def collect(page, codes=None) -> dict:
                d = {}
                for t in page.tags.values():
                    if codes is not None and t.code not in codes:
                        continue
                    try:
                        val = t.value
                    except Exception:  # noqa: BLE001
                        continue
                    dtype = int(getattr(t, "dtype", 0) or 0)
                    if dtype in rational_types and isinstance(val, tuple):
                        val = _RationalTuple(val)
                    d[t.code] = val
                return d

            out.update(collect(first))
            exif = out.pop(34665, None)
            if isinstance(exif, dict):
                out["exif"] = exif
            # The full-resolution raw IFD (NewSubfileType 0) holds the CFA tags; it may be a SubIFD.
            cfa_codes = {33421, 33422, 50710, 50713, 50714, 50717}
            candidates = [first]
            try:
                for page in first.pages or []:
                    candidates.append(page)
            except Exception:  # noqa: BLE001
                pass
            candidates.extend(pages[1:])
            for page in candidates:
                try:
                    sub = collect(page, cfa_codes)
                    subfile = page.tags.get(254)
                    is_main = subfile is None or int(subfile.value) == 0
                except Exception:  # noqa: BLE001
                    continue
                if is_main and 33422 in sub:
                    out["cfa"] = sub
                    break
    except Exception:  # noqa: BLE001 - metadata is best effort
        return out
    return out


def _tag_cfa_pattern(tags: dict) -> Optional[np.ndarray]:
    sub = tags.get("cfa")
    if not sub:
        return None
    dims = _ints(sub.get(33421))
    pat = sub.get(33422)
    if dims is None or len(dims) != 2 or pat is None:
        return None
    vals = list(pat) if isinstance(pat, (bytes, bytearray)) else _ints(pat)
    if vals is None or dims[0] * dims[1] != len(vals) or dims[0] <= 0:
        return None
    arr = np.array(vals, dtype=np.int64).reshape(dims[0], dims[1])
    if dims[0] != dims[1]:
        # make it square so that detect() reports it (non-square tiles are never Bayer/X-Trans here)
        n = dims[0] * dims[1] // math.gcd(dims[0], dims[1])
        arr = np.tile(arr, (n // dims[0], n // dims[1]))
    return arr


def _ciff_make_model(name: str) -> Optional[tuple[str, str]]:
    """Make and model of a Canon CIFF (CRW) file, from its 0x080a record; ``None`` if not CIFF."""
    try:
        with open(name, "rb") as fh:
            head = fh.read(26)
            if len(head) < 14 or head[:2] not in (b"II", b"MM") or head[6:14] != b"HEAPCCDR":
                return None
            fh.seek(0)
            data = fh.read(64 << 20)
    except OSError:
        return None
    e = "<" if data[:2] == b"II" else ">"

    def u16(o: int) -> int:
        return struct.unpack_from(e + "H", data, o)[0]

    def u32(o: int) -> int:
        return struct.unpack_from(e + "I", data, o)[0]

    def heap(start: int, length: int, depth: int) -> Optional[bytes]:
        end = start + length
        if depth > 8 or length < 6 or end > len(data):
            return None
        table = start + u32(end - 4)
        if table + 2 > end:
            return None
        n = u16(table)
        for i in range(n):
            rec = table + 2 + 10 * i
            if rec + 10 > end:
                return None
            typ, size, off = u16(rec), u32(rec + 2), u32(rec + 6)
            if typ == 0x080A and start + off + size <= end:
                return data[start + off : start + off + size]
            if (((typ >> 8) + 8) | 8) == 0x38:
                found = heap(start + off, size, depth + 1)
                if found is not None:
                    return found
        return None

    try:
        hlen = u32(2)
        rec = heap(hlen, len(data) - hlen, 0)
    except struct.error:
        return None
    if not rec:
        return None
    parts = rec.split(b"\0")
    make = parts[0].decode("latin-1", "replace").strip() if parts else ""
    model = parts[1].decode("latin-1", "replace").strip() if len(parts) > 1 else ""
    return make, model
