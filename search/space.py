"""The program space of the search: seeds, mutations, pruning rules and a structural hash.

Programs of the search follow the green-first layout of Ma et al. 2022 [1]_::

    mosaic -> [green part: nodes "g_*"] -> green = GreenInsert(mosaic, <green prediction>)
           -> [chroma part: nodes "c_*", reading mosaic, green (and g_* in joint mode)]
           -> rgb = ChromaInsert(mosaic, green, <R-G / B-G prediction>, mode="diff")

Programs may also end in ``rgb = ResidualChroma(mosaic, green)`` (:mod:`rawdemosaic.search.rechroma`),
with no chroma prediction: mutations of their chroma part insert ``c_*`` nodes between green and the op
(which then outputs that node as green: a learned guide).

A *green program* is the ``g_*`` part (it outputs full-resolution green through GreenInsert); a
*chroma program* is the ``c_*`` part, which takes the mosaic and a chosen green program's output and
predicts the colour differences at packed scale. :func:`compose` joins a green and a chroma program
into one runnable :class:`~rawdemosaic.program.graph.Program`. Three search modes:

* ``"green"``: mutate the green part, the chroma part stays a fixed simple predictor;
* ``"chroma"``: mutate the chroma part on top of a green program from a pool (mutation
  ``green_swap`` exchanges it for another green program of the pool);
* ``"joint"``: mutate whole programs (either part; chroma nodes may also read green features).

Every mutation returns a *new*, validated program (the parent is never modified): nodes whose
weight shapes are unchanged keep the parent's weights (which the search may use as initialisation),
new or reshaped nodes get fresh random weights. :func:`prune` rejects programs before training.

References
----------
.. [1] K. Ma, M. Gharbi, A. Adams, S. Kamil, T.-M. Li, C. Barnes, J. Ragan-Kelley, "Searching for
   fast demosaicking algorithms", ACM Transactions on Graphics 41(5), 2022.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import numpy as np

from ..cfa import CFA
from ..errors import ProgramError
from ..program.graph import Node, Program
from ..program.ops import Shape, get_op

__all__ = [
    "SpaceConfig",
    "MUTATIONS",
    "EXTRA_OPS",
    "seed_programs",
    "deep_net",
    "residual_net",
    "midres_net",
    "default_chroma",
    "compose",
    "green_part",
    "chroma_part",
    "part_cost",
    "mutate",
    "prune",
    "structural_hash",
    "fresh_weights",
    "InvalidMutation",
]

FIXED = ("mosaic", "green", "rgb")
PAPER_OPS = ("Conv2D", "Conv1x1", "Conv1D", "ReLU", "Softmax", "Add", "Sub", "Mul", "Stack", "GroupedSum", "InterleavedSum")
#: ops beyond the paper's space (switched off with ``extra_ops = false``); "Conv2D@d2" is a dilated 3x3
EXTRA_OPS = ("SeparableConv", "BSConv", "GatedConv", "ChannelShuffle", "Conv2D@d2")
RESAMPLE_UP = ("Upsample", "LearnedUpsample")
COMMUTATIVE = ("Add", "Mul")


class InvalidMutation(Exception):
    """A mutation attempt that does not apply or yields an invalid program (the caller retries)."""


@dataclass
class SpaceConfig:
    """What programs the search may produce.

    ``channels``: widths new convolutions choose from; ``max_scale``: coarsest grid a resolution change
    may create (full-resolution pixels per sample); ``min_cost``/``max_cost``: the cost range of the tiers
    (programs outside are pruned); ``cost_of``: ``"total"`` or ``"part"`` (in green mode the tiers hold
    the green part's cost, since the chroma part is fixed).
    """

    cfa: CFA = CFA.BAYER
    mode: str = "joint"  # "green" | "chroma" | "joint"
    extra_ops: bool = True
    channels: tuple[int, ...] = (4, 8, 12, 16, 24)
    max_channels: int | None = None  # default: 96, or 4 p^2 when larger (X-Trans: 144)
    max_nodes: int = 48
    min_cost: float = 10.0
    max_cost: float = 1000.0
    min_radius: int = 2
    max_radius: int | None = None  # default: 32 periods (receptive_radius is a loose upper bound)
    max_scale: int | None = None  # default: 4 periods
    seed_width: int = 8
    mutation_weights: dict = field(default_factory=dict)
    green_pool: list = field(default_factory=list)  # chroma mode: Programs whose green parts may be swapped in

    def __post_init__(self) -> None:
        self.cfa = CFA(self.cfa)
        self.channels = tuple(int(c) for c in self.channels)
        p = self.cfa.period
        if self.max_channels is None:
            self.max_channels = max(96, 4 * p * p)
        if self.max_radius is None:
            self.max_radius = 32 * p
        if self.max_scale is None:
            self.max_scale = 4 * p
        if self.mode not in ("green", "chroma", "joint"):
            raise ValueError(f"unknown search mode {self.mode!r}")

    @classmethod
    def from_dict(cls, d: dict, cfa: CFA | str, mode: str) -> "SpaceConfig":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__ and k not in ("cfa", "mode", "green_pool")}
        if "channels" in d and isinstance(d["channels"], dict):  # per-CFA channel lists
            known["channels"] = tuple(d["channels"][CFA(cfa).value])
        return cls(cfa=CFA(cfa), mode=mode, **known)

    @property
    def ops(self) -> tuple[str, ...]:
        return PAPER_OPS + (EXTRA_OPS if self.extra_ops else ())

    def cost(self, program: Program) -> float:
        """The cost ranked by: that of the program as deployed, its affine chains folded (:mod:`.fold`)."""
        from .fold import deployed

        program = deployed(program)
        return part_cost(program, "g") if self.mode == "green" else program.cost()

    def mutable_parts(self) -> tuple[str, ...]:
        return {"green": ("g",), "chroma": ("c",), "joint": ("g", "c")}[self.mode]


# ------------------------------------------------------------------------------------------------
# Weights


def fresh_weights(nodes: Sequence[Node], cfa: CFA, shapes: dict[str, Shape], rng: np.random.Generator, which: set[str]) -> dict[str, np.ndarray]:
    """He-style random weights for the nodes named in ``which`` (biases zero... but non-zero-cost: tiny)."""
    out: dict[str, np.ndarray] = {}
    for n in nodes:
        if n.id not in which:
            continue
        op = get_op(n.op)
        p = op.params(n.params)
        for k, shp in op.weight_shapes([shapes[i] for i in n.inputs], p).items():
            if len(shp) == 1:  # biases: small non-zero values (cost counts non-zero weights)
                w = rng.standard_normal(shp) * 1e-3
            else:
                fan = max(1, int(np.prod(shp[1:])))
                w = rng.standard_normal(shp) * np.sqrt(1.0 / fan)
            out[f"{n.id}.{k}"] = w.astype(np.float32)
    return out


# ------------------------------------------------------------------------------------------------
# Seeds and composition

N = Node


def _sinks(cfa: CFA, g_out: str, c_out: str) -> tuple[list[Node], list[Node]]:
    return [N("green", "GreenInsert", ("mosaic", g_out))], [N("rgb", "ChromaInsert", ("mosaic", "green", c_out), {"mode": "diff"})]


def _build(name: str, cfa: CFA, green: list[Node], chroma: list[Node], rng: np.random.Generator, meta: dict | None = None) -> Program:
    g_out = green[-1].id
    c_out = chroma[-1].id
    gs, cs = _sinks(cfa, g_out, c_out)
    nodes = tuple([N("mosaic", "Input")] + green + gs + chroma + cs)
    shell = Program(name, cfa, nodes, "rgb")
    shapes = _infer(shell)
    w = fresh_weights(nodes, cfa, shapes, rng, {n.id for n in nodes})
    prog = Program(name, cfa, nodes, "rgb", w, dict(meta or {}))
    prog.shapes()
    return prog


def _infer(prog: Program) -> dict[str, Shape]:
    shapes: dict[str, Shape] = {}
    for n in prog.nodes:
        op = get_op(n.op)
        shapes[n.id] = op.infer([shapes[i] for i in n.inputs], op.params(n.params), prog.period)
    return shapes


def _chroma_input(pp: int) -> list[Node]:
    return [
        N("c_pm", "Pack", ("mosaic",)),
        N("c_pg", "Pack", ("green",)),
        N("c_d", "Sub", ("c_pm", "c_pg")),  # known colour differences (zero at green sites)
    ]


def _default_chroma_nodes(cfa: CFA) -> list[Node]:
    pp = cfa.period**2
    return _chroma_input(pp) + [N("c_out", "Conv2D", ("c_d",), {"out_channels": 2 * pp})]


def demosaicnet_like(cfa: CFA | str, width: int = 8, depth: int = 2, seed: int = 0) -> Program:
    """Pack -> (Conv2D, ReLU) x depth -> prediction, for green and for chroma (a small demosaicnet)."""
    cfa = CFA(cfa)
    pp = cfa.period**2
    g: list[Node] = [N("g_pack", "Pack", ("mosaic",))]
    prev = "g_pack"
    for k in range(depth):
        g += [N(f"g_c{k}", "Conv2D", (prev,), {"out_channels": width}), N(f"g_r{k}", "ReLU", (f"g_c{k}",))]
        prev = f"g_r{k}"
    g += [N("g_out", "Conv2D", (prev,), {"out_channels": pp})]
    c = _chroma_input(pp) + [
        N("c_in", "Stack", ("c_d", "c_pg")),
        N("c_c0", "Conv2D", ("c_in",), {"out_channels": width}),
        N("c_r0", "ReLU", ("c_c0",)),
        N("c_out", "Conv2D", ("c_r0",), {"out_channels": 2 * pp}),
    ]
    return _build(f"seed_demosaicnet_{cfa.value}", cfa, g, c, np.random.default_rng(seed), {"seed": "demosaicnet_like"})


def weighted_interp(cfa: CFA | str, k: int = 2, low_width: int = 8, seed: int = 0) -> Program:
    """Multi-resolution weighted interpolation: Softmax(Conv) x Conv -> GroupedSum, plus a
    Downsample -> Conv -> LearnedUpsample branch added to the green prediction."""
    cfa = CFA(cfa)
    pp = cfa.period**2
    groups = 1 if cfa is CFA.BAYER else 6  # keeps the X-Trans seed within the tiers
    g = [
        N("g_pack", "Pack", ("mosaic",)),
        N("g_lg", "Conv2D", ("g_pack",), {"out_channels": k * pp, "groups": groups}),
        N("g_sm", "Softmax", ("g_lg",)),
        N("g_ip", "Conv2D", ("g_pack",), {"out_channels": k * pp, "groups": groups}),
        N("g_mul", "Mul", ("g_sm", "g_ip")),
        N("g_sum", "GroupedSum", ("g_mul",), {"out_channels": pp}),
        N("g_dn", "Downsample", ("g_pack",), {"factor": 2, "out_channels": low_width}),
        N("g_lc", "Conv2D", ("g_dn",), {"out_channels": low_width}),
        N("g_lr", "ReLU", ("g_lc",)),
        N("g_up", "LearnedUpsample", ("g_lr",), {"factor": 2, "out_channels": pp}),
        N("g_out", "Add", ("g_sum", "g_up")),
    ]
    c = _chroma_input(pp) + [
        N("c_lg", "Conv2D", ("c_d",), {"out_channels": k * 2 * pp, "groups": groups}),
        N("c_sm", "Softmax", ("c_lg",)),
        N("c_ip", "Conv2D", ("c_d",), {"out_channels": k * 2 * pp, "groups": groups}),
        N("c_mul", "Mul", ("c_sm", "c_ip")),
        N("c_out", "GroupedSum", ("c_mul",), {"out_channels": 2 * pp}),
    ]
    return _build(f"seed_interp_{cfa.value}", cfa, g, c, np.random.default_rng(seed + 1), {"seed": "weighted_interp"})


def residual_net(cfa: CFA | str, width: int = 8, depth: int = 1, chroma_width: int | None = None, head_kernel: int | None = None, seed: int = 0) -> Program:
    """A learned linear interpolator plus a small packed ReLU network's correction, for green and chroma.

    Green: ``Add(Conv(pack), Conv(ReLU(Conv ...)))``; chroma: ``Add(Conv(known differences),
    Conv(ReLU(Conv(Stack(differences, green trunk)))))``: the chroma net reads the green trunk (joint).
    Linear paths and heads are ``head_kernel`` wide: by default 3x3 at the Bayer period and 1x1 at the
    X-Trans one (whose packed cells already span 6x6 pixels and 36 channels); 3x3 there lets the linear
    interpolator and the heads reach across cell borders.
    """
    cfa = CFA(cfa)
    pp = cfa.period**2
    k = head_kernel or (3 if cfa is CFA.BAYER else 1)
    cw = chroma_width or width
    g: list[Node] = [N("g_pack", "Pack", ("mosaic",)), N("g_lin", "Conv2D", ("g_pack",), {"out_channels": pp, "kernel": k})]
    prev = "g_pack"
    for i in range(depth):
        g += [N(f"g_c{i}", "Conv2D", (prev,), {"out_channels": width}), N(f"g_r{i}", "ReLU", (f"g_c{i}",))]
        prev = f"g_r{i}"
    g += [N("g_res", "Conv2D", (prev,), {"out_channels": pp, "kernel": k}), N("g_out", "Add", ("g_lin", "g_res"))]
    c = _chroma_input(pp) + [
        N("c_lin", "Conv2D", ("c_d",), {"out_channels": 2 * pp, "kernel": k}),
        N("c_in", "Stack", ("c_d", prev)),
        N("c_c0", "Conv2D", ("c_in",), {"out_channels": cw}),
        N("c_r0", "ReLU", ("c_c0",)),
        N("c_res", "Conv2D", ("c_r0",), {"out_channels": 2 * pp, "kernel": k}),
        N("c_out", "Add", ("c_lin", "c_res")),
    ]
    name = f"seed_residual_{cfa.value}_{width}x{depth}" + (f"_k{head_kernel}" if head_kernel else "")
    return _build(name, cfa, g, c, np.random.default_rng(seed + 2), {"seed": "residual_net"})


def deep_net(cfa: CFA | str, width: int = 16, depth: int = 3, chroma_width: int | None = None, chroma_depth: int | None = None, seed: int = 0) -> Program:
    """:func:`residual_net` made deep and cheap: blueprint-separable (:class:`BSConv`) residual blocks.

    Green: ``Add(Conv(pack), head(trunk))`` where the trunk is ``BSConv`` then ``depth`` blocks
    ``x + ReLU(BSConv(x))``; chroma reads ``Stack(differences, green trunk)`` through the same kind of
    trunk. A 3x3 dense conv on ``W`` packed channels costs ``9 W^2 / p^2`` per pixel, a BSConv block
    ``(W^2 + 12 W) / p^2`` (pointwise, depthwise 3x3, bias, ReLU, Add), so depth (non-linearity) comes at a
    fraction of the dense cost.

    References
    ----------
    .. [1] D. Haase, M. Amthor, "Rethinking depthwise separable convolutions", CVPR 2020.
    .. [2] K. He et al., "Deep residual learning for image recognition", CVPR 2016.
    """
    cfa = CFA(cfa)
    pp = cfa.period**2
    k = 3 if cfa is CFA.BAYER else 1
    cw = chroma_width or width
    cd = depth if chroma_depth is None else chroma_depth

    def trunk(part: str, src: str, w: int, n: int) -> tuple[list[Node], str]:
        nodes = [N(f"{part}_e", "BSConv", (src,), {"out_channels": w}), N(f"{part}_er", "ReLU", (f"{part}_e",))]
        prev = f"{part}_er"
        for i in range(n):
            nodes += [
                N(f"{part}_b{i}", "BSConv", (prev,), {"out_channels": w}),
                N(f"{part}_r{i}", "ReLU", (f"{part}_b{i}",)),
                N(f"{part}_s{i}", "Add", (prev, f"{part}_r{i}")),
            ]
            prev = f"{part}_s{i}"
        return nodes, prev

    gt, g_last = trunk("g", "g_pack", width, depth)
    g = [N("g_pack", "Pack", ("mosaic",)), N("g_lin", "Conv2D", ("g_pack",), {"out_channels": pp, "kernel": k})] + gt + [
        N("g_res", "BSConv", (g_last,), {"out_channels": pp}),
        N("g_out", "Add", ("g_lin", "g_res")),
    ]
    ct, c_last = trunk("c", "c_in", cw, cd)
    c = _chroma_input(pp) + [
        N("c_lin", "Conv2D", ("c_d",), {"out_channels": 2 * pp, "kernel": k}),
        N("c_in", "Stack", ("c_d", g_last)),
    ] + ct + [
        N("c_res", "BSConv", (c_last,), {"out_channels": 2 * pp}),
        N("c_out", "Add", ("c_lin", "c_res")),
    ]
    return _build(f"seed_deep_{cfa.value}_{width}x{depth}", cfa, g, c, np.random.default_rng(seed + 3), {"seed": "deep_net"})


def midres_net(cfa: CFA | str, width: int = 24, depth: int = 2, chroma_width: int | None = None, factor: int = 2, seed: int = 0) -> Program:
    """:func:`residual_net` whose trunks run on a grid ``factor`` times finer than the packed one.

    The packed mosaic (one cell per CFA period) is mapped by a :class:`LearnedUpsample` to ``width``
    channels on a grid of ``period / factor`` pixels, 3x3 ``Conv2D``/``ReLU`` layers run there, and a
    ``Pack`` by ``factor`` and a 1x1 head bring the result back to one value per CFA position. At the
    X-Trans period a packed cell spans 6x6 pixels: a trunk of ``W`` channels there holds ``W / 36``
    features per pixel and a 3x3 layer costs ``9 W^2 / 36``, so the same features per pixel cost 9 times
    what they cost at the Bayer period. On the 3x3-pixel grid (``factor=2``) a layer costs ``W^2`` for
    ``W / 9`` features per pixel. Green and chroma as in :func:`residual_net`; the chroma trunk reads the
    up-sampled known differences stacked with the green trunk.

    References
    ----------
    .. [1] K. Ma et al., "Searching for fast demosaicking algorithms", ACM TOG 41(5), 2022 (their X-Trans
       green models up-sample the packed mosaic by 2 before the convolutions).
    """
    cfa = CFA(cfa)
    pp = cfa.period**2
    if cfa.period % factor:
        raise ValueError(f"factor {factor} does not divide the {cfa.value} period {cfa.period}")
    k = 3 if cfa is CFA.BAYER else 1
    cw = chroma_width or width
    g: list[Node] = [
        N("g_pack", "Pack", ("mosaic",)),
        N("g_lin", "Conv2D", ("g_pack",), {"out_channels": pp, "kernel": k}),
        N("g_up", "LearnedUpsample", ("g_pack",), {"factor": factor, "out_channels": width}),
    ]
    prev = "g_up"
    for i in range(depth):
        g += [N(f"g_c{i}", "Conv2D", (prev,), {"out_channels": width}), N(f"g_r{i}", "ReLU", (f"g_c{i}",))]
        prev = f"g_r{i}"
    g += [
        N("g_dn", "Pack", (prev,), {"factor": factor}),
        N("g_res", "Conv2D", ("g_dn",), {"out_channels": pp, "kernel": 1}),
        N("g_out", "Add", ("g_lin", "g_res")),
    ]
    c = _chroma_input(pp) + [
        N("c_lin", "Conv2D", ("c_d",), {"out_channels": 2 * pp, "kernel": k}),
        N("c_up", "LearnedUpsample", ("c_d",), {"factor": factor, "out_channels": cw}),
        N("c_in", "Stack", ("c_up", prev)),
        N("c_c0", "Conv2D", ("c_in",), {"out_channels": cw}),
        N("c_r0", "ReLU", ("c_c0",)),
        N("c_dn", "Pack", ("c_r0",), {"factor": factor}),
        N("c_res", "Conv2D", ("c_dn",), {"out_channels": 2 * pp, "kernel": 1}),
        N("c_out", "Add", ("c_lin", "c_res")),
    ]
    return _build(f"seed_midres_{cfa.value}_{width}x{depth}_f{factor}", cfa, g, c, np.random.default_rng(seed + 4), {"seed": "midres_net"})


def seed_programs(cfa: CFA | str, width: int = 8, seed: int = 0, residual: Sequence[Sequence[int]] = (), deep: Sequence[Sequence[int]] = (), midres: Sequence[Sequence[int]] = ()) -> list[Program]:
    """The seed programs of a CFA: a demosaicnet-like network, multi-resolution interpolation, a
    :func:`residual_net` per ``(width, depth[, chroma_width[, head_kernel]])`` in ``residual`` (one per cost tier, say),
    a :func:`deep_net` per ``(width, depth[, chroma_width, chroma_depth])`` in ``deep`` and a
    :func:`midres_net` per ``(width, depth[, chroma_width[, factor]])`` in ``midres``."""
    seeds = [demosaicnet_like(cfa, width=width, seed=seed), weighted_interp(cfa, low_width=width, seed=seed)]
    for r in residual:
        seeds.append(residual_net(cfa, *[int(v) for v in r], seed=seed))
    for r in deep:
        seeds.append(deep_net(cfa, *[int(v) for v in r], seed=seed))
    for r in midres:
        seeds.append(midres_net(cfa, *[int(v) for v in r], seed=seed))
    return seeds


def _part_nodes(prog: Program, part: str) -> list[Node]:
    return [n for n in prog.nodes if n.id.startswith(part + "_")]


def green_part(prog: Program) -> list[Node]:
    return _part_nodes(prog, "g")


def chroma_part(prog: Program) -> list[Node]:
    return _part_nodes(prog, "c")


def part_cost(prog: Program, part: str) -> float:
    """Cost of one part (``"g"`` includes GreenInsert, ``"c"`` ChromaInsert)."""
    sink = "green" if part == "g" else "rgb"
    return float(sum(v for k, v in prog.node_costs().items() if k.startswith(part + "_") or k == sink))


def _part_weights(prog: Program, nodes: Sequence[Node]) -> dict[str, np.ndarray]:
    ids = {n.id for n in nodes}
    return {k: v for k, v in prog.weights.items() if k.split(".", 1)[0] in ids}


def compose(green_prog: Program, chroma_prog: Program, name: str | None = None) -> Program:
    """The green part of ``green_prog`` with the chroma part of ``chroma_prog`` (weights of both)."""
    if green_prog.cfa is not chroma_prog.cfa:
        raise ProgramError("compose: programs for different CFAs")
    g, c = green_part(green_prog), chroma_part(chroma_prog)
    if any(i.startswith("g_") for n in c for i in n.inputs):
        raise ProgramError("compose: the chroma part reads green-part features (a joint program)")
    g_out = green_prog.node("green").inputs[1]
    sink = chroma_prog.node("rgb")
    gs = [N("green", "GreenInsert", ("mosaic", g_out))]
    if sink.op == "ResidualChroma":  # its guide: green, or the chroma part's node between them
        cs = [N("rgb", "ResidualChroma", ("mosaic", sink.inputs[1]), dict(sink.params))]
    else:
        cs = [N("rgb", "ChromaInsert", ("mosaic", "green", sink.inputs[2]), dict(sink.params))]
    nodes = tuple([N("mosaic", "Input")] + g + gs + c + cs)
    w = {**_part_weights(green_prog, g), **_part_weights(chroma_prog, c)}
    prog = Program(name or chroma_prog.name, green_prog.cfa, nodes, "rgb", w, dict(chroma_prog.meta))
    prog.shapes()
    return prog


def default_chroma(cfa: CFA | str, seed: int = 0) -> Program:
    """A program whose chroma part is the fixed linear predictor used while searching green."""
    cfa = CFA(cfa)
    pp = cfa.period**2
    g = [N("g_pack", "Pack", ("mosaic",)), N("g_out", "Conv2D", ("g_pack",), {"out_channels": pp})]
    return _build(f"default_chroma_{cfa.value}", cfa, g, _default_chroma_nodes(cfa), np.random.default_rng(seed + 7))


# ------------------------------------------------------------------------------------------------
# Editable drafts


class _Draft:
    """A mutable copy of a program's structure; :meth:`finish` validates it into a new Program."""

    def __init__(self, prog: Program):
        self.parent = prog
        self.cfa = prog.cfa
        self.nodes: list[list[Any]] = [[n.id, n.op, list(n.inputs), dict(n.params)] for n in prog.nodes]
        self.output = prog.output
        self.weights = dict(prog.weights)
        self.dirty: set[str] = set()
        self.shapes = prog.shapes()
        self._n = 0

    def ids(self) -> list[str]:
        return [n[0] for n in self.nodes]

    def get(self, nid: str) -> list[Any]:
        for n in self.nodes:
            if n[0] == nid:
                return n
        raise KeyError(nid)

    def index(self, nid: str) -> int:
        return self.ids().index(nid)

    def consumers(self, nid: str) -> list[str]:
        return [n[0] for n in self.nodes if nid in n[2]]

    def fresh(self, part: str) -> str:
        used = set(self.ids())
        while True:
            self._n += 1
            cand = f"{part}_m{self._n}"
            if cand not in used:
                return cand

    def add(self, before: str, nid: str, op: str, inputs: list[str], params: dict | None = None) -> str:
        self.nodes.insert(self.index(before), [nid, op, list(inputs), dict(params or {})])
        self.dirty.add(nid)
        return nid

    def reroute(self, consumer: str, old: str, new: str) -> None:
        n = self.get(consumer)
        n[2] = [new if i == old else i for i in n[2]]

    def remove(self, nid: str) -> None:
        self.nodes = [n for n in self.nodes if n[0] != nid]
        self.weights = {k: v for k, v in self.weights.items() if k.split(".", 1)[0] != nid}

    def finish(self, rng: np.random.Generator, name: str | None = None) -> Program:
        # stable topological order
        order: list[list[Any]] = []
        placed: set[str] = set()
        pending = list(self.nodes)
        while pending:
            progress = False
            for n in list(pending):
                if all(i in placed for i in n[2]):
                    order.append(n)
                    placed.add(n[0])
                    pending.remove(n)
                    progress = True
                    break
            if not progress:
                raise InvalidMutation("cycle")
        nodes = [Node(n[0], n[1], tuple(n[2]), dict(n[3])) for n in order]
        # drop dead nodes
        need = {self.output}
        for n in reversed(nodes):
            if n.id in need:
                need.update(n.inputs)
        nodes = [n for n in nodes if n.id in need]
        # shapes, weights kept where shapes allow
        shapes: dict[str, Shape] = {}
        weights: dict[str, np.ndarray] = {}
        renew: set[str] = set()
        try:
            for n in nodes:
                op = get_op(n.op)
                p = op.params(n.params)
                ins = [shapes[i] for i in n.inputs]
                shapes[n.id] = op.infer(ins, p, self.cfa.period)
                want = op.weight_shapes(ins, p)
                have = {k: self.weights.get(f"{n.id}.{k}") for k in want}
                if n.id in self.dirty or any(v is None or tuple(v.shape) != tuple(want[k]) for k, v in have.items()):
                    renew.add(n.id)
                else:
                    weights.update({f"{n.id}.{k}": v for k, v in have.items()})
        except (ProgramError, KeyError, ZeroDivisionError) as e:
            raise InvalidMutation(str(e)) from None
        weights.update(fresh_weights(nodes, self.cfa, shapes, rng, renew))
        try:
            prog = Program(name or self.parent.name, self.cfa, tuple(nodes), self.output, weights, dict(self.parent.meta))
            prog.shapes()
        except ProgramError as e:
            raise InvalidMutation(str(e)) from None
        prog.meta["renewed"] = sorted(renew)
        return prog


# ------------------------------------------------------------------------------------------------
# Mutations


def _part_of(nid: str) -> str | None:
    return nid[0] if nid[:2] in ("g_", "c_") else None


def _sources(d: _Draft, part: str, space: SpaceConfig, before: str) -> list[str]:
    """Nodes a new node of ``part`` placed before ``before`` may read."""
    idx = d.index(before)
    ok = []
    for n in d.nodes[:idx]:
        nid = n[0]
        if nid == "mosaic" or nid.startswith(part + "_"):
            ok.append(nid)
        elif part == "c" and (nid == "green" or (space.mode == "joint" and nid.startswith("g_"))):
            ok.append(nid)
    return ok


def _edges(d: _Draft, part: str) -> list[tuple[str, str]]:
    """(producer, consumer) pairs whose consumer belongs to ``part`` or is the part's sink."""
    sink = "green" if part == "g" else "rgb"
    out = []
    for n in d.nodes:
        if n[0].startswith(part + "_") or n[0] == sink:
            for k, i in enumerate(n[2]):
                if n[0] == sink and k != len(n[2]) - 1:
                    continue  # the sink's fixed inputs (mosaic, green)
                if i == "mosaic" and n[0] == sink:
                    continue
                out.append((i, n[0]))
    return out


def _pick(rng: np.random.Generator, seq: Sequence[Any]) -> Any:
    if not seq:
        raise InvalidMutation("nothing to choose from")
    return seq[int(rng.integers(len(seq)))]


def _divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0]


