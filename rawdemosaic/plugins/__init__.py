"""Integrations with other libraries. Plugins are opt-in: importing a plugin module registers it.

==========================================  ==========================================================
``import rawdemosaic.plugins.pillow``       ``PIL.Image.open("x.dng")`` returns the developed image
                                            (mode ``"RGB"``, 8 bits); settings in
                                            ``rawdemosaic.plugins.pillow.options``.
``import rawdemosaic.plugins.imageio``      ``imageio.v3.imread("x.dng")`` (or ``plugin="rawdemosaic"``)
                                            returns the developed image; develop options as keywords.
``rawdemosaic.plugins.writers``             Loader of third-party output writers (entry-point group
                                            ``rawdemosaic.writers``): :func:`~.writers.available_writers`.
==========================================  ==========================================================

Kernel packs (entry-point group ``rawdemosaic.kernels``) need no import: :func:`rawdemosaic.kernels`
finds them (see :mod:`rawdemosaic.registry`).

This package module itself registers nothing and imports neither Pillow nor imageio. It holds the
content sniffing both image plugins share: :func:`sniff` decides from the first bytes of a file (and,
for TIFF-based files, the first IFD and the file name) whether a file is a camera raw. A file is
claimed as a raw when

* its magic bytes are those of a non-TIFF raw format (Fuji RAF, Canon CRW/CR3, Olympus ORF, Panasonic
  RW2/RWL, Minolta MRW, Sigma X3F); or
* it is a TIFF whose first IFD holds a ``DNGVersion`` tag (DNG), or which carries Canon's ``CR``
  signature (CR2); or
* it is a TIFF whose file name ends in a raw extension (:data:`RAW_EXTENSIONS`: NEF, ARW, PEF, SRW,
  KDC, 3FR, ERF, ...): those formats carry no mark of their own, so from an anonymous stream (no file
  name) they are not recognised.

An ordinary TIFF (no DNG tag, no raw extension) is never claimed, so Pillow's and imageio's own TIFF
readers still open it.
"""

from __future__ import annotations

import os
import struct
from typing import IO, Optional

__all__ = ["RAW_EXTENSIONS", "sniff", "sniff_file"]

#: File extensions of the camera raw formats LibRaw reads (lower case, with the dot).
RAW_EXTENSIONS: tuple[str, ...] = (
    ".3fr", ".ari", ".arw", ".bay", ".cap", ".cr2", ".cr3", ".crw", ".cs1", ".dc2", ".dcr", ".dng",
    ".erf", ".fff", ".gpr", ".iiq", ".k25", ".kdc", ".mdc", ".mef", ".mos", ".mrw", ".nef", ".nrw",
    ".orf", ".ori", ".pef", ".ptx", ".pxn", ".qtk", ".raf", ".raw", ".rw2", ".rwl", ".rwz", ".sr2",
    ".srf", ".srw", ".sti", ".x3f",
)

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*")
_DNG_VERSION_TAG = 50706
_MAGIC = (  # (offset, bytes, format label)
    (0, b"FUJIFILM", "RAF"),
    (0, b"II\x1a\x00\x00\x00HEAPCCDR", "CRW"),
    (0, b"IIRO", "ORF"),
    (0, b"IIRS", "ORF"),
    (0, b"MMOR", "ORF"),
    (0, b"IIU\x00", "RW2"),
    (0, b"\x00MRM", "MRW"),
    (0, b"FOVb", "X3F"),
    (4, b"ftypcrx ", "CR3"),
)


def _ext(name) -> str:
    if not name:
        return ""
    if isinstance(name, bytes):
        name = os.fsdecode(name)
    return os.path.splitext(str(name))[1].lower()


def magic_format(head: bytes) -> Optional[str]:
    """The raw format named by non-TIFF magic bytes at the start of ``head``, ``"TIFF"`` for TIFF magic
    (which raws and ordinary images share), else ``None``."""
    for off, magic, label in _MAGIC:
        if head[off : off + len(magic)] == magic:
            return label
    if head[:4] in _TIFF_MAGIC:
        return "TIFF"
    return None


def _tiff_ifd0_has_tag(fp: IO[bytes], tag: int) -> bool:
    """Whether the first IFD of the (classic) TIFF in ``fp`` holds ``tag``; restores the position."""
    pos = fp.tell()
    try:
        fp.seek(0)
        head = fp.read(8)
        if len(head) < 8 or head[:4] not in _TIFF_MAGIC:
            return False
        bo = "<" if head[:2] == b"II" else ">"
        (offset,) = struct.unpack(bo + "I", head[4:8])
        fp.seek(offset)
        raw = fp.read(2)
        if len(raw) < 2:
            return False
        (count,) = struct.unpack(bo + "H", raw)
        if count > 4096:
            return False
        entries = fp.read(12 * count)
        for i in range(len(entries) // 12):
            (t,) = struct.unpack(bo + "H", entries[12 * i : 12 * i + 2])
            if t == tag:
                return True
        return False
    except (OSError, struct.error, ValueError, OverflowError):
        return False
    finally:
        fp.seek(pos)


def sniff(head: bytes, fp: Optional[IO[bytes]] = None, name=None) -> Optional[str]:
    """Decide whether a file is a camera raw we should develop.

    Parameters
    ----------
    head
        The file's first bytes (at least 16).
    fp
        The file, seekable, to look for a ``DNGVersion`` tag in a TIFF's first IFD (position restored).
    name
        The file name, if any (its extension decides for TIFF-based raws without a mark of their own).

    Returns
    -------
    str or None
        A format label (``"DNG"``, ``"CR2"``, ``"RAF"``, ``"TIFF-RAW"`` ...) or ``None`` when the file is
        not a raw (an ordinary TIFF, a PNG, ...).
    """
    fmt = magic_format(head)
    if fmt is None:
        return None
    if fmt != "TIFF":
        return fmt
    if head[8:10] == b"CR":
        return "CR2"
    if fp is not None and _tiff_ifd0_has_tag(fp, _DNG_VERSION_TAG):
        return "DNG"
    ext = _ext(name)
    if ext in RAW_EXTENSIONS:
        return "DNG" if ext == ".dng" else "TIFF-RAW"
    return None


def sniff_file(path) -> Optional[str]:
    """:func:`sniff` for a file on disk."""
    with open(path, "rb") as fp:
        head = fp.read(16)
        return sniff(head, fp, os.fspath(path))
