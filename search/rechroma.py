"""Swap a program's learned chroma for residual interpolation (:class:`~rawdemosaic.program.ops.ResidualChroma`).

A searched program predicts green first and then red and blue as differences to it. The learned chroma
part is fast but weak where colour channels correlate poorly (McMaster18's saturated colours): at 416
ops/pixel ``bg_bayer_bayer_gpu_c333`` scores 38.45 dB on McMaster18's green but 34.80 and 33.69 on red and
blue. :func:`with_residual_chroma` keeps the program's green part (nodes, weights) and puts a
``ResidualChroma`` node in place of its chroma part; fine-tuning
(:func:`rawdemosaic.search.train.full_train`) then trains the green through the new chroma.
"""

from __future__ import annotations

from rawdemosaic.errors import ProgramError
from rawdemosaic.program.graph import Node, Program

__all__ = ["with_residual_chroma"]


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
