"""Structured channel pruning of trained programs (the pruning of the edge-deployment toolbox).

:func:`prune_channels` removes whole output channels of convolution nodes together with the weights that
read them downstream, so the program gets narrower and its counted cost drops; fine-tuning
(:func:`rawdemosaic.search.train.full_train`) then recovers what the removed channels carried. Unlike
zeroing single weights (which the dense Halide lowering does not skip), a narrower layer is faster.

A channel's importance is the norm of its filter times the norm of the weights that read it (a channel
with a strong filter that nothing downstream uses ranks low, and the other way round); the filter norm
alone is the criterion of Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017.

Channels are followed from the pruned node through per-channel ops (``ReLU``, ``Upsample``) and ``Stack``
(at the input's offset) to the convolutions that read them; where those are grouped, every group loses the
same number of channels (the most important ones of each group are kept). Anything else on the way (an ``Add`` whose other
operand would need the same pruning, a ``Softmax`` across channels, the inserts) is refused.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Mapping

import numpy as np

from rawdemosaic.errors import ProgramError
from rawdemosaic.program.graph import Node, Program

__all__ = ["prune_channels", "channel_importance"]

_PRUNABLE = ("Conv1x1", "Conv1D", "Conv2D", "Downsample")  # weight (O, C, ...): outputs on axis 0, inputs on 1
_PER_CHANNEL = ("ReLU", "Upsample")  # channel j of the input is channel j of the output


def _check_prunable(program: Program, n: Node) -> None:
    if n.op not in _PRUNABLE:
        raise ProgramError(f"{program.name}: node {n.id!r} is a {n.op}; only {', '.join(_PRUNABLE)} nodes are pruned")
    if program.params(n).get("groups", 1) != 1:
        raise ProgramError(f"{program.name}: node {n.id!r} is a grouped convolution; only ungrouped ones are pruned")


def _readers(program: Program, nid: str) -> list[tuple[Node, np.ndarray]]:
    """The weighted nodes that read the channels of ``nid``: ``(node, idx)`` with ``idx[j]`` the input
    channel of ``node`` that carries channel ``j`` of ``nid``."""
    live = program.live_nodes()
    shapes = program.shapes()
    consumers: dict[str, list[Node]] = {}
    for n in live:
        for i in dict.fromkeys(n.inputs):
            consumers.setdefault(i, []).append(n)
    found: list[tuple[Node, np.ndarray]] = []
    todo = [(nid, np.arange(shapes[nid].channels))]
    while todo:
        cur, idx = todo.pop()
        if cur == program.output:
            raise ProgramError(f"{program.name}: channels of {nid!r} reach the output; they cannot be pruned")
        for n in consumers.get(cur, []):
            if n.op in _PRUNABLE:  # grouped readers too: their groups lose channels evenly (_prune_one)
                found.append((n, idx))
            elif n.op in _PER_CHANNEL:
                todo.append((n.id, idx))
            elif n.op == "Stack":
                off = 0
                for i in n.inputs:  # an input stacked twice is read at both offsets
                    if i == cur:
                        todo.append((n.id, off + idx))
                    off += shapes[i].channels
            else:
                raise ProgramError(f"{program.name}: channels of {nid!r} reach {n.op} node {n.id!r}, which pruning does not follow")
    return found


def _groups(program: Program, r: Node) -> tuple[int, int, int]:
    """``(groups, input channels per group, output channels per group)`` of the reader ``r``."""
    g = program.params(r).get("groups", 1)
    w = program.weights[f"{r.id}.weight"]
    return g, w.shape[1], w.shape[0] // g


def _read_by(program: Program, r: Node, c: int) -> np.ndarray:
    """The weights of reader ``r`` that multiply its input channel ``c``: ``(outputs of c's group, taps...)``."""
    g, cin_g, cout_g = _groups(program, r)
    w = program.weights[f"{r.id}.weight"]
    grp = c // cin_g
    return w[grp * cout_g : (grp + 1) * cout_g, c % cin_g]


def channel_importance(program: Program, nid: str) -> np.ndarray:
    """Per output channel of ``nid``: L2 norm of its filter times the L2 norm of the weights reading it."""
    n = program.node(nid)
    _check_prunable(program, n)
    w = program.node_weights(n)["weight"]
    filt = np.sqrt((w.astype(np.float64).reshape(w.shape[0], -1) ** 2).sum(axis=1))
    out = np.zeros(w.shape[0])
    for r, idx in _readers(program, nid):
        out += np.array([(_read_by(program, r, int(c)).astype(np.float64) ** 2).sum() for c in idx])
    return filt * np.sqrt(out)


def _channel_groups(program: Program, nid: str, readers: list[tuple[Node, np.ndarray]]) -> np.ndarray:
    """Per channel of ``nid``, the group of the grouped convolutions that read it (zeros if none is grouped).

    Every grouped reader must split the channels the same way, into groups of equal size, so that each can
    lose the same number of channels per group."""
    found = None
    for r, idx in readers:
        g, cin_g, _ = _groups(program, r)
        if g == 1:
            continue
        grp = idx // cin_g
        if found is not None and not np.array_equal(found, grp):
            raise ProgramError(f"{program.name}: the grouped convolutions reading {nid!r} group its channels differently")
        if len(set(np.bincount(grp, minlength=g))) != 1:
            raise ProgramError(f"{program.name}: {r.id!r} groups the channels of {nid!r} unevenly")
        found = grp
    return found if found is not None else np.zeros(program.shapes()[nid].channels, int)


def _prune_one(program: Program, nid: str, keep: int) -> tuple[Program, list[int]]:
    n = program.node(nid)
    _check_prunable(program, n)
    channels = program.shapes()[nid].channels
    if not 1 <= keep <= channels:
        raise ProgramError(f"{program.name}: cannot keep {keep} of the {channels} channels of {nid!r}")
    score = channel_importance(program, nid)
    readers = _readers(program, nid)
    groups = _channel_groups(program, nid, readers)
    ng = int(groups.max()) + 1
    if keep % ng:
        raise ProgramError(f"{program.name}: {nid!r} is read by convolutions of {ng} groups; keep a multiple of {ng}, not {keep}")
    kept = np.sort(np.concatenate([
        np.flatnonzero(groups == g)[np.argsort(-score[groups == g], kind="stable")[: keep // ng]] for g in range(ng)
    ]))
    weights = dict(program.weights)
    weights[f"{nid}.weight"] = program.weights[f"{nid}.weight"][kept]
    if f"{nid}.bias" in weights:
        weights[f"{nid}.bias"] = program.weights[f"{nid}.bias"][kept]
    drop: dict[str, set[int]] = {}
    dropped = np.setdiff1d(np.arange(channels), kept)
    by_id = {}
    for r, idx in readers:
        drop.setdefault(r.id, set()).update(int(i) for i in idx[dropped])
        by_id[r.id] = r
    for rid, cols in drop.items():
        rw = weights[f"{rid}.weight"]
        g, cin_g, cout_g = _groups(program, by_id[rid])
        # per group: its rows lose the columns of its dropped input channels (the same number in each group)
        weights[f"{rid}.weight"] = np.concatenate([
            np.delete(rw[k * cout_g : (k + 1) * cout_g], sorted(c % cin_g for c in cols if c // cin_g == k), axis=1) for k in range(g)
        ])
    nodes = tuple(replace(m, params={**m.params, "out_channels": keep}) if m.id == nid else m for m in program.nodes)
    pruned = Program(program.name, program.cfa, nodes, program.output, weights, dict(program.meta), program.ensemble)
    pruned.shapes()  # validates the rewritten graph
    return pruned, [int(k) for k in kept]


def prune_channels(program: Program, keep: Mapping[str, int], name: str | None = None) -> Program:
    """``program`` with only the ``keep[node]`` most important output channels of each named node.

    Nodes are pruned in the order given, each ranked on the program pruned so far
    (:func:`channel_importance`). The channels kept (indices into the original layer) are recorded in
    ``meta["pruned"]``. Raises :class:`~rawdemosaic.errors.ProgramError` for nodes that are not ungrouped
    convolutions, or whose channels reach an op the pruning does not follow.

    Examples
    --------
    >>> narrow = prune_channels(prog, {"c_c0": 16, "g_c1": 12})  # doctest: +SKIP
    >>> narrow.cost() < prog.cost()  # doctest: +SKIP
    True
    """
    record: dict[str, list[int]] = {}
    out = program
    for nid, k in keep.items():
        out, kept = _prune_one(out, nid, int(k))
        record[nid] = kept
    meta = {**program.meta, "pruned": {**program.meta.get("pruned", {}), **record}}
    return Program(name or program.name, out.cfa, out.nodes, out.output, out.weights, meta, out.ensemble)
