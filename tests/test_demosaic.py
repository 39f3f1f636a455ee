"""The public demosaic() API."""

from __future__ import annotations

import numpy as np
import pytest

import rawdemosaic
from rawdemosaic import BudgetError, KernelNotFoundError, UnsupportedCFAError
from rawdemosaic.cfa import CFA, CFAPattern, as_pattern, detect, mosaic


def _scene(h=64, w=72):
    y, x = np.mgrid[0:h, 0:w] / 64.0
    return np.stack([0.5 + 0.4 * np.sin(3 * x), 0.5 + 0.3 * np.cos(2 * y), 0.3 + 0.2 * x * y], -1).astype(np.float32)


@pytest.mark.parametrize("name", ["RGGB", "GRBG", "GBRG", "BGGR"])
def test_every_bayer_phase_by_name_and_array(name):
    img = _scene()
    pat = as_pattern(name)
    m = mosaic(img, pat)
    a = rawdemosaic.demosaic(m, name, kernel="bayer_malvar")
    b = rawdemosaic.demosaic(m, pat.pattern, kernel="bayer_malvar")
    assert np.array_equal(a, b)
    assert np.abs(a - img)[4:-4, 4:-4].mean() < 0.01  # smooth scene: near exact


def test_xtrans_phases():
    img = _scene(72, 84)
    for dy, dx in [(0, 0), (2, 5), (4, 1)]:
        pat = CFAPattern(CFA.XTRANS, dy, dx)
        out = rawdemosaic.demosaic(mosaic(img, pat), pat.pattern)
        assert np.abs(out - img)[6:-6, 6:-6].mean() < 0.02


def test_budget_selects_and_errors():
    m = mosaic(_scene(), "RGGB")
    cheap = rawdemosaic.demosaic(m, "RGGB", budget=10)
    good = rawdemosaic.demosaic(m, "RGGB", budget=1000)
    assert not np.array_equal(cheap, good)
    with pytest.raises(BudgetError, match="available"):
        rawdemosaic.demosaic(m, "RGGB", budget=1)
    with pytest.raises(KernelNotFoundError):
        rawdemosaic.demosaic(m, "RGGB", kernel="xtrans_linear")


def test_uint16_and_dtype():
    img = _scene()
    m16 = np.round(mosaic(img, "RGGB") * 65535).astype(np.uint16)
    out = rawdemosaic.demosaic(m16, "RGGB", dtype=np.uint16)
    assert out.dtype == np.uint16 and out.shape == (64, 72, 3)
    f = rawdemosaic.demosaic(m16, "RGGB")
    assert f.dtype == np.float32 and np.abs(f * 65535 - out).max() <= 1.0


def test_bad_inputs():
    with pytest.raises(ValueError, match="2-D"):
        rawdemosaic.demosaic(np.zeros((8, 8, 3), np.float32), "RGGB")
    with pytest.raises(ValueError, match="too small"):
        rawdemosaic.demosaic(np.zeros((3, 8), np.float32), "RGGB")
    with pytest.raises(ValueError, match="uint16"):
        rawdemosaic.demosaic(np.zeros((8, 8), np.int32), "RGGB")
    with pytest.raises(UnsupportedCFAError):
        rawdemosaic.demosaic(np.zeros((8, 8), np.float32), "RGBW")
    with pytest.raises(UnsupportedCFAError):
        rawdemosaic.demosaic(np.zeros((8, 8), np.float32), np.array([[0, 0], [0, 0]]))


def test_detect_all_phases():
    for kind in CFA:
        p = kind.period
        for dy in range(p):
            for dx in range(p):
                pat = np.roll(kind.canonical, (-dy, -dx), axis=(0, 1))
                got = detect(pat)
                assert got.kind is kind and np.array_equal(got.pattern, pat)
    # a Bayer pattern written at period 4 is still Bayer
    assert detect(np.tile(as_pattern("GBRG").pattern, (2, 2))).name == "GBRG"


def test_new_weights_are_used_in_a_running_process(tmp_path, monkeypatch):
    """The per-process kernel memo notices a registry entry's weights changing (its ``.npz``), not only its graph."""
    from rawdemosaic.program.classical import bayer_bilinear
    from rawdemosaic.registry import add_entry

    monkeypatch.setenv("RAWDEMOSAIC_CACHE", str(tmp_path / "cache"))
    models = tmp_path / "models"
    add_entry(bayer_bilinear(), models, {"kodak24": 30.0})
    m = np.full((16, 16), 0.5, np.float32)
    before = rawdemosaic.demosaic(m, "RGGB", kernel="bayer_bilinear", models=models)
    weights = models / "bayer_bilinear.npz"
    with np.load(weights) as z:
        halved = {k: z[k] * np.float32(0.5) if z[k].dtype.kind == "f" else z[k] for k in z.files}
    np.savez(weights, **halved)
    after = rawdemosaic.demosaic(m, "RGGB", kernel="bayer_bilinear", models=models)
    assert not np.allclose(before, after)
