"""Output-format plugins: writers that third-party packages declare under the entry-point group
``rawdemosaic.writers``.

A writer plugin is a callable::

    def write(path, image, *, bits, quality, icc, exif) -> None

``image`` is the finished ``(H, W, 3)`` float32 image in ``[0, 1]``; ``bits`` (8/16/32 as the user asked),
``quality`` (1..100, for lossy formats), ``icc`` (ICC profile bytes or ``None``) and ``exif`` (the dict
:func:`rawdemosaic.writers.write_image` takes, or ``None``) are always passed as keywords; a writer may
also take ``**kwargs``. It must write ``path`` completely or raise.

The extensions it serves are the callable's ``extensions`` attribute (an iterable such as
``(".exr",)``); without one, the entry point's *name* is the extension. In a plugin's
``pyproject.toml``::

    [project.entry-points."rawdemosaic.writers"]
    exr = "mypkg.exr:write_exr"          # serves .exr (or whatever write_exr.extensions lists)

:func:`available_writers` maps each extension (lower case, with its dot) to its writer. A plugin that
fails to import, is not callable, has a signature that cannot take the keywords above, or lists
malformed extensions is reported with a :class:`WriterPluginWarning` and skipped; so is an extension
already claimed by an earlier plugin (entry points are visited in name order, so the result does not
depend on installation order). Nothing a plugin does is fatal to the caller.

rawdemosaic's own formats (TIFF, PNG, JPEG in :mod:`rawdemosaic.writers`) take precedence: callers look
a plugin up only for extensions they do not handle themselves (:func:`write_with_plugin` does not check
this; it is the caller's decision).
"""

from __future__ import annotations

import inspect
import os
import re
import warnings
from pathlib import Path
from typing import Callable, Dict, Optional

__all__ = [
    "ENTRY_POINT_GROUP",
    "REQUIRED_KEYWORDS",
    "WriterPluginWarning",
    "available_writers",
    "get_writer",
    "write_with_plugin",
]

ENTRY_POINT_GROUP = "rawdemosaic.writers"
REQUIRED_KEYWORDS = ("bits", "quality", "icc", "exif")
_EXT_RE = re.compile(r"^\.[a-z0-9][a-z0-9_+-]*$")


class WriterPluginWarning(UserWarning):
    """A writer plugin was skipped (broken, malformed or duplicate)."""


def _normalise_ext(ext) -> str:
    if not isinstance(ext, str):
        raise ValueError(f"extension {ext!r} is not a string")
    e = ext.strip().lower()
    if not e.startswith("."):
        e = "." + e
    if not _EXT_RE.match(e):
        raise ValueError(f"malformed extension {ext!r}")
    return e


def _extensions(name: str, obj) -> list[str]:
    exts = getattr(obj, "extensions", None)
    if exts is None:
        return [_normalise_ext(name)]
    if isinstance(exts, str):
        exts = [exts]
    try:
        out = [_normalise_ext(e) for e in exts]
    except TypeError:
        raise ValueError(f"'extensions' must be an iterable of strings, got {exts!r}") from None
    if not out:
        raise ValueError("'extensions' is empty")
    return out


def _check_signature(obj) -> None:
    if not callable(obj):
        raise TypeError(f"{obj!r} is not callable")
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):  # builtins without a signature: trust them
        return
    params = list(sig.parameters.values())
    has_var_kw = any(p.kind is p.VAR_KEYWORD for p in params)
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    has_var_pos = any(p.kind is p.VAR_POSITIONAL for p in params)
    if len(positional) < 2 and not has_var_pos:
        raise TypeError("a writer must take (path, image) positionally")
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    missing = [k for k in REQUIRED_KEYWORDS if k not in names]
    if missing and not has_var_kw:
        raise TypeError(f"a writer must accept the keywords {', '.join(REQUIRED_KEYWORDS)} (missing: {', '.join(missing)})")
    # any further required keyword-only parameter could never be supplied
    extra = [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.default is p.empty and p.name not in REQUIRED_KEYWORDS]
    if extra:
        raise TypeError(f"a writer may not require other keywords ({', '.join(extra)})")


def available_writers() -> Dict[str, Callable]:
    """Writer plugins installed in the environment: ``{".ext": write}`` (broken ones warned and skipped).

    Entry points are read afresh on each call (cheap; nothing is cached), so installing a plugin takes
    effect without restarting.
    """
    from importlib.metadata import entry_points

    found: Dict[str, Callable] = {}
    owner: Dict[str, str] = {}
    try:
        eps = list(entry_points(group=ENTRY_POINT_GROUP))
    except Exception as exc:  # noqa: BLE001 - a broken distribution's metadata must not be fatal
        warnings.warn(f"rawdemosaic: cannot list writer plugins: {exc}", WriterPluginWarning, stacklevel=2)
        return found
    for ep in sorted(eps, key=lambda e: (e.name, getattr(e, "value", ""))):
        try:
            obj = ep.load()
            _check_signature(obj)
            exts = _extensions(ep.name, obj)
        except Exception as exc:  # noqa: BLE001 - any failure of third-party code is contained
            warnings.warn(
                f"rawdemosaic: writer plugin {ep.name!r} ({getattr(ep, 'value', '?')}) skipped: "
                f"{type(exc).__name__}: {exc}",
                WriterPluginWarning,
                stacklevel=2,
            )
            continue
        for ext in exts:
            if ext in found:
                warnings.warn(
                    f"rawdemosaic: writer plugin {ep.name!r} skipped for {ext}: already served by {owner[ext]!r}",
                    WriterPluginWarning,
                    stacklevel=2,
                )
                continue
            found[ext] = obj
            owner[ext] = ep.name
    return found


def get_writer(path_or_ext) -> Optional[Callable]:
    """The plugin writer for a path's suffix (or an extension such as ``"exr"``/``".exr"``), else ``None``."""
    s = os.fspath(path_or_ext)
    suffix = Path(s).suffix or s
    try:
        ext = _normalise_ext(suffix)
    except ValueError:
        return None
    return available_writers().get(ext)


def write_with_plugin(
    path,
    image,
    *,
    bits: int = 8,
    quality: int = 95,
    icc: Optional[bytes] = None,
    exif: Optional[dict] = None,
) -> Path:
    """Write ``image`` with the plugin serving ``path``'s extension.

    Raises
    ------
    rawdemosaic.errors.OutputError
        No plugin serves the extension, the writer raised (the message names the plugin and the file),
        or it returned without creating ``path``.
    """
    from ..errors import OutputError, RawDemosaicError

    p = Path(path)
    write = get_writer(p)
    if write is None:
        raise OutputError(f"{p}: no writer plugin for the extension {p.suffix or '(none)'!r}")
    try:
        write(p, image, bits=bits, quality=quality, icc=icc, exif=exif)
    except RawDemosaicError:
        raise
    except Exception as exc:  # noqa: BLE001 - report third-party failures as our error, one line
        msg = " ".join(str(exc).split()) or type(exc).__name__
        raise OutputError(f"{p}: writer plugin {getattr(write, '__name__', write)!r} failed: {msg}") from exc
    if not p.exists():
        raise OutputError(f"{p}: writer plugin {getattr(write, '__name__', write)!r} returned without writing the file")
    return p
