"""Fixtures and helpers shared by the ``tests/test_plugins_*.py`` modules (import what you use).

Kept out of ``conftest.py`` (which other test modules own) so that these fixtures apply only to the
plugin tests that import them.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_raws"
DATA = Path(__file__).resolve().parent / "data"


def shared_raw_dir() -> Path:
    env = os.environ.get("RAWDEMOSAIC_DATA")
    base = Path(env) if env else REPO.parent / "shared" / "data"
    return base / "raw"


def shared_raw_files() -> list[Path]:
    d = shared_raw_dir()
    return sorted(p for p in d.iterdir() if p.is_file()) if d.is_dir() else []


@pytest.fixture(scope="module", autouse=False)
def kernel_cache(tmp_path_factory):
    """Compile kernels into a private cache for the module (``$RAWDEMOSAIC_CACHE``)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("RAWDEMOSAIC_CACHE", str(tmp_path_factory.mktemp("kernel-cache")))
    yield
    mp.undo()


def _synthetic_dng(path: Path, pattern, size=(96, 128), orientation: int = 1) -> Path:
    from rawdemosaic.testing import write_dng

    rng = np.random.default_rng(7)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    data = (512 + 3000 * (xx / w) + 2000 * (yy / h) + rng.integers(0, 64, size)).astype(np.uint16)
    xyz_to_cam = np.array([[0.8403, -0.2241, -0.0684], [-0.8155, 1.5421, 0.214], [-0.1427, 0.1489, 0.6001]])
    return write_dng(
        path, data, pattern, black=256, white=16383, xyz_to_cam=xyz_to_cam,
        as_shot_neutral=(0.5, 1.0, 0.6667), orientation=orientation,
    )


@pytest.fixture(scope="module")
def sample_dngs(tmp_path_factory) -> dict[str, Path]:
    """``{"bayer": ..., "xtrans": ...}``: the generated samples in ``sample_raws/``, or small DNGs
    written here when they are absent."""
    out: dict[str, Path] = {}
    tmp = None
    for kind, fname, pattern, size in (("bayer", "bayer_rggb.dng", "RGGB", (96, 128)), ("xtrans", "xtrans.dng", "xtrans", (96, 132))):
        p = SAMPLES / fname
        if not p.is_file():
            tmp = tmp or tmp_path_factory.mktemp("dngs")
            p = _synthetic_dng(tmp / fname, pattern, size)
        out[kind] = p
    return out


@pytest.fixture(scope="module")
def rotated_dng(tmp_path_factory) -> Path:
    """A small Bayer DNG stored with EXIF orientation 6 (display needs a 90 degree clockwise turn)."""
    return _synthetic_dng(tmp_path_factory.mktemp("rot") / "rotated.dng", "RGGB", (64, 96), orientation=6)


def raw_visible_shape(path) -> tuple[int, int]:
    import rawpy

    with rawpy.imread(str(path)) as raw:
        return tuple(raw.raw_image_visible.shape)  # type: ignore[return-value]


def truncated_copy(src: Path, dst: Path, keep: int = 4096) -> Path:
    dst.write_bytes(src.read_bytes()[:keep])
    return dst


def quantize8(img: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(img, 0, 1) * 255).astype(np.uint8)


# ------------------------------------------------------------------------------- entry points


def patch_entry_points(monkeypatch, group: str, specs) -> None:
    """Make ``importlib.metadata.entry_points(group=group)`` return ``specs`` (``(name, "mod:attr")``
    pairs); other groups are answered as usual."""
    real = importlib.metadata.entry_points
    eps = importlib.metadata.EntryPoints(importlib.metadata.EntryPoint(n, v, group) for n, v in specs)

    def fake(**params):
        if params.get("group") == group:
            return eps
        return real(**params)

    monkeypatch.setattr(importlib.metadata, "entry_points", fake)


# targets of fake entry points ---------------------------------------------------------------

CALLS: list[dict] = []


def npy_writer(path, image, *, bits, quality, icc, exif):
    CALLS.append({"path": Path(path), "bits": bits, "quality": quality, "icc": icc, "exif": exif})
    with open(path, "wb") as fh:
        np.save(fh, np.asarray(image))


npy_writer.extensions = (".NPYIMG", "npz2")


def kwargs_writer(path, image, **kwargs):
    Path(path).write_bytes(b"kw")


def lazy_writer(path, image, *, bits, quality, icc, exif):
    """Returns without writing anything."""


def failing_writer(path, image, *, bits, quality, icc, exif):
    raise RuntimeError("disk on fire\nsecond line")


def bad_signature_writer(path, image, *, bits):
    pass


def strict_writer(path, image, *, bits, quality, icc, exif, colour):
    pass


def bad_ext_writer(path, image, **kw):
    pass


bad_ext_writer.extensions = ("../evil",)

NOT_CALLABLE = 42


def explode():
    raise RuntimeError("entry point exploded")


def builtin_registry_dir():
    from rawdemosaic.registry import default_models_dir

    return default_models_dir()  # every name collides with a built-in kernel


def reset_import_caches() -> None:
    importlib.invalidate_caches()
