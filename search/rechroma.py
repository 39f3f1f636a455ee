"""Swap a program's learned chroma for residual interpolation (:class:`~rawdemosaic.program.ops.ResidualChroma`).

A searched program predicts green first and then red and blue as differences to it. The learned chroma
part is fast but weak where colour channels correlate poorly (McMaster18's saturated colours): at 416
ops/pixel ``bg_bayer_bayer_gpu_c333`` scores 38.45 dB on McMaster18's green but 34.80 and 33.69 on red and
blue. :func:`with_residual_chroma` keeps the program's green part (nodes, weights) and puts a
``ResidualChroma`` node in place of its chroma part; fine-tuning
(:func:`rawdemosaic.search.train.full_train`) then trains the green through the new chroma.
:func:`with_chroma_refinement` then adds a small learned correction of the interpolated red and blue.
"""

from __future__ import annotations

import numpy as np

from rawdemosaic.errors import ProgramError
from rawdemosaic.program.graph import Node, Program

__all__ = ["with_residual_chroma", "with_chroma_refinement"]


def with_residual_chroma(program: Program, radius: int = 1, eps: float = 1e-3, prior: float = 1.0, name: str | None = None) -> Program:
    """``program`` with its output ``ChromaInsert`` (and the nodes only it used) replaced by ``ResidualChroma``.

    Raises :class:`~rawdemosaic.errors.ProgramError` unless the output is a ``ChromaInsert`` of the mosaic
    and a full-resolution green, or for a CFA the op does not serve (it needs Bayer).

    Examples
    --------
    >>> rc = with_residual_chroma(Program.load("models/bg_bayer_bayer_gpu_c333.json"))  # doctest: +SKIP
    >>> rc.cost() < 416  # doctest: +SKIP
    True
    """
    out = program.node(program.output)
    if out.op != "ChromaInsert":
        raise ProgramError(f"{program.name}: the output is a {out.op}, not a ChromaInsert; there is no learned chroma to replace")
    if program.ensemble != 1:
        raise ProgramError(f"{program.name}: a self-ensemble; replace the chroma of the program it averages")
    mosaic, green = out.inputs[0], out.inputs[1]
    params = {"radius": int(radius), "eps": float(eps), "prior": float(prior)}
    rc = Node(out.id, "ResidualChroma", (mosaic, green), params)
    swapped = Program(program.name, program.cfa, tuple(rc if n.id == out.id else n for n in program.nodes), program.output, program.weights, program.meta)
    kept = swapped.live_only()
    live = {n.id for n in kept.nodes}
    weights = {k: v for k, v in kept.weights.items() if k.split(".", 1)[0] != out.id}  # the op has none
    meta = {**program.meta, "residual_chroma": {**params, "replaced": sorted(n.id for n in program.nodes if n.id not in live)}}
    out = Program(name or program.name, program.cfa, kept.nodes, program.output, weights, meta)
    out.shapes()  # validates: the op serves Bayer only
    return out


def with_chroma_refinement(program: Program, width: int = 8, seed: int = 0, name: str | None = None) -> Program:
    """``program`` (a ``ResidualChroma`` output) with a learned correction of its red and blue.

    The residual interpolation's colour differences ``R - G``, ``B - G`` are packed by the CFA period and
    stacked with the green part's last packed hidden features (its last ReLU at the packed scale; else the
    packed green); a pointwise layer of ``width`` channels, a ReLU and a 3x3 layer give a correction added
    to the differences, and ``ChromaInsert`` puts red and blue back (the sensor's samples pass through).
    The 3x3 layer starts at zero, so the new program computes the parent's function until it is trained;
    costs count non-zero weights, so it also costs the parent's until then. ``seed`` draws the pointwise
    layer's start (He initialisation).

    Raises :class:`~rawdemosaic.errors.ProgramError` unless the output is a ``ResidualChroma``.
    """
    out = program.node(program.output)
    if out.op != "ResidualChroma":
        raise ProgramError(f"{program.name}: the output is a {out.op}, not a ResidualChroma; there is no residual interpolation to refine")
    if program.ensemble != 1:
        raise ProgramError(f"{program.name}: a self-ensemble; refine the chroma of the program it averages")
    if width < 1:
        raise ProgramError(f"chroma refinement width must be >= 1, got {width}")
    shapes, per = program.shapes(), program.period
    mosaic, green = out.inputs
    taken = {n.id for n in program.nodes}
    if taken & {"c_rc", "c_r", "c_b", "c_rb", "c_gg", "c_d", "c_pd", "c_pg", "c_in", "c_h", "c_hr", "c_corr", "c_out"}:
        raise ProgramError(f"{program.name}: already has chroma nodes (c_*); refine the program they came from")
    ancestors = {n.id for n in Program(program.name, program.cfa, program.nodes, green, {}).live_nodes()}  # the green part
    hidden = [n.id for n in program.nodes if n.id in ancestors and n.op == "ReLU" and shapes[n.id].scale == per]
    nodes = [n for n in program.nodes if n.id != out.id]
    nodes.append(Node("c_rc", "ResidualChroma", out.inputs, dict(out.params)))
    nodes += [
        Node("c_r", "Slice", ("c_rc",), {"start": 0, "count": 1}),
        Node("c_b", "Slice", ("c_rc",), {"start": 2, "count": 1}),
        Node("c_rb", "Stack", ("c_r", "c_b")),
        Node("c_gg", "Stack", (green, green)),
        Node("c_d", "Sub", ("c_rb", "c_gg")),
        Node("c_pd", "Pack", ("c_d",)),  # red's p^2 phases, then blue's: ChromaInsert's packed layout
    ]
    if hidden:
        feat, fc = hidden[-1], shapes[hidden[-1]].channels
    else:
        nodes.append(Node("c_pg", "Pack", (green,)))
        feat, fc = "c_pg", per * per
    k = 2 * per * per
    nodes += [
        Node("c_in", "Stack", ("c_pd", feat)),
        Node("c_h", "Conv2D", ("c_in",), {"out_channels": width, "kernel": 1}),
        Node("c_hr", "ReLU", ("c_h",)),
        Node("c_corr", "Conv2D", ("c_hr",), {"out_channels": k, "kernel": 3}),
        Node("c_out", "Add", ("c_pd", "c_corr")),
        Node(out.id, "ChromaInsert", (mosaic, green, "c_out"), {"mode": "diff"}),
    ]
    rng = np.random.default_rng(seed)
    weights = dict(program.weights)
    weights["c_h.weight"] = (rng.standard_normal((width, k + fc, 1, 1)) * np.sqrt(2.0 / (k + fc))).astype(np.float32)
    weights["c_h.bias"] = np.zeros(width, np.float32)
    weights["c_corr.weight"] = np.zeros((k, width, 3, 3), np.float32)
    weights["c_corr.bias"] = np.zeros(k, np.float32)
    # zero_start: zeros that are initialisation (training under keep_zeros leaves them free)
    meta = {**program.meta, "chroma_refinement": {"width": int(width), "features": feat, "seed": int(seed), "zero_start": ["c_corr"]}}
    refined = Program(name or program.name, program.cfa, tuple(nodes), program.output, weights, meta)
    refined.shapes()
    return refined
