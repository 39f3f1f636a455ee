"""Self-ensemble programs: reflection geometry, storage and cost, and the compiled kernel against the reference."""

from __future__ import annotations

import numpy as np
import pytest

from rawdemosaic.cfa import CFA, CFAPattern, detect
from rawdemosaic.errors import ProgramError
from rawdemosaic.program.compiler import Kernel
from rawdemosaic.program.ensemble import REFLECTIONS, pattern_offsets, reflection_origin, reflections
from rawdemosaic.program.graph import Program
from rawdemosaic.program.reference import run_reference
from rawdemosaic.program.zoo import exercise
from rawdemosaic.registry import kernels

ENTRIES = {e.name: e for e in kernels(plugins=False)}
PHASES = {CFA.BAYER: [(0, 0), (0, 1), (1, 0), (1, 1)], CFA.XTRANS: [(dy, dx) for dy in range(6) for dx in range(6)]}


@pytest.mark.parametrize("cfa", list(CFA))
@pytest.mark.parametrize("refl", REFLECTIONS)
def test_pattern_offsets_make_the_reflection_canonical(cfa, refl):
    pat, p = cfa.canonical, cfa.period
    sx, sy = refl
    a, b = pattern_offsets(pat, sx, sy)
    y, x = np.mgrid[0 : 3 * p, 0 : 3 * p]
    assert np.array_equal(pat[(sy * y + b) % p, (sx * x + a) % p], pat[y % p, x % p])


def test_pattern_offsets_reject_a_chiral_layout():
    chiral = np.array([[0, 1, 1], [2, 1, 1], [2, 2, 1]])  # no flip of it is a shift of it
    with pytest.raises(ProgramError, match="not the same pattern"):
        pattern_offsets(chiral, -1, 1)


def test_reflection_origin_is_in_phase_and_near_the_axis():
    for lo in range(6):
        for n in (7, 12, 61):
            for a in range(6):
                o = reflection_origin(lo, n, -1, a, 6)
                assert o % 6 == a and 2 * lo + n - 1 - 6 < o <= 2 * lo + n - 1
    assert reflection_origin(2, 9, 1, 3, 6) == 3  # no reflection on this axis: a shift by the offset


def test_sizes_storage_digest_and_cost(tmp_path):
    base = ENTRIES["bayer_malvar"].program()
    with pytest.raises(ProgramError, match="ensemble must be one of"):
        base.with_ensemble(3)
    ens = base.with_ensemble(2, name="malvar_x2")
    assert [reflections(n) for n in (1, 2)] == [((1, 1),), ((1, 1), (-1, -1))]
    assert "ensemble" not in base.to_json() and ens.to_json()["ensemble"] == 2
    assert ens.digest() != base.digest() and base.with_ensemble(1).digest() == base.digest()
    assert ens.cost() == pytest.approx(2 * base.cost() + 6)  # two graphs and the mean of 3 channels
    back = Program.load(ens.save(tmp_path / "malvar_x2.json"))
    assert back.ensemble == 2 and back.digest() == ens.digest()
    assert back.with_domain("srgb").ensemble == 2


@pytest.mark.parametrize(
    "make, n",
    [
        (lambda: ENTRIES["bayer_malvar"].program(), 4),
        (lambda: ENTRIES["xtrans_linear"].program(), 2),
        (lambda: exercise("Conv2D", "xtrans", 1), 4),  # packed layers: the phases a trained kernel tells apart
        (lambda: exercise("Upsample", "bayer", 0), 2),
    ],
)
def test_kernel_matches_reference_in_every_phase_and_size(make, n):
    prog = make().with_ensemble(n)
    k = Kernel(prog, quiet=True)
    rng = np.random.default_rng(n)
    for dy, dx in PHASES[prog.cfa]:
        for h, w in ((30 + dy, 37 + dx), (48, 72)):
            pat = CFAPattern(prog.cfa, dy, dx)
            m = rng.random((h, w)).astype(np.float32)
            assert np.abs(k(m, pat) - run_reference(prog, m, pat)).max() <= 1e-4, (dy, dx, h, w)


@pytest.mark.parametrize("name", ["bg_bayer_bayer_gpu_c112_rc", "xtrans_linear"])
def test_ensemble_is_the_mean_over_reflected_mosaics(name):
    """Away from the border, the kernel equals the plain kernel run on each flipped mosaic (in the phase
    detected there) and flipped back, averaged. (X-Trans has two phases per layout, which a fixed
    interpolator, unlike a trained kernel, treats alike.)"""
    base = ENTRIES[name].program()
    k1, k4 = Kernel(base, quiet=True), Kernel(base.with_ensemble(4), quiet=True)
    h, w, p = 120, 150, base.period
    m = np.random.default_rng(7).random((h, w)).astype(np.float32)
    rev = slice(None, None, -1)
    flips = {(1, 1): (slice(None), slice(None)), (-1, -1): (rev, rev), (-1, 1): (slice(None), rev), (1, -1): (rev, slice(None))}
    for dy, dx in PHASES[base.cfa][:: 7 if p == 6 else 1]:
        pat = CFAPattern(base.cfa, dy, dx)
        layout = pat.pattern[np.arange(h)[:, None] % p, np.arange(w)[None, :] % p]  # the sensor's layout
        want = np.zeros((h, w, 3), np.float32)
        for s in reflections(4):
            f = flips[s]
            want += k1(np.ascontiguousarray(m[f]), detect(layout[f][:p, :p]))[f]
        r = base.receptive_radius()
        assert np.abs(k4(m, pat) - want / 4)[r:-r, r:-r].max() <= 1e-5, (dy, dx)


def test_a_symmetric_filter_is_its_own_ensemble():
    prog = ENTRIES["bayer_bilinear"].program()
    m = np.random.default_rng(2).random((40, 52)).astype(np.float32)
    pat = CFAPattern(CFA.BAYER, 1, 0)
    assert np.abs(Kernel(prog.with_ensemble(4), quiet=True)(m, pat) - Kernel(prog, quiet=True)(m, pat)).max() <= 1e-5


def test_linear_io_averages_before_the_decode():
    from rawdemosaic.evaluate import linear_to_srgb, srgb_to_linear
    from rawdemosaic.program.compiler import DECODE_MAX

    prog = exercise("Conv2D", "xtrans", 0).with_domain("srgb").with_ensemble(2)
    lin = np.random.default_rng(4).random((42, 54)).astype(np.float32) ** 2
    lin16 = np.round(lin * 65535).astype(np.uint16)
    with np.errstate(invalid="ignore"):  # srgb_to_linear evaluates its power branch on negative values too (unused)
        expect = srgb_to_linear(np.minimum(run_reference(prog, linear_to_srgb(lin)), DECODE_MAX))  # float output saturates there
        expect16 = srgb_to_linear(run_reference(prog, linear_to_srgb(lin16.astype(np.float32) / 65535)))
    assert np.abs(Kernel(prog, quiet=True, linear_io=True)(lin) - expect).max() < 1e-4
    u16 = Kernel(prog, "uint16", "uint16", quiet=True, linear_io=True)(lin16)
    assert np.abs(u16.astype(np.int64) - np.round(np.clip(expect16, 0, 1) * 65535)).max() <= 1
