"""Numpy reference evaluation of programs: slow, obvious, and the ground truth the Halide kernels match.

The mosaic is first extended beyond its borders with the *period-preserving block mirror*
(:func:`fold_index`), exactly as the compiled kernels do, far enough that no node's zero padding reaches
the visible area; every node is then evaluated on that canonical-aligned region.
"""

from __future__ import annotations

import numpy as np

from ..cfa import CFAPattern, as_pattern
from ..errors import ProgramError
from .ensemble import pattern_offsets, reflection_origin, reflections
from .graph import Program
from .ops import RefContext, get_op

__all__ = ["fold_index", "run_reference"]


def fold_index(x: np.ndarray, lo: int, n: int, p: int) -> np.ndarray:
    """Map coordinates outside ``[lo, lo + n)`` back inside, mirroring whole CFA periods.

    ``x`` keeps its phase (``x mod p``), so the extended mosaic stays a valid mosaic of the same
    pattern. Coordinates further out than the image is wide are clamped (tiny images only).
    """
    hi = lo + n - 1
    below = x + p * (2 * ((lo - x + p - 1) // p) - 1)
    above = x - p * (2 * ((x - hi + p - 1) // p) - 1)
    r = np.where(x < lo, below, np.where(x > hi, above, x))
    return np.clip(r, lo, hi)


def run_reference(program: Program, mosaic: np.ndarray, cfa: CFAPattern | str | np.ndarray | None = None) -> np.ndarray:
    """Evaluate ``program`` on a 2-D mosaic whose pattern is ``cfa`` (default: the canonical one).

    Returns ``(H, W, 3)`` float32. An ensemble program is evaluated on each reflection of the extended
    mosaic as the compiled kernel reads it (:mod:`rawdemosaic.program.ensemble`), and averaged.
    """
    m = np.asarray(mosaic, np.float32)
    if m.ndim != 2:
        raise ProgramError(f"mosaic must be 2-D, got shape {m.shape}")
    cfa = as_pattern(cfa if cfa is not None else program.cfa)
    if cfa.kind != program.cfa:
        raise ProgramError(f"program {program.name} serves {program.cfa.value}, not {cfa.kind.value}")
    L = program.lcm_scale()
    margin = program.receptive_radius() + 2 * L
    h, w = m.shape
    p = program.period
    acc = np.zeros((h, w, 3), np.float32)
    for sx, sy in reflections(program.ensemble):
        a, b = pattern_offsets(program.cfa.canonical, sx, sy)
        ox, oy = reflection_origin(cfa.dx, w, sx, a, p), reflection_origin(cfa.dy, h, sy, b, p)
        # the copy's coordinates of the image (canonical (dy, dx) + index), and an L-aligned region around them
        cys, cxs = sy * (cfa.dy + np.arange(h) - oy), sx * (cfa.dx + np.arange(w) - ox)
        y0, x0 = ((cys.min() - margin) // L) * L, ((cxs.min() - margin) // L) * L
        y1, x1 = -(-(cys.max() + 1 + margin) // L) * L, -(-(cxs.max() + 1 + margin) // L) * L
        ys = fold_index(sy * np.arange(y0, y1) + oy, cfa.dy, h, p) - cfa.dy
        xs = fold_index(sx * np.arange(x0, x1) + ox, cfa.dx, w, p) - cfa.dx
        rgb = _evaluate(program, m[np.ix_(ys, xs)], y0, x0)
        acc += rgb[:, cys - y0][:, :, cxs - x0].transpose(1, 2, 0)
    if program.ensemble > 1:
        acc *= np.float32(1.0 / program.ensemble)
    return np.ascontiguousarray(acc)


def _evaluate(program: Program, ext: np.ndarray, y0: int, x0: int) -> np.ndarray:
    """The program's output ``(3, H, W)`` on the extended mosaic ``ext`` whose corner is canonical ``(y0, x0)``."""
    shapes = program.shapes()
    ctx = RefContext(program.cfa.canonical, y0, x0)
    values: dict[str, np.ndarray] = {}
    for n in program.live_nodes():
        op = get_op(n.op)
        if n.op == "Input":
            values[n.id] = ext[None]
            continue
        out = op.reference([values[i] for i in n.inputs], program.params(n), program.node_weights(n), ctx)
        s = shapes[n.id]
        expect = (s.channels, ext.shape[0] // s.scale, ext.shape[1] // s.scale)
        if out.shape != expect:  # pragma: no cover - a bug in an op's reference
            raise AssertionError(f"{n.op} reference gave {out.shape}, expected {expect}")
        values[n.id] = out.astype(np.float32, copy=False)
    return values[program.output]
