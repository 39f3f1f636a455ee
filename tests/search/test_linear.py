"""Sparse least-squares linear demosaickers (search/linear.py) and ``rawdemosaic search fit-linear``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rawdemosaic.cfa import CFA, CFAPattern, mosaic
from rawdemosaic.program.compiler import Kernel
from rawdemosaic.program.reference import run_reference
from rawdemosaic.registry import load_registry
from rawdemosaic.search import cli
from rawdemosaic.search.linear import DOMAINS, fit_linear, fit_program, normal_equations, select_taps, training_equations


def _images(n=3, size=40, seed=0):
    """Smooth colour images with some texture (sums of random sinusoids per channel, correlated)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        base = sum(np.sin(2 * np.pi * (rng.uniform(0, 6) * xx + rng.uniform(0, 6) * yy) + rng.uniform(0, 6)) for _ in range(4))
        chans = [0.5 + 0.1 * base + 0.05 * np.sin(2 * np.pi * rng.uniform(0, 3) * xx + k) for k in range(3)]
        out.append(np.clip(np.stack(chans, -1), 0, 1).astype(np.float32))
    return out


def _design(img, cfa, r, t):
    """The least-squares problem of filter ``t`` written out explicitly (independently of the accumulation)."""
    c, j, i = t
    p = cfa.period
    m = mosaic(img.astype(np.float64), CFAPattern(cfa, 0, 0))
    rows, ys = [], []
    for y in range(r, m.shape[0] - r):
        for x in range(r, m.shape[1] - r):
            if y % p == j and x % p == i:
                rows.append(m[y - r : y + r + 1, x - r : x + r + 1].ravel())
                ys.append(img[y, x, c])
    return np.array(rows), np.array(ys, np.float64)


