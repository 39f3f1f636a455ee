"""Every op, lowered by Halide inside a whole program, matches the numpy reference in every CFA phase."""

from __future__ import annotations

import numpy as np
import pytest

from rawdemosaic.cfa import CFA, CFAPattern
from rawdemosaic.program.compiler import Kernel
from rawdemosaic.program.graph import Node, Program
from rawdemosaic.program.ops import OPS, Shape, get_op
from rawdemosaic.program.reference import fold_index, run_reference
from rawdemosaic.program.zoo import OP_CFAS, exercise

PHASES = {CFA.BAYER: [(0, 0), (0, 1), (1, 0), (1, 1)], CFA.XTRANS: [(dy, dx) for dy in range(6) for dx in range(6)]}


@pytest.mark.parametrize("op,cfa", OP_CFAS, ids=lambda v: getattr(v, "value", v))
def test_halide_matches_reference(op, cfa):
    prog = exercise(op, cfa, seed=0)
    assert op in {n.op for n in prog.live_nodes()}
    k = Kernel(prog, quiet=True)
    rng = np.random.default_rng(1)
    for dy, dx in PHASES[cfa]:
        pat = CFAPattern(cfa, dy, dx)
        m = rng.random((37 + dy, 45 + dx)).astype(np.float32)
        ref = run_reference(prog, m, pat)
        out = k(m, pat)
        assert out.shape == ref.shape == (*m.shape, 3)
        assert np.abs(out - ref).max() <= 1e-4, (op, dy, dx)


@pytest.mark.parametrize("seed", [1, 2])
def test_variants_match_reference(seed):
    # odd seeds switch Conv2D to dilation 2 without bias and ChromaInsert to direct mode
    # ResidualChroma divides by a local variance (plus eps): where a random green is nearly flat, the
    # rounding of its convolution (summed in another order by Halide) is amplified by up to |G| / eps
    for op, tol in (("Conv2D", 1e-4), ("Upsample", 1e-4), ("ChromaInsert", 1e-4), ("ResidualChroma", 5e-4)):
        prog = exercise(op, CFA.BAYER, seed=seed)
        m = np.random.default_rng(seed).random((40, 52)).astype(np.float32)
        pat = CFAPattern(CFA.BAYER, 1, 0)
        assert np.abs(Kernel(prog, quiet=True)(m, pat) - run_reference(prog, m, pat)).max() < tol, op


def test_every_op_is_exercised_and_documented():
    for name, op in OPS.items():
        assert op.name == name and op.__doc__, name
        exercise(name, CFA.BAYER)


def _conv(op, params, cin=4, scale=2):
    nodes = (Node("mosaic", "Input"),)
    o = get_op(op)
    p = o.params(params)
    ins = [Shape(cin, scale)]
    out = o.infer(ins, p, 2)
    rng = np.random.default_rng(0)
    w = {k: rng.standard_normal(s).astype(np.float32) + 3 for k, s in o.weight_shapes(ins, p).items()}
    return o.cost(ins, out, p, w), nodes


def test_conv_costs_count_each_tap_once():
    # Conv1D: k taps per input channel of the group, per output channel (+ bias): counted once
    assert _conv("Conv1D", {"out_channels": 6, "kernel": 5, "groups": 2}, cin=4)[0] == 6 * 2 * 5 + 6
    assert _conv("Conv2D", {"out_channels": 6, "kernel": 3, "bias": False}, cin=4)[0] == 6 * 4 * 9
    assert _conv("Conv1x1", {"out_channels": 8, "groups": 4}, cin=8)[0] == 8 * 2 + 8
    assert _conv("SeparableConv", {"out_channels": 8}, cin=4)[0] == 4 * 9 + 8 * 4 + 8


def test_program_cost_is_per_full_resolution_pixel():
    from rawdemosaic.program.classical import bayer_bilinear

    prog = bayer_bilinear()
    costs = prog.node_costs()
    # green: 4 taps at each of the 2 non-green tile positions; chroma: 2 + 2 + 4 taps per colour;
    # all at scale 2, so divided by 4 per output pixel
    assert costs["green_pred"] == pytest.approx(8 / 4)
    assert costs["chroma_pred"] == pytest.approx(16 / 4)
    assert prog.cost() == pytest.approx(6.0)


