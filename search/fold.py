"""Fold chains of affine convolutions into one (structural re-parameterisation).

A convolution whose output only a pointwise (``Conv1x1``) convolution reads, with no non-linearity
between them, computes an affine map of an affine map: one convolution with the first one's taps does the
same, ``W[o, i, t] = sum_m B[o, m] A[m, i, t]`` and ``b = B b_A + b_B``, exactly, borders included (the
pointwise layer mixes channels at the same pixel). Search and training may leave such chains behind (the
mutations insert ``Conv1x1`` nodes anywhere), and training an over-parameterised chain and folding it
afterwards is a known way to a better optimum at the folded cost (ExpandNets; RepVGG). :func:`fold_linear`
folds every chain whose folded layer counts fewer operations than the pair; the program computes the
same function up to float rounding at a lower counted cost.

References
----------
S. Guo, J. M. Alvarez, M. Salzmann, "ExpandNets: Linear over-parameterization to train compact
convolutional networks", NeurIPS 2020. X. Ding et al., "RepVGG: Making VGG-style ConvNets great again",
CVPR 2021.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from rawdemosaic.errors import ProgramError
from rawdemosaic.program.graph import Node, Program

__all__ = ["fold_linear", "foldable_pairs", "deployed", "expand_linear"]

_AFFINE = ("Conv1x1", "Conv1D", "Conv2D")  # weight (O, C / groups, taps...), optional bias (O,)


def _dense(w: np.ndarray, groups: int) -> np.ndarray:
    """A grouped weight ``(O, C / g, *k)`` as the dense ``(O, C, *k)`` with zeros across groups."""
    o, cg = w.shape[:2]
    out = np.zeros((o, cg * groups, *w.shape[2:]), np.float64)
    og = o // groups
    for g in range(groups):
        out[g * og : (g + 1) * og, g * cg : (g + 1) * cg] = w[g * og : (g + 1) * og]
    return out


def _grouped(d: np.ndarray) -> tuple[np.ndarray, int]:
    """The largest group count under which the dense weight ``d`` is block-diagonal, and its grouped form."""
    o, c = d.shape[:2]
    for g in sorted((g for g in range(1, min(o, c) + 1) if o % g == 0 and c % g == 0), reverse=True):
        og, cg = o // g, c // g
        mask = np.zeros((o, c), bool)
        for k in range(g):
            mask[k * og : (k + 1) * og, k * cg : (k + 1) * cg] = True
        if not np.any(d[~mask]):
            return np.concatenate([d[k * og : (k + 1) * og, k * cg : (k + 1) * cg] for k in range(g)]), g
    raise AssertionError("unreachable: one group always fits")


def _fold_pair(program: Program, a: Node, b: Node) -> tuple[Node, dict[str, np.ndarray]]:
    """The node (with ``b``'s id) and weights computing ``b(a(x))``."""
    pa, pb = program.params(a), program.params(b)
    wa, wb = program.node_weights(a), program.node_weights(b)
    da = _dense(np.asarray(wa["weight"], np.float64), pa["groups"])  # (M, C, *k)
    db = _dense(np.asarray(wb["weight"], np.float64), pb["groups"])  # (O, M)
    d = np.tensordot(db, da, axes=([1], [0]))  # (O, C, *k)
    d[np.abs(d) < 1e-30] = 0.0  # products of zeros only: keep pruned structure exact
    weight, groups = _grouped(d)
    bias_a = np.asarray(wa["bias"], np.float64) if pa["bias"] else np.zeros(da.shape[0])
    bias = db @ bias_a + (np.asarray(wb["bias"], np.float64) if pb["bias"] else 0.0)
    has_bias = bool(pa["bias"] or pb["bias"])
    params = {k: v for k, v in a.params.items() if k not in ("out_channels", "groups", "bias")}
    params.update({"out_channels": int(d.shape[0])})
    if groups != 1:
        params["groups"] = groups
    if not has_bias:
        params["bias"] = False
    weights = {"weight": weight.astype(np.float32)}
    if has_bias:
        weights["bias"] = bias.astype(np.float32)
    return Node(b.id, a.op, a.inputs, params), weights


def foldable_pairs(program: Program) -> list[tuple[str, str]]:
    """``(a, b)`` node ids where ``b`` is a ``Conv1x1`` and the only reader of the affine convolution ``a``."""
    live = program.live_nodes()
    readers: dict[str, list[Node]] = {}
    for n in live:
        for i in dict.fromkeys(n.inputs):
            readers.setdefault(i, []).append(n)
    by_id = {n.id: n for n in live}
    pairs = []
    for b in live:
        if b.op != "Conv1x1":
            continue
        a = by_id[b.inputs[0]]
        if a.op in _AFFINE and a.id != program.output and [r.id for r in readers[a.id]] == [b.id]:
            pairs.append((a.id, b.id))
    return pairs


def fold_linear(program: Program, name: str | None = None) -> Program:
    """``program`` with every foldable chain of affine convolutions folded into one convolution.

    A pair is folded only where the folded layer counts fewer operations than the two did (a depthwise
    layer followed by a dense pointwise one stays factorised). The folded node keeps the second node's id,
    so its readers are unchanged; ``meta["folded"]`` lists the pairs as ``[a, b]``. Dead nodes are dropped. A self-ensemble keeps
    averaging the folded graph. Raises
    :class:`~rawdemosaic.errors.ProgramError` when nothing folds.

    Examples
    --------
    >>> f = fold_linear(Program.load("models/bg_bayer_bayer_gpu_c153_rc.json"))  # doctest: +SKIP
    >>> f.cost()  # the 4 -> 24 3x3 convolution and the 24 -> 24 pointwise one are one layer  # doctest: +SKIP
    376.0
    """
    # dead nodes go first: one may read a node that folding removes, and the folded program is what runs
    prog, folded = program.live_only(), []
    while True:
        costs = prog.node_costs()
        for a_id, b_id in foldable_pairs(prog):
            a, b = prog.node(a_id), prog.node(b_id)
            node, w = _fold_pair(prog, a, b)
            nodes = tuple(node if n.id == b_id else n for n in prog.nodes if n.id != a_id)
            weights = {k: v for k, v in prog.weights.items() if k.split(".", 1)[0] not in (a_id, b_id)}
            weights.update({f"{b_id}.{k}": v for k, v in w.items()})
            cand = Program(prog.name, prog.cfa, nodes, prog.output, weights, prog.meta, prog.ensemble)
            if cand.node_costs()[b_id] < costs[a_id] + costs[b_id]:
                prog = cand
                folded.append([a_id, b_id])
                break
        else:
            break
    if not folded:
        raise ProgramError(f"{program.name}: no chain of affine convolutions to fold")
    out = Program(name or program.name, prog.cfa, prog.nodes, prog.output, prog.weights, {**program.meta, "folded": folded}, program.ensemble)
    out.shapes()
    return out


def deployed(program: Program) -> Program:
    """``program`` as the registry stores and the kernels run it: folded where anything folds (else itself).
    The search ranks candidates by this program's cost, so an over-parameterised chain costs what it will
    cost folded, and :func:`rawdemosaic.search.export.export_entry` writes this program."""
    if not foldable_pairs(program):
        return program
    try:
        return fold_linear(program)
    except ProgramError:  # pairs, but none that folding makes cheaper
        return program


def expand_linear(program: Program, widths: Mapping[str, int], seed: int = 0, name: str | None = None) -> Program:
    """``program`` over-parameterised for training: each convolution ``node`` of ``widths`` becomes a wider
    one (``<node>_wide``, ``widths[node]`` outputs) followed by a ``Conv1x1`` back to its width under the
    node's own id, so its readers are unchanged. It computes the same function to start with: the wide
    layer's first outputs are the node's, the rest random, and the pointwise layer passes the first ones
    through. Trained, then folded (:func:`deployed`), it costs what ``program`` costs.

    Raises :class:`~rawdemosaic.errors.ProgramError` for a node that is not an ungrouped affine convolution,
    one with pruned (zero) weights (the trained wide layer would fold back dense, at a higher cost) or a width
    below its own. Training keeps the expansion's zeros free under ``keep_zeros``
    (:func:`rawdemosaic.search.train.train`): they are its initialisation, not pruning.
    """
    rng = np.random.default_rng(seed)
    nodes, weights = list(program.nodes), dict(program.weights)
    for nid, width in widths.items():
        n = program.node(nid)
        p = program.params(n)
        if n.op not in _AFFINE or p["groups"] != 1:
            raise ProgramError(f"{program.name}: node {nid!r} is not an ungrouped convolution ({', '.join(_AFFINE)}); only those are expanded")
        w = np.asarray(weights[f"{nid}.weight"], np.float64)
        c = w.shape[0]
        if not np.all(w):
            raise ProgramError(f"{program.name}: node {nid!r} has pruned (zero) weights; expanded and folded back it would be dense, at a higher cost")
        if int(width) < c:
            raise ProgramError(f"{program.name}: node {nid!r} has {c} outputs; cannot expand it to {width}")
        extra = rng.standard_normal((int(width) - c, *w.shape[1:])) * np.sqrt(1.0 / max(1, int(np.prod(w.shape[1:]))))
        wide = Node(f"{nid}_wide", n.op, n.inputs, {**n.params, "out_channels": int(width)})
        back = Node(nid, "Conv1x1", (wide.id,), {"out_channels": c, "bias": False})
        i = nodes.index(n)
        nodes[i : i + 1] = [wide, back]
        weights.pop(f"{nid}.weight")
        weights[f"{wide.id}.weight"] = np.concatenate([w, extra]).astype(np.float32)
        if p["bias"]:
            b = weights.pop(f"{nid}.bias")
            weights[f"{wide.id}.bias"] = np.concatenate([b, np.full(int(width) - c, 1e-3)]).astype(np.float32)
        weights[f"{nid}.weight"] = np.eye(c, int(width), dtype=np.float32)
    out = Program(name or program.name, program.cfa, tuple(nodes), program.output, weights, {**program.meta, "expanded": {**program.meta.get("expanded", {}), **{k: int(v) for k, v in widths.items()}}}, program.ensemble)
    out.shapes()
    return out
