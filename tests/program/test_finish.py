"""The compiled finishing pass (matrix, clip, curve, rounding) against the numpy curves of rawdemosaic.color."""

from __future__ import annotations

import numpy as np
import pytest

from rawdemosaic import color
from rawdemosaic.program.finish import CURVES, Curve, Finisher
from rawdemosaic.writers import quantize

_M = np.array([[1.6, -0.5, -0.1], [-0.2, 1.4, -0.2], [0.05, -0.45, 1.4]])


def _ramp() -> np.ndarray:
    """Every decade down to 1e-9 and a fine linear ramp, on all three channels, plus out-of-range values."""
    x = np.concatenate([np.geomspace(1e-9, 1, 20_000), np.linspace(0, 1, 20_001), [-0.5, -1e-7, 1.0 + 1e-7, 3.0]])
    return np.repeat(x.astype(np.float32)[None, :, None], 3, axis=2)


def test_every_output_space_has_its_curve():
    assert set(CURVES) == set(color.SPACE_NAMES)
    for name, curve in CURVES.items():
        assert (curve is None) == color.get_space(name).is_linear


@pytest.mark.parametrize("space", color.SPACE_NAMES)
def test_curve_matches_the_numpy_curve(space):
    a = _ramp()
    got = Finisher(CURVES[space], quiet=True)(a, np.eye(3))
    want = color.get_space(space).encode(np.clip(a.astype(np.float64), 0.0, 1.0))
    assert got.dtype == np.float32 and got.shape == a.shape and got.flags.c_contiguous
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)  # fast_pow: about 1e-6 measured
    assert got.min() >= 0.0 and got.max() <= 1.0


def test_matrix_and_clip_match_numpy():
    rng = np.random.default_rng(3)
    a = (rng.random((37, 53, 3)) * 1.4 - 0.2).astype(np.float32)
    got = Finisher(None, quiet=True)(a, _M)
    want = np.clip(np.einsum("ck,hwk->hwc", _M, a.astype(np.float64)), 0.0, 1.0)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    # rows of the matrix are output channels: a pure channel swap moves the data
    swap = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], float)
    np.testing.assert_array_equal(Finisher(None, quiet=True)(np.clip(a, 0, 1), swap), np.clip(a, 0, 1)[..., ::-1])


@pytest.mark.parametrize("out_dtype", ["uint8", "uint16"])
@pytest.mark.parametrize("space", ["srgb", "prophoto", "raw"])
def test_codes_are_the_writers_rounding_of_the_float_output(space, out_dtype):
    rng = np.random.default_rng(4)
    a = (rng.random((61, 45, 3)) * 1.2 - 0.1).astype(np.float32)
    f = Finisher(CURVES[space], quiet=True)(a, _M)
    q = Finisher(CURVES[space], out_dtype, quiet=True)(a, _M)
    assert q.dtype == np.dtype(out_dtype)
    np.testing.assert_array_equal(q, quantize(f, 8 if out_dtype == "uint8" else 16))


def test_strided_views_and_odd_sizes():
    rng = np.random.default_rng(5)
    big = rng.random((20, 30, 3)).astype(np.float32)
    view = big[3:14, 5:6]  # 11 x 1: narrower than a vector, rows strided
    fin = Finisher(CURVES["srgb"], quiet=True)
    np.testing.assert_array_equal(fin(view, _M), fin(np.ascontiguousarray(view), _M))
    assert fin(np.zeros((0, 4, 3), np.float32), _M).shape == (0, 4, 3)


def test_bad_arguments_are_refused():
    fin = Finisher(None, quiet=True)
    with pytest.raises(ValueError, match="float32"):
        fin(np.zeros((2, 2, 3)), _M)
    with pytest.raises(ValueError, match="float32"):
        fin(np.zeros((2, 2, 4), np.float32), _M)
    with pytest.raises(ValueError, match="matrix"):
        fin(np.zeros((2, 2, 3), np.float32), np.eye(2))
    with pytest.raises(ValueError, match="matrix"):
        fin(np.zeros((2, 2, 3), np.float32), np.full((3, 3), np.nan))
    with pytest.raises(ValueError, match="out_dtype"):
        Finisher(Curve(2.2), "int32")
