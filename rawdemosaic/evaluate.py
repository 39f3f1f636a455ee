"""The quality protocol: mosaic a test image, demosaic, clip, CPSNR over 3 channels with a border crop.

Used by the registry builders, the search and the benchmarks, so every number is measured one way.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from .cfa import CFAPattern, as_pattern, mosaic

__all__ = ["cpsnr", "data_dir", "load_images", "evaluate", "image_files", "split_files", "TEST_SETS", "TRAIN_SETS", "VAL_EVERY", "IMAGE_EXTS", "srgb_to_linear", "linear_to_srgb", "encode", "decode"]

TEST_SETS = {"kodak24": "test/kodak24", "mcmaster18": "test/mcmaster18"}
TRAIN_SETS = ("train/urban100", "train/wed100")  # the search's training corpus (its validation split: split_files)
VAL_EVERY = 10
CROP = 16
IMAGE_EXTS = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")


def data_dir() -> Path:
    """The shared data directory: ``$RAWDEMOSAIC_DATA`` or ``../shared/data`` beside the source tree."""
    env = os.environ.get("RAWDEMOSAIC_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def image_files(d: Path) -> list[Path]:
    """The image files (:data:`IMAGE_EXTS`) of directory ``d``, sorted."""
    return sorted(f for f in Path(d).iterdir() if f.suffix.lower() in IMAGE_EXTS)


def load_images(subdir: str | Path, limit: int | None = None) -> list[np.ndarray]:
    """Images of a directory (relative to :func:`data_dir` unless absolute) as float32 RGB in [0, 1]."""
    from PIL import Image

    d = Path(subdir)
    if not d.is_absolute():
        d = data_dir() / d
    files = image_files(d)
    if not files:
        raise FileNotFoundError(f"no images in {d}")
    out = []
    for f in files[:limit]:
        with Image.open(f) as im:
            a = np.asarray(im.convert("RGB"))
        out.append(a.astype(np.float32) / 255.0)
    return out


def cpsnr(a: np.ndarray, ref: np.ndarray, crop: int = CROP) -> float:
    """Colour PSNR (dB, peak 1) over all three channels, ignoring ``crop`` pixels at each border."""
    a = np.clip(np.asarray(a, np.float64), 0, 1)
    ref = np.asarray(ref, np.float64)
    if crop:
        a, ref = a[crop:-crop, crop:-crop], ref[crop:-crop, crop:-crop]
    mse = float(np.mean((a - ref) ** 2))
    return float("inf") if mse == 0 else -10.0 * np.log10(mse)


def srgb_to_linear(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float32)
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(v: np.ndarray) -> np.ndarray:
    v = np.clip(np.asarray(v, np.float32), 0, 1)
    return np.where(v <= 0.0031308, v * 12.92, 1.055 * v ** (1 / 2.4) - 0.055).astype(np.float32)


# program domain -> (encode linear light, decode back): the numpy counterparts of the converter's transfer
# (:class:`rawdemosaic.program.compiler.Kernel` ``linear_io``)
_TRANSFERS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]] = {
    "linear": (np.asarray, np.asarray),
    "srgb": (linear_to_srgb, srgb_to_linear),
    "gamma2": (lambda v: np.sqrt(np.maximum(v, 0)), lambda v: np.square(np.maximum(v, 0))),
}


def _transfer(domain: str) -> tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]:
    if domain not in _TRANSFERS:
        raise ValueError(f"unknown domain {domain!r} (use {', '.join(_TRANSFERS)})")
    return _TRANSFERS[domain]


def encode(linear: np.ndarray, domain: str) -> np.ndarray:
    """Linear light in the encoding of a program ``domain``: itself (``"linear"``), the sRGB curve
    (``"srgb"``) or its square root (``"gamma2"``)."""
    return _transfer(domain)[0](linear)


def decode(v: np.ndarray, domain: str) -> np.ndarray:
    """The inverse of :func:`encode`: linear light from values in the encoding of ``domain``."""
    return _transfer(domain)[1](v)


def evaluate(demosaicker: Callable[[np.ndarray, CFAPattern], np.ndarray], images: Iterable[np.ndarray], cfa: CFAPattern | str, linear: bool = False) -> float:
    """Mean CPSNR of ``demosaicker(mosaic, cfa)`` over ``images`` (sRGB-encoded, [0, 1]).

    With ``linear=True`` the mosaic is taken in linear light (sRGB decoded) and the result re-encoded
    before scoring, which is how a raw converter feeds kernels.
    """
    pat = as_pattern(cfa)
    scores = []
    for img in images:
        src = srgb_to_linear(img) if linear else img
        out = demosaicker(mosaic(src, pat), pat)
        if linear:
            out = linear_to_srgb(out)
        scores.append(cpsnr(out, img))
    return float(np.mean(scores))


def _split_key(f: Path) -> str:
    return hashlib.sha1(f"{f.parent.name}/{f.name}".encode()).hexdigest()


def split_files(files: Iterable[Path]) -> tuple[list[Path], list[Path]]:
    """``(train, val)`` of the training corpus: files ordered by the SHA-1 of ``"<directory>/<file name>"``,
    every :data:`VAL_EVERY`-th of that order (from the first) is validation. It depends on names only, so the
    split is the same on every machine; the search trains on ``train`` and the benchmarks report ``val``."""
    order = sorted((Path(f) for f in files), key=_split_key)
    val = set(order[::VAL_EVERY])
    return sorted(f for f in order if f not in val), sorted(val)