@pytest.mark.parametrize("cfa", [CFA.BAYER, CFA.XTRANS])
def test_normal_equations_match_the_explicit_least_squares_problem(cfa):
    imgs = _images(2, 30)
    ne = normal_equations(imgs, cfa, radius=2)
    assert len(ne.targets) == 2 * cfa.period**2
    for t in ne.targets[:: max(1, len(ne.targets) // 6)]:
        A = np.concatenate([_design(im, cfa, 2, t)[0] for im in imgs])
        y = np.concatenate([_design(im, cfa, 2, t)[1] for im in imgs])
        assert np.allclose(ne.gram[t], A.T @ A) and np.allclose(ne.cross[t], A.T @ y)
        sel = [0, 7, 12, 13, 20]
        w, *_ = np.linalg.lstsq(A[:, sel], y, rcond=None)
        assert np.allclose(ne.weights(t, sel), w, atol=1e-6)
        assert ne.error(t, sel) == pytest.approx(float(((A[:, sel] @ w - y) ** 2).sum()), rel=1e-6, abs=1e-9)


def test_colour_augmented_copies_enter_with_their_weight():
    from rawdemosaic.search.linear import _colour_augmented

    imgs = _images(2, 30, seed=4)
    plain = normal_equations(imgs, CFA.BAYER, radius=2)
    mixed = normal_equations(imgs, CFA.BAYER, radius=2, color=0.25, seed=7)
    augmented = normal_equations([_colour_augmented(im.astype(np.float64), np.random.default_rng([7, n])) for n, im in enumerate(imgs)], CFA.BAYER, radius=2)
    assert mixed.samples == plain.samples
    for t in plain.targets:
        assert np.allclose(mixed.gram[t], 0.75 * plain.gram[t] + 0.25 * augmented.gram[t])
        assert np.allclose(mixed.cross[t], 0.75 * plain.cross[t] + 0.25 * augmented.cross[t])
    assert not np.allclose(augmented.cross[plain.targets[0]], plain.cross[plain.targets[0]])  # it does change the data
    with pytest.raises(ValueError, match="color"):
        normal_equations(imgs, CFA.BAYER, color=1.5)


def test_gamma2_fits_the_square_root_of_linear_light_augmented_before_the_encoding():
    from rawdemosaic.evaluate import srgb_to_linear
    from rawdemosaic.search.linear import _colour_augmented

    imgs = _images(2, 30, seed=4)
    g2 = normal_equations(imgs, CFA.BAYER, radius=2, color=0.25, seed=7, domain="gamma2")
    enc = [np.sqrt(srgb_to_linear(im.astype(np.float64))) for im in imgs]
    aug = [np.sqrt(srgb_to_linear(_colour_augmented(im.astype(np.float64), np.random.default_rng([7, n])))) for n, im in enumerate(imgs)]
    plain, augmented = normal_equations(enc, CFA.BAYER, radius=2), normal_equations(aug, CFA.BAYER, radius=2)
    for t in plain.targets:
        assert np.allclose(g2.gram[t], 0.75 * plain.gram[t] + 0.25 * augmented.gram[t])
        assert np.allclose(g2.cross[t], 0.75 * plain.cross[t] + 0.25 * augmented.cross[t])
    prog = fit_program(g2, select_taps(g2, 12), "g")
    assert prog.domain == "gamma2"
    # the converter's kernel (linear light in and out) is the filter between the square root and the square
    k = Kernel(prog, quiet=True, linear_io=True)
    lin = srgb_to_linear(imgs[0]).astype(np.float32)
    m = mosaic(lin, CFAPattern(CFA.BAYER, 0, 0))
    ref = run_reference(prog, np.sqrt(m))
    assert np.abs(k(m) - ref * np.abs(ref)).max() < 1e-5
    with pytest.raises(ValueError, match="domain must be one of"):
        normal_equations(imgs, CFA.BAYER, domain="linear")


def test_more_taps_fit_better_and_swaps_never_hurt():
    ne = normal_equations(_images(), CFA.BAYER, radius=2)

    def total(s):
        return sum(ne.error(t, v) for t, v in s.items())

    errs = []
    for taps in (8, 16, 24, 40):
        greedy, swapped = select_taps(ne, taps, swaps=False), select_taps(ne, taps)
        assert sum(map(len, swapped.values())) == taps
        assert all(len(v) >= 1 for v in swapped.values())  # no filter is emptied
        assert total(swapped) <= total(greedy) + 1e-12
        errs.append(total(swapped))
    assert all(a > b for a, b in zip(errs, errs[1:]))
    with pytest.raises(ValueError, match="taps"):
        select_taps(ne, 3)


def test_swaps_end_where_no_single_swap_helps():
    ne = normal_equations(_images(seed=2), CFA.BAYER, radius=2)
    sel = select_taps(ne, 16)
    base = sum(ne.error(t, v) for t, v in sel.items())
    for t, v in sel.items():
        for k in v:
            if len(v) == 1:
                continue
            for t2 in ne.targets:
                for k2 in range(len(ne.offsets)):
                    if k2 in sel[t2]:
                        continue
                    trial = {u: list(w) for u, w in sel.items()}
                    trial[t].remove(k)
                    trial[t2].append(k2)
                    assert sum(ne.error(u, w) for u, w in trial.items()) >= base * (1 - 1e-9)


@pytest.mark.parametrize("cfa", [CFA.BAYER, CFA.XTRANS])
def test_the_program_computes_the_fitted_filters(cfa):
    """Running the fitted program reproduces the error the normal equations predict: taps land at the right
    offsets and tile positions, and the sensor's samples pass through."""
    imgs = _images(2, 36, seed=3)
    ne = normal_equations(imgs, cfa, radius=2)
    taps = 3 * cfa.period**2
    support = select_taps(ne, taps)
    prog = fit_program(ne, support, "tiny_lsq")
    assert prog.cost() == pytest.approx(taps / cfa.period**2) and prog.domain == "srgb"
    r, p = 2, cfa.period
    sse = 0.0
    for im in imgs:
        m = mosaic(im, CFAPattern(cfa, 0, 0))
        out = run_reference(prog, m, CFAPattern(cfa, 0, 0)).astype(np.float64)
        own = mosaic(np.stack([np.full(m.shape, k, np.float32) for k in range(3)], -1), CFAPattern(cfa, 0, 0))
        for c in range(3):
            assert np.allclose(out[..., c][own == c], m[own == c])
            d = (out[r:-r, r:-r, c] - im[r:-r, r:-r, c]) * (own[r:-r, r:-r] != c)
            sse += float((d**2).sum())
    assert sse == pytest.approx(sum(ne.error(t, s) for t, s in support.items()), rel=1e-3)
    k = Kernel(prog, quiet=True)
    m = mosaic(imgs[0], CFAPattern(cfa, 0, 0))
    assert np.abs(k(m) - run_reference(prog, m)).max() < 1e-4


def test_fit_linear_entry_adds_a_measured_entry_with_provenance(tmp_path):
    imgs = _images(3, 40, seed=5)
    into = tmp_path / "models"
    into.mkdir()
    # measured on a tiny "test set" given as a directory of PNGs
    from PIL import Image

    tdir = tmp_path / "tiny"
    tdir.mkdir()
    for n, im in enumerate(_images(2, 48, seed=9)):
        Image.fromarray((im * 255).round().astype(np.uint8)).save(tdir / f"{n}.png")
    info = cli.fit_linear_entry("bayer", 5, into=into, sets=[str(tdir)], images=imgs, quiet=True)
    assert info is not None and info.name == "bayer_lsq20" and info.cost == pytest.approx(5)
    (entry,) = load_registry(into)
    prov = entry.provenance
    assert prov["taps"] == 20 and prov["radius"] == 2 and prov["color"] == 0.25 and prov["images"] == 3
    assert "fit-linear --cfa bayer --ops 5 --radius 2 --domain srgb --color 0.25 --seed 0" in prov["command"]
    assert set(entry.quality) == {str(tdir), f"{tdir}_linear"}
    assert json.loads((into / "bayer_lsq20.json").read_text())["nodes"][0]["domain"] == "srgb"
    info = cli.fit_linear_entry("bayer", 5, into=into, sets=[str(tdir)], images=imgs, quiet=True, domain="gamma2", prune=False)
    assert info.name == "bayer_lsq20g" and info.program().domain == "gamma2" and "--domain gamma2" in info.provenance["command"]


@pytest.mark.parametrize("domain", DOMAINS)
def test_every_fit_domain_is_offered_by_the_cli(domain, tmp_path):
    imgs = _images(3, 40, seed=5)
    prog = fit_linear("bayer", 5, images=imgs, domain=domain)
    assert prog.domain == domain and prog.meta["fit"]["domain"] == domain
    assert prog.name == "bayer_lsq20" + {"srgb": "", "gamma2": "g"}[domain]
    assert domain == cli._parser().parse_args(["fit-linear", "--cfa", "bayer", "--ops", "5", "--domain", domain]).domain


def test_fits_of_several_costs_share_one_pass_over_the_images():
    imgs = _images(3, 40, seed=4)
    ne = training_equations("bayer", radius=2, color=0.25, seed=3, images=imgs, ops=[3, 4])
    assert (ne.images, ne.color, ne.seed) == (3, 0.25, 3)
    for ops in (3, 4):
        shared, alone = fit_linear("bayer", ops, normal=ne), fit_linear("bayer", ops, color=0.25, seed=3, images=imgs)
        assert shared.digest() == alone.digest() and shared.meta["fit"] == alone.meta["fit"]
    with pytest.raises(ValueError, match="not xtrans"):
        fit_linear("xtrans", 3, normal=ne)
    with pytest.raises(ValueError, match="taps must be"):  # every cost is checked before the images are read
        training_equations("bayer", ops=[3, 0.5], images=iter(()))


def test_fit_linear_cli_errors_exit_2(tmp_path, capsys):
    assert cli.main(["fit-linear", "--cfa", "bayer", "--ops", "5", "6", "--name", "x", "--into", str(tmp_path)]) == 2
    assert "--name names one entry" in capsys.readouterr().err
    assert cli.main(["fit-linear", "--cfa", "bayer", "--ops", "0.5", "--into", str(tmp_path)]) == 2
    assert "taps must be" in capsys.readouterr().err
    assert cli.main(["fit-linear", "--cfa", "xtrans", "--ops", "3", "--radius", "7", "--into", str(tmp_path)]) == 2
    assert "radius must be" in capsys.readouterr().err
    assert cli.main(["fit-linear", "--cfa", "bayer", "--ops", "5", "--color", "2", "--into", str(tmp_path)]) == 2
    assert "color must be" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