def _width(rng, space: SpaceConfig, keep: int) -> int:
    return keep if rng.random() < 0.4 else int(_pick(rng, space.channels))


def _new_op(d: _Draft, part: str, u: str, v: str, space: SpaceConfig, rng) -> None:
    """Insert one op on the edge u -> v."""
    su = d.shapes.get(u) or _shape_now(d, u)
    sink = v in ("green", "rgb")
    cu = su.channels
    op = _pick(rng, space.ops)
    nid = d.fresh(part)
    width = cu if sink else _width(rng, space, cu)
    if op in ("Conv2D", "Conv1x1", "Conv2D@d2"):
        params: dict[str, Any] = {"out_channels": width}
        if op == "Conv2D@d2":
            op, params["dilation"] = "Conv2D", 2
        d.add(v, nid, op, [u], params)
    elif op == "Conv1D":
        d.add(v, nid, op, [u], {"out_channels": width, "axis": _pick(rng, ["x", "y"]), "kernel": _pick(rng, [3, 5])})
    elif op in ("SeparableConv", "BSConv", "GatedConv"):
        d.add(v, nid, op, [u], {"out_channels": width})
    elif op in ("ReLU", "Softmax"):
        d.add(v, nid, op, [u])
    elif op == "ChannelShuffle":
        g = [k for k in _divisors(cu) if 1 < k < cu]
        d.add(v, nid, op, [u], {"groups": _pick(rng, g)})
    elif op in ("GroupedSum", "InterleavedSum"):
        if sink:
            raise InvalidMutation("sum before a sink changes channels")
        d.add(v, nid, op, [u], {"out_channels": _pick(rng, [k for k in _divisors(cu) if k < cu])})
    elif op in ("Add", "Sub", "Mul", "Stack"):
        cands = []
        for t in _sources(d, part, space, v):
            if t == u:
                continue
            st = _shape_now(d, t)
            if st.scale != su.scale:
                continue
            if op == "Stack" or st.channels == cu or st.channels == 1 or (cu == 1 and not sink):
                cands.append(t)
        t = _pick(rng, cands)
        d.add(v, nid, op, [u, t])
    else:  # pragma: no cover
        raise InvalidMutation(op)
    d.reroute(v, u, nid)


