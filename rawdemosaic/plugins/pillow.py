"""Pillow image plugin: ``Image.open`` develops camera raws with rawdemosaic.

Importing this module registers it::

    import rawdemosaic.plugins.pillow
    from PIL import Image

    im = Image.open("photo.dng")         # also .RAF .CR2 .CR3 .CRW .NEF .ARW .ORF .RW2 .PEF .SRW .KDC ...
    im.mode, im.size                      # ("RGB", (width, height)), upright (EXIF orientation applied)
    im.save("photo.jpg")                  # the sRGB ICC profile travels in im.info["icc_profile"]

Settings
--------
``options`` (a :class:`PillowOptions`) holds the develop settings used for every raw opened afterwards
(they are copied when the file is opened, so changing them does not affect images already open)::

    from rawdemosaic.plugins.pillow import options
    options.budget = 20            # cost budget in ops/pixel (None: the best kernel)
    options.kernel = "bayer_malvar"  # a registry kernel by name (overrides budget)
    options.wb = "daylight"        # "camera" (as shot), "daylight", or (R, G, B[, G2]) multipliers
    options.colorspace = "adobe"   # "srgb", "adobe", "prophoto", "xyz", "raw"
    options.linear = False         # True: no transfer curve
    options.orient = True          # apply the EXIF orientation
    options.models = None          # registry directory (None: built-in + kernel packs)
    options.bits = 8               # only 8: Pillow has no 16-bit-per-channel RGB mode

``bits`` must stay 8: Pillow's RGB mode holds 8 bits per channel and it has no 16-bit RGB image mode
(``"RGB;16"`` exists only as a raw *decoder* mode). For 16-bit or float output use
:func:`rawdemosaic.develop` or the imageio plugin (``iio.imread(path, bits=16)``).

Which files are claimed
-----------------------
See :mod:`rawdemosaic.plugins`: raws are recognised by magic bytes, DNGs and CR2s by their TIFF tags or
signature, and the other TIFF-based raws (NEF, ARW, PEF, SRW, KDC, ...) by the file extension. For any
other TIFF the plugin steps aside (it raises ``SyntaxError`` in ``_open``, which makes Pillow try its
next plugin), so ordinary TIFFs, PNGs and JPEGs open exactly as before. The plugin is moved to the front
of Pillow's plugin order on import so that a DNG is not taken by Pillow's own TIFF plugin (which would
return the raw mosaic or the thumbnail).

Anonymous streams (``Image.open(io.BytesIO(data))``) are supported for formats recognised by content
(DNG, CR2, CR3, CRW, RAF, ORF, RW2, MRW); they are spilled to a temporary file because LibRaw reads
paths.

Errors
------
A file claimed as a raw that cannot be read (truncated, corrupt, unsupported sensor layout) raises
:class:`rawdemosaic.errors.RawReadError` / :class:`~rawdemosaic.errors.UnsupportedCFAError` from
``Image.open`` (the raw is decoded when opened, so the image size is known); development errors
(for instance :class:`~rawdemosaic.errors.BudgetError`) are raised by ``im.load()``. Nothing is
swallowed and no partial image is ever returned.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from typing import Optional, Sequence, Union

from PIL import Image, ImageFile

from . import magic_format, sniff

__all__ = ["options", "PillowOptions", "RawImageFile", "FORMAT", "register"]

FORMAT = "RAWDEMOSAIC"


@dataclass
class PillowOptions:
    """Develop settings for raws opened through Pillow (see the module docstring)."""

    budget: Optional[float] = None
    kernel: Optional[str] = None
    wb: Union[str, Sequence[float]] = "camera"
    colorspace: str = "srgb"
    linear: bool = False
    orient: bool = True
    models: Optional[str] = None
    bits: int = 8

    def check(self) -> None:
        if self.bits != 8:
            raise ValueError(
                f"rawdemosaic.plugins.pillow.options.bits must be 8, got {self.bits!r}: Pillow has no "
                "16-bit RGB mode (use rawdemosaic.develop or the imageio plugin for 16-bit output)"
            )


#: Module-level settings used by every ``Image.open`` of a raw.
options = PillowOptions()


def _accept(prefix: bytes) -> bool:
    return magic_format(prefix) is not None


def _name_of(fp, filename) -> str:
    name = filename or getattr(fp, "name", "")
    if isinstance(name, bytes):
        name = os.fsdecode(name)
    return name if isinstance(name, str) else ""


class RawImageFile(ImageFile.ImageFile):
    """A camera raw, developed with :func:`rawdemosaic.develop` on :meth:`load`."""

    format = FORMAT
    format_description = "Camera raw (developed by rawdemosaic)"

    def _open(self) -> None:
        name = _name_of(self.fp, self.filename)
        self.fp.seek(0)
        head = self.fp.read(16)
        kind = sniff(head, self.fp, name)
        if kind is None:
            raise SyntaxError("not a camera raw")  # Pillow goes on with its next plugin
        opts = replace(options)
        opts.check()
        from ..errors import RawDemosaicError, RawReadError
        from ..raw import read

        try:
            if name and os.path.isfile(name):
                frame = read(name)
            else:
                frame = _read_stream(self.fp, name, read)
        except RawDemosaicError:
            raise
        except Exception as exc:  # anything else must not become Pillow's "try the next plugin"
            raise RawReadError(f"{name or '<stream>'}: cannot read as a camera raw ({type(exc).__name__}: {exc})") from exc
        h, w = frame.shape
        if opts.orient and frame.orientation in (5, 6, 7, 8):
            h, w = w, h
        self._frame = frame
        self._opts = opts
        self._size = (w, h)
        self._mode = "RGB"
        self.tile = []
        self.info.update(_info(frame, kind, opts))

    def load(self):
        if self._im is None:
            if getattr(self, "_frame", None) is None:
                raise OSError("image file is closed")
            from ..develop import develop

            o = self._opts
            img = develop(
                self._frame,
                budget=o.budget,
                kernel=o.kernel,
                wb=o.wb,
                colorspace=o.colorspace,
                linear=o.linear,
                orient=o.orient,
                models=o.models,
                dtype="uint8",
            )
            if img.shape != (self.size[1], self.size[0], 3):
                raise OSError(f"developed image has shape {img.shape}, expected {(self.size[1], self.size[0], 3)}")
            self.im = Image.fromarray(img, "RGB").im
            self._frame = None  # the mosaic is no longer needed
            if self._exclusive_fp and self._close_exclusive_fp_after_loading:
                try:
                    self.fp.close()
                finally:
                    self.fp = None
        return Image.Image.load(self)


def _read_stream(fp, name: str, read):
    """LibRaw reads paths: copy an anonymous stream to a temporary file."""
    from ..errors import RawDemosaicError

    suffix = os.path.splitext(name)[1] if name else ""
    fd, tmp = tempfile.mkstemp(suffix=suffix or ".raw", prefix="rawdemosaic-")
    try:
        with os.fdopen(fd, "wb") as out:
            fp.seek(0)
            shutil.copyfileobj(fp, out)
        try:
            return read(tmp)
        except RawDemosaicError as exc:  # name the stream, not the temporary file
            raise type(exc)(str(exc).replace(tmp, name or "<stream>")) from None
    finally:
        os.unlink(tmp)


def _info(frame, kind: str, opts: PillowOptions) -> dict:
    info: dict = {"raw_format": kind, "cfa": frame.cfa.name}
    for key in ("make", "model", "iso", "exposure_time", "aperture", "focal_length", "timestamp"):
        v = getattr(frame, key, None)
        if v not in (None, ""):
            info[key] = v
    if not opts.orient:
        info["orientation"] = frame.orientation
    try:
        from ..color import icc_profile

        info["icc_profile"] = icc_profile(opts.colorspace, linear=opts.linear, xyz_to_cam=frame.xyz_to_cam)
    except (ImportError, AttributeError, TypeError, ValueError):  # optional metadata only
        pass
    return info


def register() -> None:
    """Register the plugin (done on import; idempotent) and put it first in Pillow's plugin order.

    The raw extensions are deliberately *not* registered with ``Image.register_extensions``: Pillow uses
    that table to choose a *writer*, and rawdemosaic writes no raws, so ``im.save("x.dng")`` keeps
    failing the way it always did (``ValueError: unknown file extension``) instead of with a KeyError.
    Opening does not need it: files are recognised by content (see :mod:`rawdemosaic.plugins`).
    """
    Image.register_open(FORMAT, RawImageFile, _accept)
    if FORMAT in Image.ID:
        Image.ID.remove(FORMAT)
    Image.ID.insert(0, FORMAT)


register()
