"""The quality protocol's helpers on tiny synthetic inputs."""

from __future__ import annotations

import numpy as np
import pytest

from rawdemosaic.evaluate import cpsnr, decode, encode, evaluate, linear_to_srgb, srgb_to_linear


def test_cpsnr_crops_the_border_and_clips():
    ref = np.full((40, 40, 3), 0.5)
    a = ref.copy()
    a[:16] = 0.0  # only in the cropped border
    assert cpsnr(a, ref) == float("inf")
    a[20, 20, 0] += 0.1  # one error of 0.1 in 8 * 8 * 3 values
    assert cpsnr(a, ref) == pytest.approx(-10 * np.log10(0.01 / (8 * 8 * 3)))
    assert cpsnr(ref + 1.0, np.ones_like(ref), crop=0) == float("inf")  # clipped to [0, 1] first


def test_srgb_curves_invert_each_other():
    v = np.linspace(0, 1, 1001, dtype=np.float32)
    assert np.abs(linear_to_srgb(srgb_to_linear(v)) - v).max() < 1e-6
    assert srgb_to_linear(np.float32(0.5)) == pytest.approx(0.21404, abs=1e-5)  # the standard's value


@pytest.mark.parametrize("domain", ["linear", "srgb", "gamma2"])
def test_domain_encodings_invert_each_other(domain):
    lin = np.linspace(0, 1, 1001, dtype=np.float32)
    enc = encode(lin, domain)
    assert np.abs(decode(enc, domain) - lin).max() < 1e-6
    expect = {"linear": lin, "srgb": linear_to_srgb(lin), "gamma2": np.sqrt(lin)}[domain]
    assert np.array_equal(enc, expect)


def test_unknown_domain_is_refused():
    with pytest.raises(ValueError, match="unknown domain 'gamma22'"):
        encode(np.zeros(3), "gamma22")
    with pytest.raises(ValueError, match="unknown domain"):
        decode(np.zeros(3), "log")


def test_evaluate_scores_what_the_demosaicker_returns():
    rng = np.random.default_rng(0)
    imgs = [rng.random((40, 44, 3)).astype(np.float32) for _ in range(2)]
    truth = iter(imgs)  # a demosaicker that knows the answer
    assert evaluate(lambda m, pat: next(truth), imgs, "bayer") == float("inf")
    truth_lin = iter([srgb_to_linear(i) for i in imgs])
    assert evaluate(lambda m, pat: next(truth_lin), imgs, "bayer", linear=True) > 60  # re-encoded before scoring
    grey = evaluate(lambda m, pat: np.full(m.shape + (3,), 0.5, np.float32), imgs, "bayer")
    assert 0 < grey < 20