def _shape_now(d: _Draft, nid: str) -> Shape:
    if nid in d.shapes and nid not in d.dirty:
        return d.shapes[nid]
    raise InvalidMutation(f"shape of new node {nid} unknown")


def m_insert(d: _Draft, part: str, space: SpaceConfig, rng) -> None:
    u, v = _pick(rng, _edges(d, part))
    _new_op(d, part, u, v, space, rng)


def m_delete(d: _Draft, part: str, space: SpaceConfig, rng) -> None:
    cands = [n[0] for n in d.nodes if n[0].startswith(part + "_")]
    nid = _pick(rng, cands)
    n = d.get(nid)
    src = n[2][0] if n[2] else None
    if src is None:
        raise InvalidMutation("no input to reroute to")
    for c in d.consumers(nid):
        d.reroute(c, nid, src)
    d.remove(nid)


def m_decouple(d: _Draft, part: str, space: SpaceConfig, rng) -> None:
    shared = [n[0] for n in d.nodes if n[0].startswith(part + "_") and len(d.consumers(n[0])) > 1]
    nid = _pick(rng, shared)
    cons = d.consumers(nid)
    victim = _pick(rng, cons[1:])
    n = d.get(nid)
    copy = d.fresh(part)
    d.nodes.insert(d.index(nid) + 1, [copy, n[1], list(n[2]), dict(n[3])])
    for k, v in list(d.weights.items()):
        if k.split(".", 1)[0] == nid:
            d.weights[copy + "." + k.split(".", 1)[1]] = v.copy()
    d.reroute(victim, nid, copy)


