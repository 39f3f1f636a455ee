"""Small programs exercising each op, with random weights: fixtures for equivalence tests.

:func:`exercise` wraps one op in a complete program (mosaic in, RGB out) for a CFA family, so the
op's Halide lowering, numpy reference and PyTorch twin can be compared end to end.
"""

from __future__ import annotations

import numpy as np

from ..cfa import CFA
from .graph import Node, Program
from .ops import OPS, get_op

__all__ = ["exercise", "random_weights", "OP_CFAS"]


def random_weights(program_nodes: tuple[Node, ...], cfa: CFA, rng: np.random.Generator, scale: float = 0.4) -> dict[str, np.ndarray]:
    """Weights of the right shapes for every weighted node, N(0, scale / sqrt(fan-in))."""
    shell = Program("shell", cfa, program_nodes, program_nodes[-1].id)
    shapes = {}
    weights: dict[str, np.ndarray] = {}
    p = cfa.period
    for n in program_nodes:
        op = get_op(n.op)
        params = op.params(n.params)
        ins = [shapes[i] for i in n.inputs]
        shapes[n.id] = op.infer(ins, params, p)
        for k, shp in op.weight_shapes(ins, params).items():
            fan = max(1, int(np.prod(shp[1:])) if len(shp) > 1 else 1)
            weights[f"{n.id}.{k}"] = (rng.standard_normal(shp) * scale / np.sqrt(fan)).astype(np.float32)
    del shell
    return weights


def exercise(op_name: str, cfa: CFA | str, seed: int = 0) -> Program:
    """A program in which ``op_name`` sits on the path from mosaic to output."""
    cfa = CFA(cfa)
    p = cfa.period
    pp = p * p
    rng = np.random.default_rng(seed)
    N = lambda *a, **k: Node(*a, **k)  # noqa: E731
    nodes = [N("mosaic", "Input"), N("packed", "Pack", ("mosaic",))]
    full_res = False  # whether `pred` is at full resolution (3 channels) instead of packed (3 p^2)
    op = op_name
    if op in ("Conv2D", "Conv1D", "Conv1x1", "SeparableConv", "BSConv", "GatedConv"):
        extra = {"Conv2D": {"groups": 2, "dilation": 1}, "Conv1D": {"axis": "y", "kernel": 5}, "Conv1x1": {"groups": 2}}.get(op, {})
        if op == "Conv2D" and seed % 2:
            extra = {"dilation": 2, "bias": False}
        nodes += [N("h0", "Conv1x1", ("packed",), {"out_channels": 8}), N("h", op, ("h0",), {"out_channels": 8, **extra})]
        body = "h"
    elif op in ("Add", "Sub", "Mul"):
        nodes += [
            N("a", "Conv2D", ("packed",), {"out_channels": 6}),
            N("b", "Conv1x1", ("packed",), {"out_channels": 1 if op == "Mul" else 6}),
            N("h", op, ("a", "b")),
        ]
        body = "h"
    elif op in ("Stack", "ReLU", "Softmax", "ChannelShuffle", "Slice"):
        nodes += [N("a", "Conv2D", ("packed",), {"out_channels": 8})]
        if op == "Stack":
            nodes += [N("h", "Stack", ("a", "packed"))]
        elif op == "ChannelShuffle":
            nodes += [N("h", "ChannelShuffle", ("a",), {"groups": 2})]
        elif op == "Slice":
            nodes += [N("h", "Slice", ("a",), {"start": 2, "count": 5})]
        else:
            nodes += [N("h", op, ("a",))]
        body = "h"
    elif op in ("GroupedSum", "InterleavedSum"):
        nodes += [N("a", "Conv2D", ("packed",), {"out_channels": 12}), N("h", op, ("a",), {"out_channels": 4})]
        body = "h"
    elif op == "Downsample":
        nodes += [
            N("d", "Downsample", ("packed",), {"factor": 2, "out_channels": 6}),
            N("dr", "ReLU", ("d",)),
            N("u", "LearnedUpsample", ("dr",), {"factor": 2, "out_channels": 6}),
            N("h", "Stack", ("u", "packed")),
        ]
        body = "h"
    elif op in ("Upsample", "LearnedUpsample", "Unpack", "Pack", "Input", "GreenInsert", "ChromaInsert"):
        nodes += [N("a", "Conv2D" if p == 2 else "Conv1x1", ("packed",), {"out_channels": 3 * pp})]
        if op == "Upsample":
            mode = ["bilinear", "bicubic", "nearest"][seed % 3]
            nodes += [N("a3", "Conv1x1", ("a",), {"out_channels": 3}), N("pred", "Upsample", ("a3",), {"factor": p, "mode": mode})]
            full_res = True
        elif op == "LearnedUpsample":
            nodes += [N("pred", "LearnedUpsample", ("a",), {"factor": p, "out_channels": 3})]
            full_res = True
        elif op == "Unpack":
            nodes += [N("pred", "Unpack", ("a",))]
            full_res = True
        else:
            nodes += [N("pred", "Slice", ("a",), {"start": 0, "count": 3 * pp})]
        body = None
    elif op == "ResidualChroma":  # green from a learned prediction, red and blue by the op
        if p not in get_op(op).periods:
            raise ValueError(f"{op} does not serve {cfa.value}")
        nodes += [
            N("a", "Conv2D", ("packed",), {"out_channels": pp}),
            N("green", "GreenInsert", ("mosaic", "a")),
            N("rgb", op, ("mosaic", "green"), {"radius": 1 + seed % 2, "eps": 1e-3 if seed % 2 == 0 else 1e-2, "prior": 1.0 if seed % 2 == 0 else 0.0}),
        ]
        tup = tuple(nodes)
        return Program(f"exercise_{op_name}_{cfa.value}_{seed}", cfa, tup, "rgb", random_weights(tup, cfa, rng))
    else:
        raise ValueError(f"no exercise for op {op_name!r}")
    if body is not None:
        nodes += [N("pred", "Conv2D" if p == 2 else "Conv1x1", (body,), {"out_channels": 3 * pp})]
    if full_res:
        nodes += [
            N("g_pred", "Slice", ("pred",), {"start": 0, "count": 1}),
            N("c_pred", "Slice", ("pred",), {"start": 1, "count": 2}),
        ]
    else:
        nodes += [
            N("g_pred", "Slice", ("pred",), {"start": 0, "count": pp}),
            N("c_pred", "Slice", ("pred",), {"start": pp, "count": 2 * pp}),
        ]
    nodes += [
        N("green", "GreenInsert", ("mosaic", "g_pred")),
        N("rgb", "ChromaInsert", ("mosaic", "green", "c_pred"), {"mode": "diff" if seed % 2 == 0 else "direct"}),
    ]
    tup = tuple(nodes)
    prog = Program(f"exercise_{op_name}_{cfa.value}_{seed}", cfa, tup, "rgb", random_weights(tup, cfa, rng))
    prog.shapes()
    return prog


EXERCISED = sorted(OPS)
#: every (op, CFA family) pair an exercise exists for: each op with each CFA it serves
OP_CFAS = [(op, cfa) for op in EXERCISED for cfa in CFA if cfa.period in OPS[op].periods]
