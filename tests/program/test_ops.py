"""Every op, lowered by Halide inside a whole program, matches the numpy reference in every CFA phase."""

from __future__ import annotations

import numpy as np
import pytest

from rawdemosaic.cfa import CFA, CFAPattern
from rawdemosaic.program.compiler import Kernel
from rawdemosaic.program.graph import Node, Program
from rawdemosaic.program.ops import OPS, Shape, get_op
from rawdemosaic.program.reference import fold_index, run_reference
from rawdemosaic.program.zoo import exercise

PHASES = {CFA.BAYER: [(0, 0), (0, 1), (1, 0), (1, 1)], CFA.XTRANS: [(dy, dx) for dy in range(6) for dx in range(6)]}


@pytest.mark.parametrize("cfa", list(CFA), ids=lambda c: c.value)
@pytest.mark.parametrize("op", sorted(OPS))
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
    for op in ("Conv2D", "Upsample", "ChromaInsert"):
        prog = exercise(op, CFA.BAYER, seed=seed)
        m = np.random.default_rng(seed).random((40, 52)).astype(np.float32)
        pat = CFAPattern(CFA.BAYER, 1, 0)
        assert np.abs(Kernel(prog, quiet=True)(m, pat) - run_reference(prog, m, pat)).max() < 1e-4


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
