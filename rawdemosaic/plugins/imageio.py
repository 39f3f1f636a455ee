"""imageio (v3) plugin ``"rawdemosaic"``: read camera raws as developed images.

Importing this module registers it::

    import imageio.v3 as iio
    import rawdemosaic.plugins.imageio

    rgb = iio.imread("photo.dng")                               # (H, W, 3) uint8, sRGB, upright
    rgb = iio.imread("photo.NEF", plugin="rawdemosaic", bits=16, budget=20, wb="daylight")
    lin = iio.imread("photo.raf", bits=32, linear=True, colorspace="xyz")   # float32 in [0, 1]
    iio.improps("photo.dng").shape                              # (H, W, 3), without developing
    iio.immeta("photo.dng")["model"]                            # camera, exposure, CFA, kernel ...

Registration
------------
* ``imageio.config.known_plugins["rawdemosaic"]`` (so ``plugin="rawdemosaic"`` works), moved to the
  front of the plugin order so that the content-based fallback imageio uses for unknown extensions
  tries it first;
* first place in ``imageio.config.known_extensions[ext]`` priority for every raw extension
  (:data:`rawdemosaic.plugins.RAW_EXTENSIONS`: ``.dng``, ``.cr2``, ``.nef``, ``.raf`` ...), so a plain
  ``iio.imread("x.dng")`` picks it.

The plugin claims a file only when it is a camera raw (see :mod:`rawdemosaic.plugins`: magic bytes,
DNG tag, CR2 signature, or a TIFF with a raw extension); for anything else it raises imageio's
``InitializationError`` and imageio goes on with the next plugin, so ordinary TIFFs and PNGs (and a
``.raw`` file that is not a camera raw) still read as before. It does not write.

Keyword arguments
-----------------
``read``, ``iter``, ``properties`` and ``metadata`` take the develop options of
:func:`rawdemosaic.develop` -- ``budget``, ``kernel``, ``wb``, ``colorspace``, ``linear``, ``orient``,
``models`` -- plus ``bits``: 8 (``uint8``, default), 16 (``uint16``) or 32 (``float32`` in [0, 1]).
The same keywords given to ``iio.imopen(..., plugin="rawdemosaic", **options)`` become the defaults of
that file.

``index``: a raw holds one image: ``None`` or ``0`` return it, ``...`` returns it with a batch axis of
length 1, any other index raises ``IndexError``.

Errors
------
Reading happens on first use (``read``/``properties``/``metadata``), so a corrupt or truncated raw raises
:class:`rawdemosaic.errors.RawReadError` (an unsupported sensor
:class:`~rawdemosaic.errors.UnsupportedCFAError`) straight out of ``iio.imread`` -- it is not turned into
"no backend found", and no other plugin is tried on it. Bad options raise ``ValueError`` /
``TypeError``.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterator, Optional

import numpy as np
from imageio import config as _config
from imageio.config import FileExtension, PluginConfig
from imageio.core.request import URI_BYTES, InitializationError, IOMode, Request
from imageio.core.v3_plugin_api import ImageProperties, PluginV3

from . import RAW_EXTENSIONS, sniff

__all__ = ["RawDemosaicPlugin", "PLUGIN_NAME", "register"]

PLUGIN_NAME = "rawdemosaic"

_DEVELOP_KEYS = ("budget", "kernel", "wb", "colorspace", "linear", "orient", "models")
_DEFAULTS: Dict[str, Any] = {
    "budget": None,
    "kernel": None,
    "wb": "camera",
    "colorspace": "srgb",
    "linear": False,
    "orient": True,
    "models": None,
    "bits": 8,
}
_DTYPES = {8: np.dtype(np.uint8), 16: np.dtype(np.uint16), 32: np.dtype(np.float32)}


def _options(base: Dict[str, Any], kwargs: Dict[str, Any]) -> Dict[str, Any]:
    unknown = sorted(set(kwargs) - set(_DEFAULTS))
    if unknown:
        raise TypeError(
            f"rawdemosaic plugin: unknown keyword(s) {', '.join(unknown)} "
            f"(known: {', '.join(_DEFAULTS)})"
        )
    opts = {**base, **kwargs}
    bits = opts["bits"]
    if isinstance(bits, bool) or bits not in _DTYPES:
        raise ValueError(f"bits must be 8 (uint8), 16 (uint16) or 32 (float32), got {bits!r}")
    return opts


class RawDemosaicPlugin(PluginV3):
    """Develops a camera raw with :func:`rawdemosaic.develop` (see the module docstring)."""

    def __init__(self, request: Request, **options: Any) -> None:
        super().__init__(request)
        if request.mode.io_mode != IOMode.read:
            raise InitializationError("the rawdemosaic plugin reads camera raws; it does not write")
        head = request.firstbytes
        name = ("x" + request.extension) if request.extension else None
        fp = request.get_file()
        pos = fp.tell()
        try:
            kind = sniff(head, fp, name)
        finally:
            fp.seek(pos)
        if kind is None:
            raise InitializationError(f"{self._label()} is not a camera raw")
        self._kind = kind
        self._defaults = _options(_DEFAULTS, options)
        self._frame = None

    # ------------------------------------------------------------------ helpers

    def _label(self) -> str:
        r = self._request
        return "<bytes>" if r._uri_type == URI_BYTES else str(r.raw_uri)

    def _get_frame(self):
        if self._frame is None:
            from ..errors import RawDemosaicError
            from ..raw import read

            path = self._request.get_local_filename()
            try:
                self._frame = read(path)
            except RawDemosaicError as exc:
                label = self._label()
                if label != path:  # bytes/stream spilled to a temporary file: name the source
                    raise type(exc)(str(exc).replace(path, label)) from None
                raise
        return self._frame

    @staticmethod
    def _check_index(index) -> None:
        if index is None or index is Ellipsis:
            return
        if isinstance(index, (int, np.integer)) and not isinstance(index, bool) and int(index) == 0:
            return
        raise IndexError(f"a raw file holds a single image: index {index!r} is out of range (use 0 or ...)")

    def _shape(self, orient: bool) -> tuple:
        frame = self._get_frame()
        h, w = frame.shape
        if orient and frame.orientation in (5, 6, 7, 8):
            h, w = w, h
        return (h, w, 3)

    # ------------------------------------------------------------------ v3 API

    def read(self, *, index: Optional[int] = None, **kwargs: Any) -> np.ndarray:
        """The developed image: ``(H, W, 3)`` (``(1, H, W, 3)`` for ``index=...``) of dtype by ``bits``."""
        self._check_index(index)
        opts = _options(self._defaults, kwargs)
        from ..develop import develop

        out = develop(self._get_frame(), **{k: opts[k] for k in _DEVELOP_KEYS}, dtype=_DTYPES[opts["bits"]])
        return out[None] if index is Ellipsis else out

    def iter(self, **kwargs: Any) -> Iterator[np.ndarray]:
        """Yields the one developed image."""
        yield self.read(index=0, **kwargs)

    def write(self, ndimage, **kwargs):  # pragma: no cover - refused in __init__
        raise OSError("the rawdemosaic plugin does not write images")

    def properties(self, index: Optional[int] = None, **kwargs: Any) -> ImageProperties:
        """Shape and dtype of what :meth:`read` returns with the same keywords (nothing is developed)."""
        self._check_index(index)
        opts = _options(self._defaults, kwargs)
        shape = self._shape(bool(opts["orient"]))
        dtype = _DTYPES[opts["bits"]]
        if index is Ellipsis:
            return ImageProperties(shape=(1, *shape), dtype=dtype, n_images=1, is_batch=True)
        return ImageProperties(shape=shape, dtype=dtype)

    def metadata(self, index: Optional[int] = None, exclude_applied: bool = True, **kwargs: Any) -> Dict[str, Any]:
        """Camera and capture metadata of the raw, its CFA, levels, white balance and colour matrix, and
        the kernel the develop options select.

        ``orientation`` is left out when ``exclude_applied`` and the image is rotated upright
        (``orient=True``), as imageio's other plugins do for transforms they apply.
        """
        self._check_index(index)
        opts = _options(self._defaults, kwargs)
        frame = self._get_frame()
        md: Dict[str, Any] = {
            "raw_format": self._kind,
            "make": frame.make,
            "model": frame.model,
            "iso": frame.iso,
            "exposure_time": frame.exposure_time,
            "aperture": frame.aperture,
            "focal_length": frame.focal_length,
            "timestamp": frame.timestamp,
            "cfa": frame.cfa.name,
            "cfa_family": frame.cfa.kind.value,
            "cfa_pattern": frame.cfa.pattern.tolist(),
            "raw_shape": tuple(frame.shape),
            "black_level": tuple(frame.black_level),
            "white_level": frame.white_level,
            "wb_as_shot": frame.wb_as_shot,
            "wb_daylight": frame.wb_daylight,
            "xyz_to_cam": None if frame.xyz_to_cam is None else np.asarray(frame.xyz_to_cam).tolist(),
            "orientation": frame.orientation,
            "colorspace": opts["colorspace"],
            "linear": opts["linear"],
        }
        if exclude_applied and opts["orient"]:
            del md["orientation"]
        from ..demosaic import choose

        info = choose(frame.cfa, budget=opts["budget"], kernel=opts["kernel"], models=opts["models"])
        md.update(kernel=info.name, kernel_cost=info.cost, kernel_source=info.source)
        if frame.extra:
            md["extra"] = dict(frame.extra)
        return md

    def close(self) -> None:
        self._frame = None
        self._request.finish()


def register() -> None:
    """Register the plugin with imageio (done on import; idempotent)."""
    plugins = _config.known_plugins
    plugins[PLUGIN_NAME] = PluginConfig(
        name=PLUGIN_NAME, class_name="RawDemosaicPlugin", module_name=__name__
    )
    # put it first for imageio's try-every-plugin fallback (it refuses non-raws cheaply)
    others = [(k, v) for k, v in plugins.items() if k != PLUGIN_NAME]
    ours = plugins[PLUGIN_NAME]
    plugins.clear()
    plugins[PLUGIN_NAME] = ours
    plugins.update(others)

    for ext in RAW_EXTENSIONS:
        formats = _config.known_extensions.setdefault(ext, [])
        if not formats:
            fe = FileExtension(extension=ext, priority=[], name="Camera raw")
            formats.append(fe)
            _config.extension_list.append(fe)
        for fe in formats:
            if PLUGIN_NAME in fe.priority:
                fe.priority.remove(PLUGIN_NAME)
            fe.priority.insert(0, PLUGIN_NAME)


register()