def test_zero_weights_cost_nothing():
    prog = exercise("Conv1x1", CFA.BAYER)
    before = prog.cost()
    prog.weights["h.weight"][:] = 0
    prog._shapes = None
    assert prog.cost() == pytest.approx(before - 8 * 4 / 4)  # 8 outputs x 4 inputs (2 groups of 8 -> 4) at scale 2


def test_fold_keeps_phase_and_range():
    for p in (2, 6):
        for lo, n in ((0, 20), (3, 25)):
            x = np.arange(lo - 3 * p, lo + n + 3 * p)
            f = fold_index(x, lo, n, p)
            assert f.min() >= lo and f.max() < lo + n
            assert np.all((f - x) % p == 0)
            inside = (x >= lo) & (x < lo + n)
            assert np.array_equal(f[inside], x[inside])


def _residual_chroma_program(eps: float, radius: int = 1, prior: float = 1.0) -> Program:
    """The bilinear program with its red and blue from ResidualChroma (its green stays bilinear)."""
    from rawdemosaic.program.classical import bayer_bilinear

    base = bayer_bilinear()
    out = base.node(base.output)
    nodes = tuple(n for n in base.nodes if n.id != out.id) + (Node(out.id, "ResidualChroma", out.inputs[:2], {"radius": radius, "eps": eps, "prior": prior}),)
    live = Program("rc", base.cfa, nodes, out.id, {}, {})
    keep = {n.id for n in live.live_nodes()}
    return Program("rc", base.cfa, tuple(n for n in nodes if n.id in keep), out.id, {k: v for k, v in base.weights.items() if k.split(".")[0] in keep})


def test_residual_chroma_without_correlation_is_bilinear():
    # a huge eps holds the fitted slope at its prior; at zero red and blue are the bilinear interpolation of their samples
    from rawdemosaic.program.classical import bayer_bilinear

    m = np.random.default_rng(4).random((40, 48)).astype(np.float32)
    for dy, dx in PHASES[CFA.BAYER]:
        pat = CFAPattern(CFA.BAYER, dy, dx)
        rc = Kernel(_residual_chroma_program(1e6, prior=0.0), quiet=True)(m, pat)
        bil = run_reference(bayer_bilinear(), m, pat)
        assert np.abs(rc - bil).max() < 1e-5


def test_residual_chroma_recovers_a_local_linear_model():
    # given the true green, red = 0.6 green + 0.1 and blue = 1.3 green - 0.2 are recovered at every pixel
    # of a random texture, which the bilinear interpolation of the samples is far from
    from rawdemosaic.program.ops import RefContext

    rng = np.random.default_rng(5)
    g = rng.random((1, 40, 48)).astype(np.float32)
    truth = {0: 0.6 * g[0] + 0.1, 2: 1.3 * g[0] - 0.2}
    pattern = CFA.BAYER.canonical
    cmap = np.tile(pattern, (20, 24))
    m = np.select([cmap == 0, cmap == 1, cmap == 2], [truth[0], g[0], truth[2]])[None].astype(np.float32)
    op = get_op("ResidualChroma")
    fit = op.reference([m, g], op.params({"eps": 1e-9}), {}, RefContext(pattern, 0, 0))
    loose = op.reference([m, g], op.params({"eps": 1e6, "prior": 0.0}), {}, RefContext(pattern, 0, 0))
    inner = (slice(8, -8), slice(8, -8))
    for ch in (0, 2):
        assert np.abs(fit[ch] - truth[ch])[inner].max() < 1e-4
        assert np.abs(loose[ch] - truth[ch])[inner].mean() > 0.05
    assert np.array_equal(fit[1], g[0])


def test_residual_chroma_serves_bayer_only():
    from rawdemosaic.errors import ProgramError

    nodes = (Node("mosaic", "Input"), Node("rgb", "ResidualChroma", ("mosaic", "mosaic")))
    with pytest.raises(ProgramError, match="Bayer"):
        Program("x", CFA.XTRANS, nodes, "rgb").shapes()
    for bad in ({"radius": 0}, {"eps": 0.0}, {"radius": 1.5}, {"eps": float("inf")}, {"prior": "1"}, {"eps": 1e-50}, {"eps": 1e39},
                {"eps": 1e30, "prior": 1e10}, {"prior": float("nan")}):  # float32: zero, inf, inf, nan
        with pytest.raises(ProgramError, match="ResidualChroma"):
            Program("x", CFA.BAYER, (nodes[0], Node("rgb", "ResidualChroma", ("mosaic", "mosaic"), bad)), "rgb").shapes()