def m_channels(d: _Draft, part: str, space: SpaceConfig, rng) -> None:
    cands = [n for n in d.nodes if n[0].startswith(part + "_") and "out_channels" in n[3]]
    n = _pick(rng, cands)
    cur = n[3]["out_channels"]
    opts = sorted({c for c in space.channels if c != cur} | {cur * 2, max(1, cur // 2)} - {cur})
    n[3] = {**n[3], "out_channels": int(_pick(rng, opts))}
    if n[1] == "Conv2D" or n[1] == "Conv1x1" or n[1] == "Conv1D":
        n[3].pop("groups", None)
    d.dirty.add(n[0])


def m_groups(d: _Draft, part: str, space: SpaceConfig, rng) -> None:
    cands = [n for n in d.nodes if n[0].startswith(part + "_") and n[1] in ("Conv2D", "Conv1x1", "Conv1D")]
    n = _pick(rng, cands)
    cin = d.shapes[n[2][0]].channels
    cout = n[3]["out_channels"]
    cur = n[3].get("groups", 1)
    opts = [g for g in _divisors(cin) if cout % g == 0 and g != cur]
    n[3] = {**n[3], "groups": int(_pick(rng, opts))}
    d.dirty.add(n[0])


def m_res_create(d: _Draft, part: str, space: SpaceConfig, rng) -> None:
    edges = [(u, v) for u, v in _edges(d, part) if u in d.shapes and d.shapes[u].scale >= d.cfa.period]
    u, v = _pick(rng, edges)  # resolution changes start from packed grids (scales stay p * 2^k)
    su = _shape_now(d, u)
    f = _pick(rng, [f for f in (2, 4) if su.scale * f <= space.max_scale])
    c = int(_pick(rng, space.channels))
    dn, mid, up = d.fresh(part), d.fresh(part), d.fresh(part)
    d.add(v, dn, "Downsample", [u], {"factor": f, "out_channels": c})
    d.add(v, mid, _pick(rng, ["Conv2D", "Conv1x1"]), [dn], {"out_channels": c})
    if rng.random() < 0.5:
        d.add(v, up, "LearnedUpsample", [mid], {"factor": f, "out_channels": su.channels})
    else:
        d.get(mid)[3]["out_channels"] = su.channels
        d.add(v, up, "Upsample", [mid], {"factor": f, "mode": _pick(rng, ["bilinear", "bicubic"])})
    if rng.random() < 0.5:  # a skip connection keeps the fine path
        s = d.fresh(part)
        d.add(v, s, "Add", [u, up])
        up = s
    d.reroute(v, u, up)


def _matched_up(d: _Draft, dn: str) -> str | None:
    """The first up-sampling below ``dn`` that returns to ``dn``'s input scale with the same factor."""
    n = d.get(dn)
    f, s_in = n[3]["factor"], d.shapes[n[2][0]].scale
    frontier, seen = [dn], set()
    while frontier:
        x = frontier.pop(0)
        for c in d.consumers(x):
            if c in seen:
                continue
            seen.add(c)
            cn = d.get(c)
            if cn[1] in RESAMPLE_UP and cn[3]["factor"] == f and d.shapes[c].scale == s_in:
                return c
            frontier.append(c)
    return None


def _pairs(d: _Draft, part: str) -> list[tuple[str, str]]:
    out = []
    for n in d.nodes:
        if n[0].startswith(part + "_") and n[1] == "Downsample":
            u = _matched_up(d, n[0])
            if u is not None and u.startswith(part + "_"):
                out.append((n[0], u))
    return out


def m_res_remove(d: _Draft, part: str, space: SpaceConfig, rng) -> None:
    """Remove a resolution change: the Downsample becomes a 1x1 convolution (same channels), the
    matching learned up-sampling a 1x1 convolution, a fixed up-sampling disappears."""
    dn, up = _pick(rng, _pairs(d, part))
    n = d.get(dn)
    n[1], n[3] = "Conv1x1", {"out_channels": n[3]["out_channels"]}
    d.dirty.add(dn)
    u = d.get(up)
    if u[1] == "LearnedUpsample":
        u[1], u[3] = "Conv1x1", {"out_channels": u[3]["out_channels"]}
        d.dirty.add(up)
    else:
        src = u[2][0]
        for c in d.consumers(up):
            d.reroute(c, up, src)
        d.remove(up)


def m_res_shrink(d: _Draft, part: str, space: SpaceConfig, rng) -> None:
    dn, up = _pick(rng, [(a, b) for a, b in _pairs(d, part) if d.get(a)[3]["factor"] >= 4])
    for nid in (dn, up):
        n = d.get(nid)
        n[3] = {**n[3], "factor": n[3]["factor"] // 2}
        d.dirty.add(nid)


def m_res_swap(d: _Draft, part: str, space: SpaceConfig, rng) -> None:
    """Swap the kind of an up-sampling: learned <-> fixed (a 1x1 convolution at the coarse scale keeps
    the channel count), or another interpolation mode."""
    cands = [n for n in d.nodes if n[0].startswith(part + "_") and n[1] in RESAMPLE_UP]
    n = _pick(rng, cands)
    if n[1] == "LearnedUpsample":
        cin = d.shapes[n[2][0]].channels
        cout = n[3]["out_channels"]
        src = n[2][0]
        if cin != cout:
            src = d.add(n[0], d.fresh(part), "Conv1x1", [src], {"out_channels": cout})
        n[1], n[2], n[3] = "Upsample", [src], {"factor": n[3]["factor"], "mode": _pick(rng, ["bilinear", "bicubic", "nearest"])}
    elif rng.random() < 0.5:
        n[1], n[3] = "LearnedUpsample", {"factor": n[3]["factor"], "out_channels": d.shapes[n[0]].channels}
    else:
        modes = [m for m in ("nearest", "bilinear", "bicubic") if m != n[3].get("mode", "bilinear")]
        n[3] = {**n[3], "mode": _pick(rng, modes)}
    d.dirty.add(n[0])


MUTATIONS: dict[str, Callable[..., None]] = {
    "insert": m_insert,
    "delete": m_delete,
    "decouple": m_decouple,
    "channels": m_channels,
    "groups": m_groups,
    "res_create": m_res_create,
    "res_remove": m_res_remove,
    "res_shrink": m_res_shrink,
    "res_swap": m_res_swap,
    "green_swap": None,  # type: ignore[dict-item]  # handled in mutate (chroma mode)
}
DEFAULT_WEIGHTS = {"insert": 3, "delete": 2, "decouple": 1, "channels": 2, "groups": 1, "res_create": 1, "res_remove": 1, "res_shrink": 1, "res_swap": 1, "green_swap": 1}


def _green_swap(prog: Program, space: SpaceConfig, rng) -> Program:
    mine = structural_hash_nodes(green_part(prog), prog.node("green").inputs[1])
    others = [g for g in space.green_pool if structural_hash_nodes(green_part(g), g.node("green").inputs[1]) != mine]
    g = _pick(rng, others)
    child = compose(g, prog, prog.name)
    child.meta["renewed"] = []
    return child


def mutate(prog: Program, rng: np.random.Generator, space: SpaceConfig, kind: str | None = None, attempts: int = 50) -> tuple[Program, str]:
    """A mutated copy of ``prog`` (validated), and the mutation's name.

    ``kind`` forces one mutation; otherwise kinds are drawn by ``space.mutation_weights``. Raises
    :class:`InvalidMutation` when ``attempts`` tries all fail.
    """
    weights = {**DEFAULT_WEIGHTS, **space.mutation_weights}
    if space.mode != "chroma" or not space.green_pool:
        weights["green_swap"] = 0
    names = [k for k, w in weights.items() if w > 0]
    pw = np.array([weights[k] for k in names], float)
    last = "no attempt"
    for _ in range(attempts):
        k = kind or names[int(rng.choice(len(names), p=pw / pw.sum()))]
        try:
            if k == "green_swap":
                if space.mode != "chroma":
                    raise InvalidMutation("green_swap needs chroma mode")
                return _green_swap(prog, space, rng), k
            part = _pick(rng, space.mutable_parts())
            d = _Draft(prog)
            MUTATIONS[k](d, part, space, rng)
            child = d.finish(rng)
            if structural_hash(child) == structural_hash(prog):
                raise InvalidMutation("no structural change")
            return child, k
        except (InvalidMutation, KeyError, IndexError) as e:
            last = f"{k}: {e}"
    raise InvalidMutation(f"no valid mutation in {attempts} attempts (last: {last})")


# ------------------------------------------------------------------------------------------------
# Structural hash and pruning


def _node_hashes(nodes: Sequence[Node]) -> dict[str, str]:
    hs: dict[str, str] = {}
    for n in nodes:
        ins = [hs.get(i, i if i in FIXED else "?") for i in n.inputs]
        if n.op in COMMUTATIVE:
            ins = sorted(ins)
        params = get_op(n.op).params(n.params)
        key = json.dumps([n.op, sorted(params.items()), ins], default=str)
        hs[n.id] = hashlib.sha256(key.encode()).hexdigest()[:20]
    return hs


def structural_hash_nodes(nodes: Sequence[Node], out: str) -> str:
    """Hash of the sub-DAG of ``nodes`` feeding ``out`` (ids and weights ignored)."""
    need = {out}
    for n in reversed(list(nodes)):
        if n.id in need:
            need.update(n.inputs)
    live = [n for n in nodes if n.id in need]
    hs = _node_hashes(live)
    body = json.dumps([hs.get(out, out), sorted(hs.values())])
    return hashlib.sha256(body.encode()).hexdigest()[:24]


def structural_hash(prog: Program) -> str:
    """Canonical hash of a program's live structure: independent of node ids, node order and weights.

    Each node hashes its op, parameters and its inputs' hashes (sorted for commutative ops); the
    program hash combines the output's hash with the multiset of all node hashes, so a node shared by
    two consumers differs from two identical copies (the decoupled form).
    """
    return prog.cfa.value + ":" + structural_hash_nodes(prog.live_nodes(), prog.output)


_INVERSE = {
    ("Pack", "Unpack"),
    ("Unpack", "Pack"),
    ("Downsample", "Upsample"),
    ("Downsample", "LearnedUpsample"),
    ("Upsample", "Downsample"),
    ("LearnedUpsample", "Downsample"),
}
_IDEMPOTENT = {"ReLU", "Softmax"}
_NONNEG_SOURCES = {"Input", "ReLU", "Softmax"}  # the mosaic is light: never negative
_NONNEG_KEEPING = {"Pack", "Unpack", "Stack", "Slice", "Add", "Mul", "GroupedSum", "InterleavedSum", "ChannelShuffle"}


def _non_negative(by_id: dict, nid: str, memo: dict) -> bool:
    """Whether node ``nid`` is non-negative whatever the weights (so a ReLU of it does nothing)."""
    if nid not in memo:
        n = by_id[nid]
        memo[nid] = n.op in _NONNEG_SOURCES or (n.op in _NONNEG_KEEPING and all(_non_negative(by_id, i, memo) for i in n.inputs))
    return memo[nid]


def _pow2(n: int) -> bool:
    return n > 0 and not n & (n - 1)


def _factor(prog: Program, n: Node) -> int:
    p = prog.params(n)
    return p.get("factor") or prog.period


def prune(prog: Program, space: SpaceConfig, seen: set[str] | None = None) -> str | None:
    """Why ``prog`` should not be trained (``None``: keep it).

    Rules: inverse pairs (Pack->Unpack, Unpack->Pack, Downsample->up-sampling and up-sampling->
    Downsample by the same factor with nothing between), idempotent repeats (ReLU->ReLU,
    Softmax->Softmax), a ReLU of what cannot be negative (the mosaic, packed, stacked or summed), a Softmax
    of one channel (constant), a part whose prediction is the mosaic itself, size bounds (cost within the tiers, channel and node
    limits, coarsest scale), receptive-field bounds, structures already seen.
    """
    try:
        shapes = prog.shapes()
    except ProgramError as e:
        return f"invalid: {e}"
    live = prog.live_nodes()
    by_id = {n.id: n for n in live}
    nonneg: dict[str, bool] = {}
    for n in live:
        for i in n.inputs:
            a = by_id.get(i)
            if a is None:
                continue
            if (a.op, n.op) in _INVERSE and _factor(prog, a) == _factor(prog, n):
                return f"inverse pair {a.op}->{n.op} ({a.id}->{n.id})"
            if a.op == n.op and n.op in _IDEMPOTENT:
                return f"repeated {n.op} ({a.id}->{n.id})"
            if a.op == n.op == "ChannelShuffle" and prog.params(a)["groups"] * prog.params(n)["groups"] == shapes[n.id].channels:
                return f"inverse channel shuffles ({a.id}->{n.id})"
        if n.op == "ReLU" and _non_negative(by_id, n.inputs[0], nonneg):
            return f"ReLU of a non-negative input ({n.inputs[0]}->{n.id})"
        if n.op == "Softmax" and shapes[n.inputs[0]].channels == 1:
            return f"Softmax of one channel, a constant ({n.inputs[0]}->{n.id})"
    for sink, op, k, part in (("green", "GreenInsert", 1, "g"), ("rgb", "ChromaInsert", 2, "c")):
        if sink in by_id and by_id[sink].op == op:  # (a ResidualChroma output predicts nothing)
            src = by_id[sink].inputs[k]
            if not src.startswith(part + "_"):
                return f"{sink} prediction is {src!r}, not a {part}_ node"
    if len(live) > space.max_nodes:
        return f"{len(live)} nodes > {space.max_nodes}"
    wide = max(shapes[n.id].channels for n in live if n.op not in ("Input",))
    if wide > space.max_channels:
        return f"{wide} channels > {space.max_channels}"
    coarse = max(shapes[n.id].scale for n in live)
    if coarse > space.max_scale:
        return f"scale {coarse} > {space.max_scale}"
    # grids of p * 2^k pixels, k >= -1 (half the period: the X-Trans 3x3 grid of midres_net)
    off = [n.id for n in live if shapes[n.id].scale != 1 and ((2 * shapes[n.id].scale) % prog.period or not _pow2(2 * shapes[n.id].scale // prog.period))]
    if off:
        return f"scale off the p * 2^k grid ({off[0]})"
    cost = space.cost(prog)
    if not space.min_cost <= cost < space.max_cost:
        return f"cost {cost:.1f} outside [{space.min_cost:g}, {space.max_cost:g})"
    r = prog.receptive_radius()
    if not space.min_radius <= r <= space.max_radius:
        return f"receptive radius {r} outside [{space.min_radius}, {space.max_radius}]"
    if seen is not None and structural_hash(prog) in seen:
        return "already seen"
    return None


def rename_nodes(prog: Program, mapping: Callable[[str], str]) -> Program:
    """The same program with node ids renamed by ``mapping`` (fixed nodes kept); for tests and tools."""
    m = {n.id: (n.id if n.id in FIXED else mapping(n.id)) for n in prog.nodes}
    nodes = tuple(Node(m[n.id], n.op, tuple(m[i] for i in n.inputs), dict(n.params)) for n in prog.nodes)
    w = {m[k.split(".", 1)[0]] + "." + k.split(".", 1)[1]: v for k, v in prog.weights.items()}
    return Program(prog.name, prog.cfa, nodes, m[prog.output], w, dict(prog.meta), prog.ensemble)
