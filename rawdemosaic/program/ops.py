"""The building blocks of demosaicking programs, each defined once.

Every op states, in one class:

* its **shape rule** (:meth:`Op.infer`): output channels and *scale* from its inputs' shapes;
* its **weights** (:meth:`Op.weight_shapes`), stored in the program's ``.npz`` as ``"<node>.<name>"``;
* its **cost** (:meth:`Op.cost`): arithmetic operations per pixel *of its own output grid*;
* a **numpy reference** (:meth:`Op.reference`) and a **Halide lowering** (:meth:`Op.halide`).

Layout
------
A node's value is a stack of ``C`` channels on a grid of *scale* ``s``: one sample per ``s x s`` block
of full-resolution pixels, anchored at canonical coordinate 0 (so sample ``X`` covers pixels
``[s X, s X + s)``). The mosaic is ``(1 channel, scale 1)``; :class:`Pack` by the CFA period ``p`` gives
``(p*p channels, scale p)`` with channel ``j * p + i`` holding tile position (row ``j``, column ``i``).

Cost model
----------
Cost counts multiply-adds (a multiply-add is one op) and elementwise operations per output pixel of
the node, and a program's cost divides each node's count by ``s**2`` so it is expressed per
full-resolution output pixel. Weighted ops count their *non-zero* weights (what the compiled kernel
executes: the compiler drops zero taps), which for trained programs equals the dense count; a
1-D convolution with ``k`` taps costs ``k`` per input channel in its group (counted once, not per axis).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np

from ..errors import ProgramError

__all__ = ["Shape", "Op", "OPS", "DOMAINS", "register_op", "get_op"]

DOMAINS = ("linear", "srgb", "gamma2")  # data encodings a program can be trained for (see Input)


@dataclass(frozen=True)
class Shape:
    """Channels and grid scale of a node's value."""

    channels: int
    scale: int


OPS: dict[str, "Op"] = {}


def register_op(cls: type["Op"]) -> type["Op"]:
    """Class decorator adding an op to :data:`OPS` under ``cls.name``."""
    OPS[cls.name] = cls()
    return cls


def get_op(name: str) -> "Op":
    try:
        return OPS[name]
    except KeyError:
        raise ProgramError(f"unknown op {name!r} (known: {', '.join(sorted(OPS))})") from None


class Op:
    """Base class: subclasses set ``name``, ``arity`` and ``defaults`` and implement the rules."""

    name: ClassVar[str] = ""
    arity: ClassVar[int | None] = 1  # None: one or more inputs
    defaults: ClassVar[Mapping[str, Any]] = {}
    required: ClassVar[tuple[str, ...]] = ()
    weighted: ClassVar[bool] = False
    #: whether the Halide lowering should be materialised (computed into a buffer per tile)
    heavy: ClassVar[bool] = False
    #: CFA periods the op serves (2: Bayer, 6: X-Trans)
    periods: ClassVar[tuple[int, ...]] = (2, 6)
    #: whether its lowering materialises intermediates of wide reach per tile (the compiler then never
    #: runs the program in bands of a few rows, whose halos those intermediates would recompute)
    wide_helpers: ClassVar[bool] = False

    # --- parameters -----------------------------------------------------------------------------
    def params(self, given: Mapping[str, Any]) -> dict[str, Any]:
        unknown = set(given) - set(self.defaults) - set(self.required)
        if unknown:
            raise ProgramError(f"{self.name}: unknown parameter(s) {sorted(unknown)}")
        missing = [k for k in self.required if k not in given]
        if missing:
            raise ProgramError(f"{self.name}: missing parameter(s) {missing}")
        return {**self.defaults, **given}

    # --- rules ----------------------------------------------------------------------------------
    def infer(self, ins: Sequence[Shape], p: Mapping[str, Any], period: int) -> Shape:
        raise NotImplementedError

    def weight_shapes(self, ins: Sequence[Shape], p: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
        return {}

    def cost(self, ins: Sequence[Shape], out: Shape, p: Mapping[str, Any], w: Mapping[str, np.ndarray]) -> float:
        """Operations per pixel of the node's own grid."""
        return 0.0

    def radius(self, p: Mapping[str, Any]) -> int:
        """Spatial reach in samples of the node's input grid (for receptive-field bounds)."""
        return 0

    # --- evaluation -----------------------------------------------------------------------------
    def reference(self, xs: Sequence[np.ndarray], p: Mapping[str, Any], w: Mapping[str, np.ndarray], ctx: "RefContext") -> np.ndarray:
        raise NotImplementedError

    def halide(self, xs: Sequence["HNode"], p: Mapping[str, Any], w: Mapping[str, np.ndarray], ctx: "HalideContext") -> list[Callable]:
        """Return one expression builder ``f(x, y) -> Expr`` per output channel."""
        raise NotImplementedError

    def torch(self, xs: Sequence[Any], p: Mapping[str, Any], w: Mapping[str, Any], ctx: "RefContext") -> Any:
        """PyTorch twin on ``(N, C, H, W)`` tensors (same semantics and zero padding as the reference)."""
        raise NotImplementedError

    # helpers
    def _check_arity(self, ins: Sequence[Shape]) -> None:
        if self.arity is not None and len(ins) != self.arity:
            raise ProgramError(f"{self.name} takes {self.arity} input(s), got {len(ins)}")
        if self.arity is None and not ins:
            raise ProgramError(f"{self.name} needs at least one input")

    def _same_scale(self, ins: Sequence[Shape]) -> int:
        scales = {s.scale for s in ins}
        if len(scales) != 1:
            raise ProgramError(f"{self.name}: inputs at different scales {sorted(scales)}")
        return scales.pop()


# ------------------------------------------------------------------------------------------------
# Contexts: what evaluation needs besides inputs (the canonical CFA pattern, coordinates).


@dataclass
class RefContext:
    """Numpy evaluation: arrays are ``(C, H/s, W/s)`` over a canonical region starting at 0 mod L."""

    pattern: np.ndarray  # canonical CFA, (p, p)
    origin_y: int  # canonical coordinate of row 0 (a multiple of every scale)
    origin_x: int


class HalideContext:
    """Halide evaluation state shared by the lowering of one program (set up by the compiler)."""

    def __init__(self, hl: Any, pattern: np.ndarray, tag: str = ""):
        self.hl = hl
        self.pattern = pattern
        self.tag = tag  # suffix of helper names (ensemble copies lower the same graph more than once)
        self.helpers: list["HNode"] = []  # intermediate Funcs of composite ops, materialised per tile
        self._n = 0

    def fresh(self, stem: str) -> str:
        self._n += 1
        return f"{stem}{self.tag}_{self._n}"

    def is_color(self, x: Any, y: Any, colour: int) -> Any:
        """Whether the canonical CFA has ``colour`` at (x, y) (folds to a constant when x, y mod p are)."""
        hl = self.hl
        p = self.pattern.shape[0]
        return hl.mux((y % p) * p + (x % p), [hl.u8(int(v)) for v in self.pattern.ravel()]) == colour

    def define(self, name: str, builders: list[Callable], materialised: bool, shape: Shape) -> "HNode":
        """Lower one node from its per-channel expression builders.

        Inlined nodes are one Func with ``mux`` over ``c`` (consumers index constant channels, so it
        folds away). Materialised nodes are blocks of channels computed as Tuples (see :class:`HNode`);
        a single ``mux`` with an unrolled ``c`` would make the simplifier walk every channel's
        expression once per channel.
        """
        hl = self.hl
        x, y, c = hl.Var("x"), hl.Var("y"), hl.Var("c")
        if not materialised:
            f = hl.Func(name)
            f[x, y, c] = builders[0](x, y) if len(builders) == 1 else hl.mux(c, [b(x, y) for b in builders])
            return HNode(f, shape)
        parts = []
        for k in range(0, len(builders), CHANNEL_BLOCK):
            block = builders[k : k + CHANNEL_BLOCK]
            f = hl.Func(f"{name}_c{k}")
            f[x, y] = block[0](x, y) if len(block) == 1 else tuple(b(x, y) for b in block)
            parts.append((f, len(block)))
        return HNode(None, shape, parts)

    def helper(self, stem: str, builders: list[Callable], scale: int) -> "HNode":
        """A materialised intermediate node with one channel per builder."""
        node = self.define(self.fresh(stem), builders, True, Shape(len(builders), scale))
        self.helpers.append(node)
        return node


class HNode:
    """A lowered node and its shape.

    Either one ``Func`` over ``(x, y, c)`` (``func``; inlined nodes), or, for materialised nodes,
    ``parts``: Funcs over ``(x, y)`` each computing a Tuple of up to :data:`CHANNEL_BLOCK` consecutive
    channels in one loop body, so the channels share their input loads. A dense convolution
    (``dense`` set) is one materialised ``func`` over ``(x, y, c)`` with ``c`` a stored dimension.
    """

    def __init__(self, func: Any, shape: Shape, parts: list[tuple[Any, int]] | None = None, dense: Any = None):
        self.func = func
        self.shape = shape
        self.parts = parts
        self.dense = dense  # a dense convolution's scheduling handles (see the compiler), else None

    def __call__(self, c: int, x: Any, y: Any) -> Any:
        if self.parts is None:
            return self.func[x, y, c]
        f, n = self.parts[c // CHANNEL_BLOCK]
        return f[x, y][c % CHANNEL_BLOCK] if n > 1 else f[x, y]

    def funcs(self) -> list[Any]:
        return [f for f, _ in self.parts] if self.parts is not None else [self.func]


CHANNEL_BLOCK = 8  # channels computed together by a materialised node (shared loads, bounded registers)


# ------------------------------------------------------------------------------------------------
# Numerical helpers shared by reference implementations.


def _shift(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``out[..., y, x] = a[..., y + dy, x + dx]`` with zeros outside."""
    out = np.zeros_like(a)
    h, w = a.shape[-2:]
    ys, yd = (slice(dy, h), slice(0, h - dy)) if dy >= 0 else (slice(0, h + dy), slice(-dy, h))
    xs, xd = (slice(dx, w), slice(0, w - dx)) if dx >= 0 else (slice(0, w + dx), slice(-dx, w))
    out[..., yd, xd] = a[..., ys, xs]
    return out


def _sum_exprs(terms: list[Any], zero: Any) -> Any:
    """Balanced sum (shorter dependency chains than a left fold)."""
    if not terms:
        return zero
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]
    return terms[0]


def _mac(pairs: list[tuple[float, Any]], bias: float, hl: Any, chains: int = 4) -> Any:
    """``bias + sum(w * e)`` dropping zero weights and multiplications by one.

    Terms are accumulated in a few interleaved chains, in input order: enough independent adds to hide
    latency, while each input is consumed soon after it is loaded (a balanced tree over hundreds of
    terms keeps them all live at once and spills registers).
    """
    terms = []
    for wv, e in pairs:
        wv = float(wv)
        if wv == 0.0:
            continue
        terms.append(e if wv == 1.0 else (-e if wv == -1.0 else hl.f32(wv) * e))
    if bias != 0.0:
        terms.append(hl.f32(float(bias)))
    if len(terms) <= 2 * chains:
        return _sum_exprs(terms, hl.f32(0.0))
    acc = list(terms[:chains])
    for i, t in enumerate(terms[chains:]):
        acc[i % chains] = acc[i % chains] + t
    return _sum_exprs(acc, hl.f32(0.0))


def _nnz(*arrays: np.ndarray | None) -> int:
    return int(sum(np.count_nonzero(a) for a in arrays if a is not None))


def _t():
    """``torch`` (imported lazily: the runtime never needs it)."""
    import torch

    return torch


def _tshift(a: Any, dy: int, dx: int) -> Any:
    """Torch twin of :func:`_shift`."""
    F = _t().nn.functional
    h, w = a.shape[-2:]
    pad = F.pad(a, (max(-dx, 0), max(dx, 0), max(-dy, 0), max(dy, 0)))
    y0, x0 = max(dy, 0), max(dx, 0)
    return pad[..., y0 : y0 + h, x0 : x0 + w]


def _cfa_mask_t(ctx: RefContext, like: Any, colour: int) -> Any:
    h, w = like.shape[-2:]
    m = _cfa_map(ctx, h, w) == colour
    return _t().as_tensor(m, device=like.device)[None, None]


def _group_slices(cin: int, cout: int, groups: int, name: str) -> tuple[int, int]:
    if groups < 1 or cin % groups or cout % groups:
        raise ProgramError(f"{name}: channels {cin}->{cout} not divisible by groups={groups}")
    return cin // groups, cout // groups


# ------------------------------------------------------------------------------------------------
# Source


@register_op
class Input(Op):
    """The normalised mosaic: 1 channel at full resolution.

    ``domain`` is the encoding the program's weights expect: ``"linear"`` (linear light), ``"srgb"`` (the
    sRGB transfer curve applied to white-balanced linear data) or ``"gamma2"`` (its square root: a perceptual
    encoding like sRGB whose transfer costs one square root in and one product out). The program itself
    computes in that domain; a kernel compiled with ``linear_io`` encodes its linear input and decodes its
    output around it.
    """

    name = "Input"
    arity = 0
    defaults = {"domain": "linear"}

    def infer(self, ins, p, period):
        if ins:
            raise ProgramError("Input takes no inputs")
        if p["domain"] not in DOMAINS:
            raise ProgramError(f"Input: unknown domain {p['domain']!r} (use one of {', '.join(DOMAINS)})")
        return Shape(1, 1)

    def reference(self, xs, p, w, ctx):  # pragma: no cover - the evaluator feeds it
        raise AssertionError("Input is fed by the evaluator")


# ------------------------------------------------------------------------------------------------
# Layout ops


@register_op
class Pack(Op):
    """Space-to-depth by ``factor``: ``(C, s) -> (C f^2, s f)``; channel ``c f^2 + j f + i`` is offset (j, i)."""

    name = "Pack"
    defaults = {"factor": None}
    heavy = True  # materialised: consumers then read dense vectors instead of stride-f gathers

    def infer(self, ins, p, period):
        self._check_arity(ins)
        f = p["factor"] or period
        return Shape(ins[0].channels * f * f, ins[0].scale * f)

    def reference(self, xs, p, w, ctx):
        a = xs[0]
        f = p["factor"] or ctx.pattern.shape[0]
        c, h, wd = a.shape
        return a.reshape(c, h // f, f, wd // f, f).transpose(0, 2, 4, 1, 3).reshape(c * f * f, h // f, wd // f)

    def torch(self, xs, p, w, ctx):
        return _t().nn.functional.pixel_unshuffle(xs[0], p["factor"] or ctx.pattern.shape[0])

    def halide(self, xs, p, w, ctx):
        f = p["factor"] or ctx.pattern.shape[0]
        src = xs[0]
        return [
            (lambda x, y, c=c, j=j, i=i: src(c, x * f + i, y * f + j))
            for c in range(src.shape.channels)
            for j in range(f)
            for i in range(f)
        ]


@register_op
class Unpack(Op):
    """Depth-to-space by ``factor``: the inverse of :class:`Pack`."""

    name = "Unpack"
    defaults = {"factor": None}

    def infer(self, ins, p, period):
        self._check_arity(ins)
        f = p["factor"] or period
        s = ins[0]
        if s.channels % (f * f) or s.scale % f:
            raise ProgramError(f"Unpack by {f}: needs channels divisible by {f * f} and scale by {f}, got {s}")
        return Shape(s.channels // (f * f), s.scale // f)

    def reference(self, xs, p, w, ctx):
        a = xs[0]
        f = p["factor"] or ctx.pattern.shape[0]
        c, h, wd = a.shape
        return a.reshape(c // (f * f), f, f, h, wd).transpose(0, 3, 1, 4, 2).reshape(c // (f * f), h * f, wd * f)

    def torch(self, xs, p, w, ctx):
        return _t().nn.functional.pixel_shuffle(xs[0], p["factor"] or ctx.pattern.shape[0])

    def halide(self, xs, p, w, ctx):
        hl = ctx.hl
        f = p["factor"] or ctx.pattern.shape[0]
        src = xs[0]
        co = src.shape.channels // (f * f)

        def make(c):
            def e(x, y):
                xi, yi = x % f, y % f
                return hl.mux(yi * f + xi, [src(c * f * f + k, x // f, y // f) for k in range(f * f)])

            return e

        return [make(c) for c in range(co)]


@register_op
class Stack(Op):
    """Concatenate channels of inputs on the same grid."""

    name = "Stack"
    arity = None

    def infer(self, ins, p, period):
        self._check_arity(ins)
        return Shape(sum(s.channels for s in ins), self._same_scale(ins))

    def reference(self, xs, p, w, ctx):
        return np.concatenate(xs, axis=0)

    def torch(self, xs, p, w, ctx):
        return _t().cat(list(xs), dim=1)

    def halide(self, xs, p, w, ctx):
        return [(lambda x, y, n=n, c=c: n(c, x, y)) for n in xs for c in range(n.shape.channels)]


@register_op
class Slice(Op):
    """Channels ``start .. start + count - 1`` of one input."""

    name = "Slice"
    required = ("start", "count")

    def infer(self, ins, p, period):
        self._check_arity(ins)
        if p["start"] < 0 or p["count"] < 1 or p["start"] + p["count"] > ins[0].channels:
            raise ProgramError(f"Slice {p['start']}+{p['count']} out of {ins[0].channels} channels")
        return Shape(p["count"], ins[0].scale)

    def reference(self, xs, p, w, ctx):
        return xs[0][p["start"] : p["start"] + p["count"]]

    def torch(self, xs, p, w, ctx):
        return xs[0][:, p["start"] : p["start"] + p["count"]]

    def halide(self, xs, p, w, ctx):
        n = xs[0]
        return [(lambda x, y, c=c: n(c, x, y)) for c in range(p["start"], p["start"] + p["count"])]


# ------------------------------------------------------------------------------------------------
# Pointwise arithmetic


class _Binary(Op):
    arity = 2
    fn: ClassVar[Callable[[Any, Any], Any]]

    def infer(self, ins, p, period):
        self._check_arity(ins)
        a, b = ins
        if a.scale != b.scale or (a.channels != b.channels and 1 not in (a.channels, b.channels)):
            raise ProgramError(f"{self.name}: incompatible inputs {a} and {b}")
        return Shape(max(a.channels, b.channels), a.scale)

    def cost(self, ins, out, p, w):
        return float(out.channels)

    def reference(self, xs, p, w, ctx):
        return type(self).fn(xs[0], xs[1]).astype(np.float32)

    def torch(self, xs, p, w, ctx):
        return type(self).fn(xs[0], xs[1])

    def halide(self, xs, p, w, ctx):
        a, b = xs
        n = max(a.shape.channels, b.shape.channels)
        ca = (lambda c: c) if a.shape.channels == n else (lambda c: 0)
        cb = (lambda c: c) if b.shape.channels == n else (lambda c: 0)
        fn = type(self).fn
        return [(lambda x, y, c=c: fn(a(ca(c), x, y), b(cb(c), x, y))) for c in range(n)]


@register_op
class Add(_Binary):
    """Elementwise sum (a 1-channel input broadcasts)."""

    name = "Add"
    fn = staticmethod(lambda a, b: a + b)


@register_op
class Sub(_Binary):
    """Elementwise difference (a 1-channel input broadcasts)."""

    name = "Sub"
    fn = staticmethod(lambda a, b: a - b)


@register_op
class Mul(_Binary):
    """Elementwise product (a 1-channel input broadcasts)."""

    name = "Mul"
    fn = staticmethod(lambda a, b: a * b)


@register_op
class ReLU(Op):
    """``max(x, 0)``."""

    name = "ReLU"

    def infer(self, ins, p, period):
        self._check_arity(ins)
        return ins[0]

    def cost(self, ins, out, p, w):
        return float(out.channels)

    def reference(self, xs, p, w, ctx):
        return np.maximum(xs[0], 0).astype(np.float32)

    def torch(self, xs, p, w, ctx):
        return _t().relu(xs[0])

    def halide(self, xs, p, w, ctx):
        hl, n = ctx.hl, xs[0]
        return [(lambda x, y, c=c: hl.max(n(c, x, y), 0.0)) for c in range(n.shape.channels)]


@register_op
class Softmax(Op):
    """Softmax across channels (max-subtracted): the weights of a weighted interpolation."""

    name = "Softmax"
    heavy = True

    def infer(self, ins, p, period):
        self._check_arity(ins)
        return ins[0]

    def cost(self, ins, out, p, w):
        return 4.0 * out.channels  # max, exp, sum, divide

    def reference(self, xs, p, w, ctx):
        a = xs[0].astype(np.float64)
        e = np.exp(a - a.max(axis=0, keepdims=True))
        return (e / e.sum(axis=0, keepdims=True)).astype(np.float32)

    def halide(self, xs, p, w, ctx):
        hl, n = ctx.hl, xs[0]
        cn = n.shape.channels
        scale = n.shape.scale

        def mx(x, y):
            v = n(0, x, y)
            for c in range(1, cn):
                v = hl.max(v, n(c, x, y))
            return v

        # exponentials and their sum are computed once per pixel in materialised helpers
        m = ctx.helper("softmax_max", [mx], scale)
        e = ctx.helper("softmax_exp", [(lambda x, y, c=c: hl.exp(n(c, x, y) - m(0, x, y))) for c in range(cn)], scale)
        s = ctx.helper("softmax_sum", [lambda x, y: _sum_exprs([e(c, x, y) for c in range(cn)], hl.f32(0.0))], scale)
        return [(lambda x, y, c=c: e(c, x, y) / s(0, x, y)) for c in range(cn)]

    def torch(self, xs, p, w, ctx):
        return _t().softmax(xs[0], dim=1)


@register_op
class GroupedSum(Op):
    """Sum consecutive groups of ``C / out_channels`` channels."""

    name = "GroupedSum"
    required = ("out_channels",)

    def infer(self, ins, p, period):
        self._check_arity(ins)
        o = p["out_channels"]
        if o < 1 or ins[0].channels % o:
            raise ProgramError(f"GroupedSum: {ins[0].channels} channels not divisible into {o}")
        return Shape(o, ins[0].scale)

    def cost(self, ins, out, p, w):
        return float(ins[0].channels - out.channels)

    def reference(self, xs, p, w, ctx):
        a = xs[0]
        o = p["out_channels"]
        return a.reshape(o, a.shape[0] // o, *a.shape[1:]).sum(axis=1)

    def torch(self, xs, p, w, ctx):
        a, o = xs[0], p["out_channels"]
        return a.reshape(a.shape[0], o, a.shape[1] // o, *a.shape[2:]).sum(dim=2)

    def halide(self, xs, p, w, ctx):
        hl, n = ctx.hl, xs[0]
        o = p["out_channels"]
        k = n.shape.channels // o
        return [(lambda x, y, c=c: _sum_exprs([n(c * k + j, x, y) for j in range(k)], hl.f32(0))) for c in range(o)]


@register_op
class InterleavedSum(Op):
    """Sum channels ``c, c + O, c + 2 O, ...`` for each of ``O = out_channels`` outputs."""

    name = "InterleavedSum"
    required = ("out_channels",)

    def infer(self, ins, p, period):
        return GroupedSum.infer(self, ins, p, period)  # same rule

    def cost(self, ins, out, p, w):
        return float(ins[0].channels - out.channels)

    def reference(self, xs, p, w, ctx):
        a = xs[0]
        o = p["out_channels"]
        return a.reshape(a.shape[0] // o, o, *a.shape[1:]).sum(axis=0)

    def torch(self, xs, p, w, ctx):
        a, o = xs[0], p["out_channels"]
        return a.reshape(a.shape[0], a.shape[1] // o, o, *a.shape[2:]).sum(dim=1)

    def halide(self, xs, p, w, ctx):
        hl, n = ctx.hl, xs[0]
        o = p["out_channels"]
        k = n.shape.channels // o
        return [(lambda x, y, c=c: _sum_exprs([n(j * o + c, x, y) for j in range(k)], hl.f32(0))) for c in range(o)]


# ------------------------------------------------------------------------------------------------
# Learned linear ops


class _Conv(Op):
    """Shared machinery of grouped convolutions with taps ``taps(p) -> [(dy, dx)]``."""

    weighted = True
    heavy = True
    required = ("out_channels",)
    defaults = {"groups": 1, "bias": True}

    def taps(self, p: Mapping[str, Any]) -> list[tuple[int, int]]:
        raise NotImplementedError

    def kshape(self, p: Mapping[str, Any]) -> tuple[int, ...]:
        raise NotImplementedError

    def infer(self, ins, p, period):
        self._check_arity(ins)
        _group_slices(ins[0].channels, p["out_channels"], p["groups"], self.name)
        return Shape(p["out_channels"], ins[0].scale)

    def weight_shapes(self, ins, p):
        cin_g, _ = _group_slices(ins[0].channels, p["out_channels"], p["groups"], self.name)
        shapes = {"weight": (p["out_channels"], cin_g, *self.kshape(p))}
        if p["bias"]:
            shapes["bias"] = (p["out_channels"],)
        return shapes

    def cost(self, ins, out, p, w):
        return float(_nnz(w.get("weight"), w.get("bias")))

    def radius(self, p):
        return max(max(abs(dy), abs(dx)) for dy, dx in self.taps(p))

    def _flat(self, w: Mapping[str, np.ndarray], p) -> np.ndarray:
        wt = np.asarray(w["weight"], np.float32)
        return wt.reshape(wt.shape[0], wt.shape[1], -1)  # (O, Cg, taps)

    def reference(self, xs, p, w, ctx):
        a = xs[0].astype(np.float32)
        o, g = p["out_channels"], p["groups"]
        cin_g, cout_g = _group_slices(a.shape[0], o, g, self.name)
        wt = self._flat(w, p)
        taps = self.taps(p)
        shifted = [_shift(a, dy, dx) for dy, dx in taps]  # each (C, H, W)
        out = np.zeros((o, *a.shape[1:]), np.float32)
        for oc in range(o):
            grp = oc // cout_g
            for ci in range(cin_g):
                for t in range(len(taps)):
                    if wt[oc, ci, t] != 0:
                        out[oc] += wt[oc, ci, t] * shifted[t][grp * cin_g + ci]
        if p["bias"]:
            out += np.asarray(w["bias"], np.float32)[:, None, None]
        return out

    def torch(self, xs, p, w, ctx):
        F = _t().nn.functional
        taps = self.taps(p)
        dys = sorted({dy for dy, _ in taps})
        dxs = sorted({dx for _, dx in taps})
        wt = w["weight"].reshape(w["weight"].shape[0], w["weight"].shape[1], len(dys), len(dxs))
        dil = (dys[1] - dys[0] if len(dys) > 1 else 1, dxs[1] - dxs[0] if len(dxs) > 1 else 1)
        return F.conv2d(xs[0], wt, w.get("bias"), padding=(-dys[0], -dxs[0]), dilation=dil, groups=p["groups"])

    def dense(self, p, w) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]], int]:
        """``(weight (O, Cin / groups, taps), bias (O,), taps, groups)`` of the convolution.

        The compiler lowers a layer with enough taps times input channels per group as one reduction
        over (tap, input channel of the output's group) with the weights in a buffer
        (:func:`rawdemosaic.program.compiler._dense_conv`) instead of one constant-weight expression per
        output channel.
        """
        wt = self._flat(w, p)
        bias = np.asarray(w["bias"], np.float32) if p["bias"] else np.zeros(wt.shape[0], np.float32)
        return wt, bias, self.taps(p), p["groups"]

    def halide(self, xs, p, w, ctx):
        n = xs[0]
        o, g = p["out_channels"], p["groups"]
        cin_g, cout_g = _group_slices(n.shape.channels, o, g, self.name)
        wt = self._flat(w, p)
        bias = np.asarray(w["bias"], np.float32) if p["bias"] else np.zeros(o, np.float32)
        taps = self.taps(p)

        def make(oc):
            grp = oc // cout_g

            def e(x, y):
                pairs = [
                    (wt[oc, ci, t], n(grp * cin_g + ci, x + dx, y + dy))
                    for ci in range(cin_g)
                    for t, (dy, dx) in enumerate(taps)
                ]
                return _mac(pairs, bias[oc], ctx.hl)

            return e

        return [make(oc) for oc in range(o)]


@register_op
class Conv1x1(_Conv):
    """Grouped pointwise (1x1) convolution."""

    name = "Conv1x1"

    def taps(self, p):
        return [(0, 0)]

    def kshape(self, p):
        return ()


@register_op
class Conv1D(_Conv):
    """Grouped 1-D convolution along ``axis`` ("x" or "y") with ``kernel`` taps (odd) and ``dilation``."""

    name = "Conv1D"
    defaults = {"groups": 1, "bias": True, "kernel": 3, "axis": "x", "dilation": 1}

    def infer(self, ins, p, period):
        if p["axis"] not in ("x", "y") or p["kernel"] < 1 or p["kernel"] % 2 == 0 or p["dilation"] < 1:
            raise ProgramError(f"Conv1D: bad axis/kernel/dilation {p['axis']}/{p['kernel']}/{p['dilation']}")
        return super().infer(ins, p, period)

    def taps(self, p):
        r = p["kernel"] // 2
        d = p["dilation"]
        return [(k * d, 0) if p["axis"] == "y" else (0, k * d) for k in range(-r, r + 1)]

    def kshape(self, p):
        return (p["kernel"],)


@register_op
class Conv2D(_Conv):
    """Grouped 2-D convolution, square ``kernel`` (odd, 3 by default) with ``dilation``."""

    name = "Conv2D"
    defaults = {"groups": 1, "bias": True, "kernel": 3, "dilation": 1}

    def infer(self, ins, p, period):
        if p["kernel"] < 1 or p["kernel"] % 2 == 0 or p["dilation"] < 1:
            raise ProgramError(f"Conv2D: bad kernel/dilation {p['kernel']}/{p['dilation']}")
        return super().infer(ins, p, period)

    def taps(self, p):
        r = p["kernel"] // 2
        d = p["dilation"]
        return [(ky * d, kx * d) for ky in range(-r, r + 1) for kx in range(-r, r + 1)]

    def kshape(self, p):
        return (p["kernel"], p["kernel"])


# ------------------------------------------------------------------------------------------------
# Resolution changes


def _interp_weights(f: int, mode: str) -> list[list[tuple[int, float]]]:
    """For each fine phase ``i`` in ``[0, f)``: ``[(coarse offset, weight)]`` (sample-centre aligned)."""
    out = []
    for i in range(f):
        u = (i - (f - 1) / 2) / f  # position in coarse samples relative to X
        x0 = math.floor(u)
        t = u - x0
        if mode == "nearest":
            out.append([(round(u), 1.0)])
        elif mode == "bilinear":
            out.append([(k, wv) for k, wv in ((x0, 1 - t), (x0 + 1, t)) if wv != 0.0])
        else:  # bicubic, Keys a = -0.5
            def kern(d: float, a: float = -0.5) -> float:
                d = abs(d)
                if d <= 1:
                    return (a + 2) * d**3 - (a + 3) * d**2 + 1
                if d < 2:
                    return a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a
                return 0.0

            out.append([(k, kern(u - k)) for k in range(x0 - 1, x0 + 3) if kern(u - k) != 0.0])
    return out


@register_op
class Upsample(Op):
    """Fixed up-sampling by ``factor`` ("nearest", "bilinear" or "bicubic"; separable, centre-aligned)."""

    name = "Upsample"
    required = ("factor",)
    defaults = {"mode": "bilinear"}
    heavy = True

    def infer(self, ins, p, period):
        self._check_arity(ins)
        f = p["factor"]
        if p["mode"] not in ("nearest", "bilinear", "bicubic"):
            raise ProgramError(f"Upsample: unknown mode {p['mode']!r}")
        if f < 2 or ins[0].scale % f:
            raise ProgramError(f"Upsample by {f} from scale {ins[0].scale}")
        return Shape(ins[0].channels, ins[0].scale // f)

    def cost(self, ins, out, p, w):
        taps = {"nearest": 0, "bilinear": 4, "bicubic": 16}[p["mode"]]
        return float(taps * out.channels)

    def radius(self, p):
        return 2

    def reference(self, xs, p, w, ctx):
        a = xs[0]
        f = p["factor"]
        wts = _interp_weights(f, p["mode"])
        # rows then columns (separable)
        c, h, wd = a.shape
        tmp = np.zeros((c, h * f, wd), np.float32)
        for j in range(f):
            tmp[:, j::f] = sum(wv * _shift(a, k, 0) for k, wv in wts[j])
        out = np.zeros((c, h * f, wd * f), np.float32)
        for i in range(f):
            out[:, :, i::f] = sum(wv * _shift(tmp, 0, k) for k, wv in wts[i])
        return out

    def torch(self, xs, p, w, ctx):
        torch = _t()
        a = xs[0]
        f = p["factor"]
        wts = _interp_weights(f, p["mode"])
        n, c, h, wd = a.shape
        rows = torch.stack([sum(wv * _tshift(a, k, 0) for k, wv in wts[j]) for j in range(f)], dim=3)
        tmp = rows.reshape(n, c, h * f, wd)
        cols = torch.stack([sum(wv * _tshift(tmp, 0, k) for k, wv in wts[i]) for i in range(f)], dim=4)
        return cols.reshape(n, c, h * f, wd * f)

    def halide(self, xs, p, w, ctx):
        hl, n = ctx.hl, xs[0]
        f = p["factor"]
        wts = _interp_weights(f, p["mode"])

        def make(c):
            def e(x, y):
                X, Y = x // f, y // f
                per_phase = []
                for j in range(f):
                    row = []
                    for i in range(f):
                        pairs = [(wy * wx, n(c, X + kx, Y + ky)) for ky, wy in wts[j] for kx, wx in wts[i]]
                        row.append(_mac(pairs, 0.0, hl))
                    per_phase.extend(row)
                return hl.mux((y % f) * f + (x % f), per_phase) if f * f > 1 else per_phase[0]

            return e

        return [make(c) for c in range(n.shape.channels)]


@register_op
class LearnedUpsample(Op):
    """Learned up-sampling by ``factor``: a 1x1 map to ``out_channels * f^2`` values, one per fine phase."""

    name = "LearnedUpsample"
    required = ("factor", "out_channels")
    defaults = {"bias": True}
    weighted = True
    heavy = True

    def infer(self, ins, p, period):
        self._check_arity(ins)
        f = p["factor"]
        if f < 2 or ins[0].scale % f:
            raise ProgramError(f"LearnedUpsample by {f} from scale {ins[0].scale}")
        return Shape(p["out_channels"], ins[0].scale // f)

    def weight_shapes(self, ins, p):
        f2 = p["factor"] ** 2
        shapes = {"weight": (p["out_channels"] * f2, ins[0].channels)}
        if p["bias"]:
            shapes["bias"] = (p["out_channels"] * f2,)
        return shapes

    def cost(self, ins, out, p, w):
        return _nnz(w.get("weight"), w.get("bias")) / p["factor"] ** 2

    def reference(self, xs, p, w, ctx):
        a = xs[0]
        wt = np.asarray(w["weight"], np.float32)
        y = np.tensordot(wt, a, axes=(1, 0))
        if p["bias"]:
            y += np.asarray(w["bias"], np.float32)[:, None, None]
        return Unpack.reference(self, [y.astype(np.float32)], {"factor": p["factor"]}, w, ctx)

    def torch(self, xs, p, w, ctx):
        F = _t().nn.functional
        y = F.conv2d(xs[0], w["weight"][:, :, None, None], w.get("bias"))
        return F.pixel_shuffle(y, p["factor"])

    def halide(self, xs, p, w, ctx):
        hl, n = ctx.hl, xs[0]
        f = p["factor"]
        wt = np.asarray(w["weight"], np.float32)
        bias = np.asarray(w["bias"], np.float32) if p["bias"] else np.zeros(wt.shape[0], np.float32)
        cin = n.shape.channels

        def make(o):
            def e(x, y):
                X, Y = x // f, y // f
                vals = []
                for k in range(f * f):
                    row = o * f * f + k
                    vals.append(_mac([(wt[row, ci], n(ci, X, Y)) for ci in range(cin)], bias[row], hl))
                return hl.mux((y % f) * f + (x % f), vals)

            return e

        return [make(o) for o in range(p["out_channels"])]


@register_op
class Downsample(Op):
    """Learned down-sampling by ``factor``: a stride-``f`` convolution over each ``f x f`` block."""

    name = "Downsample"
    required = ("factor", "out_channels")
    defaults = {"bias": True}
    weighted = True
    heavy = True

    def infer(self, ins, p, period):
        self._check_arity(ins)
        if p["factor"] < 2:
            raise ProgramError("Downsample factor must be >= 2")
        return Shape(p["out_channels"], ins[0].scale * p["factor"])

    def weight_shapes(self, ins, p):
        f = p["factor"]
        shapes = {"weight": (p["out_channels"], ins[0].channels, f, f)}
        if p["bias"]:
            shapes["bias"] = (p["out_channels"],)
        return shapes

    def cost(self, ins, out, p, w):
        return float(_nnz(w.get("weight"), w.get("bias")))

    def radius(self, p):
        return p["factor"]

    def reference(self, xs, p, w, ctx):
        a = Pack.reference(self, xs, {"factor": p["factor"]}, w, ctx)
        wt = np.asarray(w["weight"], np.float32)
        wt = wt.reshape(wt.shape[0], -1)  # (O, C*f*f) matching Pack's channel order
        y = np.tensordot(wt, a, axes=(1, 0))
        if p["bias"]:
            y += np.asarray(w["bias"], np.float32)[:, None, None]
        return y.astype(np.float32)

    def torch(self, xs, p, w, ctx):
        F = _t().nn.functional
        a = F.pixel_unshuffle(xs[0], p["factor"])
        wt = w["weight"].reshape(w["weight"].shape[0], -1)
        return F.conv2d(a, wt[:, :, None, None], w.get("bias"))

    def dense(self, p, w) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]], int, int]:
        """``(weight (O, C, f * f), bias, taps, 1, stride f)``: the compiler lowers it as a strided dense
        reduction (:func:`rawdemosaic.program.compiler._dense_conv`), like :meth:`_Conv.dense`."""
        f = p["factor"]
        wt = np.asarray(w["weight"], np.float32)
        bias = np.asarray(w["bias"], np.float32) if p["bias"] else np.zeros(wt.shape[0], np.float32)
        return wt.reshape(wt.shape[0], wt.shape[1], f * f), bias, [(j, i) for j in range(f) for i in range(f)], 1, f

    def halide(self, xs, p, w, ctx):
        hl, n = ctx.hl, xs[0]
        f = p["factor"]
        wt = np.asarray(w["weight"], np.float32)
        bias = np.asarray(w["bias"], np.float32) if p["bias"] else np.zeros(wt.shape[0], np.float32)

        def make(o):
            def e(x, y):
                pairs = [
                    (wt[o, c, j, i], n(c, x * f + i, y * f + j))
                    for c in range(n.shape.channels)
                    for j in range(f)
                    for i in range(f)
                ]
                return _mac(pairs, bias[o], hl)

            return e

        return [make(o) for o in range(p["out_channels"])]


# ------------------------------------------------------------------------------------------------
# Demosaicking-specific: put predictions back where the sensor has no sample of that colour.


def _per_position(n: "HNode", k: int, per: int, x: Any, y: Any, period: int, hl: Any, cfa_phase: tuple[Any, Any]) -> Any:
    """Value of prediction ``k`` at full-res (x, y): packed (``per`` channels a tile position) or full-res."""
    if n.shape.scale == 1:
        return n(k, x, y)
    xi, yi = cfa_phase
    return hl.mux(yi * period + xi, [n(k * per + q, x // period, y // period) for q in range(per)])


def _pred_layout(pred: Shape, groups: int, period: int, name: str) -> int:
    """Validate a prediction input: ``groups`` channels at scale 1, or ``groups * p^2`` at scale p."""
    if pred.scale == 1 and pred.channels == groups:
        return 1
    if pred.scale == period and pred.channels == groups * period * period:
        return period * period
    raise ProgramError(
        f"{name}: prediction must be ({groups} ch, scale 1) or ({groups * period * period} ch, scale {period}); got {pred}"
    )


def _pred_ref(a: np.ndarray, per: int, period: int) -> np.ndarray:
    """Full-resolution view of a prediction stack: ``(groups, H, W)``."""
    if per == 1:
        return a
    g = a.shape[0] // per
    return Unpack.reference(Unpack(), [a], {"factor": period}, {}, None).reshape(g, a.shape[1] * period, a.shape[2] * period)  # type: ignore[arg-type]


def _cfa_map(ctx: RefContext, h: int, w: int) -> np.ndarray:
    pat = ctx.pattern
    p = pat.shape[0]
    return np.tile(np.roll(pat, (-(ctx.origin_y % p), -(ctx.origin_x % p)), axis=(0, 1)), (h // p + 1, w // p + 1))[:h, :w]


@register_op
class GreenInsert(Op):
    """Full-resolution green: the mosaic where the CFA is green, the prediction elsewhere.

    Inputs: the mosaic, and a prediction of 1 channel at full resolution or ``p^2`` channels at scale
    ``p`` (one per tile position; those at green positions are ignored).
    """

    name = "GreenInsert"
    arity = 2

    def infer(self, ins, p, period):
        self._check_arity(ins)
        if ins[0] != Shape(1, 1):
            raise ProgramError("GreenInsert: first input must be the mosaic (1 ch, scale 1)")
        _pred_layout(ins[1], 1, period, self.name)
        return Shape(1, 1)

    def reference(self, xs, p, w, ctx):
        m, pred = xs
        period = ctx.pattern.shape[0]
        per = _pred_layout(Shape(pred.shape[0], m.shape[1] // pred.shape[1]), 1, period, self.name)
        full = _pred_ref(pred, per, period)
        cmap = _cfa_map(ctx, *m.shape[1:])
        return np.where(cmap == 1, m[0], full[0])[None].astype(np.float32)

    def torch(self, xs, p, w, ctx):
        torch = _t()
        m, pred = xs
        period = ctx.pattern.shape[0]
        full = pred if pred.shape[-1] == m.shape[-1] else torch.nn.functional.pixel_shuffle(pred, period)
        return torch.where(_cfa_mask_t(ctx, m, 1), m, full)

    def halide(self, xs, p, w, ctx):
        hl = ctx.hl
        m, pred = xs
        period = ctx.pattern.shape[0]
        per = _pred_layout(pred.shape, 1, period, self.name)

        def e(x, y):
            phase = (x % period, y % period)
            is_green = ctx.is_color(x, y, 1)
            return hl.select(is_green, m(0, x, y), _per_position(pred, 0, per, x, y, period, hl, phase))

        return [e]


@register_op
class ChromaInsert(Op):
    """Full-resolution RGB from the mosaic, full-res green and red/blue predictions.

    The prediction holds red then blue (2 channels at full res, or ``2 p^2`` at scale ``p``). In mode
    ``"diff"`` (default) they are differences to green (R = G + pred); in ``"direct"`` the values themselves.
    The sensor's own samples always pass through unchanged.
    """

    name = "ChromaInsert"
    arity = 3
    defaults = {"mode": "diff"}

    def infer(self, ins, p, period):
        self._check_arity(ins)
        if ins[0] != Shape(1, 1) or ins[1] != Shape(1, 1):
            raise ProgramError("ChromaInsert: mosaic and green must be (1 ch, scale 1)")
        if p["mode"] not in ("diff", "direct"):
            raise ProgramError(f"ChromaInsert: unknown mode {p['mode']!r}")
        _pred_layout(ins[2], 2, period, self.name)
        return Shape(3, 1)

    def reference(self, xs, p, w, ctx):
        m, g, pred = xs
        period = ctx.pattern.shape[0]
        per = _pred_layout(Shape(pred.shape[0], m.shape[1] // pred.shape[1]), 2, period, self.name)
        full = _pred_ref(pred, per, period)
        if p["mode"] == "diff":
            full = full + g
        cmap = _cfa_map(ctx, *m.shape[1:])
        r = np.where(cmap == 0, m[0], full[0])
        b = np.where(cmap == 2, m[0], full[1])
        return np.stack([r, g[0], b]).astype(np.float32)

    def torch(self, xs, p, w, ctx):
        torch = _t()
        m, g, pred = xs
        period = ctx.pattern.shape[0]
        full = pred if pred.shape[-1] == m.shape[-1] else torch.nn.functional.pixel_shuffle(pred, period)
        if p["mode"] == "diff":
            full = full + g
        r = torch.where(_cfa_mask_t(ctx, m, 0), m, full[:, 0:1])
        b = torch.where(_cfa_mask_t(ctx, m, 2), m, full[:, 1:2])
        return torch.cat([r, g, b], dim=1)

    def halide(self, xs, p, w, ctx):
        hl = ctx.hl
        m, g, pred = xs
        period = ctx.pattern.shape[0]
        per = _pred_layout(pred.shape, 2, period, self.name)
        diff = p["mode"] == "diff"

        def chan(k, colour):
            def e(x, y):
                v = _per_position(pred, k, per, x, y, period, hl, (x % period, y % period))
                if diff:
                    v = g(0, x, y) + v
                return hl.select(ctx.is_color(x, y, colour), m(0, x, y), v)

            return e

        return [chan(0, 0), (lambda x, y: g(0, x, y)), chan(1, 2)]


def _lattice_offset(pattern: np.ndarray, colour: int, name: str) -> tuple[int, int]:
    """``(row, column)`` of ``colour``'s one sample in each CFA tile (Bayer); an error for other layouts."""
    where = np.argwhere(pattern == colour)
    if len(where) != 1:
        raise ProgramError(f"{name}: needs one sample of each of red and blue per CFA tile (Bayer), not {len(where)}")
    return int(where[0][0]), int(where[0][1])


def _lattice_taps(phase: int, offset: int, p: int) -> list[tuple[int, float]]:
    """Linear interpolation along one axis from a lattice of period ``p`` anchored at ``offset``:
    ``[(lattice index relative to x // p, weight)]`` for a full-resolution pixel of phase ``x % p``."""
    d = phase - offset
    if d == 0:
        return [(0, 1.0)]
    if d > 0:
        return [(0, 1.0 - d / p), (1, d / p)]
    return [(-1, -d / p), (0, 1.0 + d / p)]


def _lattice_up_ref(v: np.ndarray, oy: int, ox: int, p: int) -> np.ndarray:
    """Bilinear interpolation of lattice values ``(C, H/p, W/p)`` (sample ``(Y, X)`` at pixel ``(pY + oy, pX + ox)``)."""
    c, h, w = v.shape
    rows = np.zeros((c, h * p, w), np.float32)
    for j in range(p):
        rows[:, j::p] = sum(wt * _shift(v, k, 0) for k, wt in _lattice_taps(j, oy, p))
    out = np.zeros((c, h * p, w * p), np.float32)
    for i in range(p):
        out[:, :, i::p] = sum(wt * _shift(rows, 0, k) for k, wt in _lattice_taps(i, ox, p))
    return out


def _box_ref(a: np.ndarray, r: int) -> np.ndarray:
    """Mean over ``(2r+1)^2`` windows, zeros outside (as the other references pad)."""
    inv = np.float32(1.0 / (2 * r + 1))  # each pass scaled, as the Halide lowering does (rounding alike)
    rows = (sum(_shift(a, 0, k) for k in range(-r, r + 1)) * inv).astype(np.float32)
    return (sum(_shift(rows, k, 0) for k in range(-r, r + 1)) * inv).astype(np.float32)


@register_op
class ResidualChroma(Op):
    """Red and blue by residual interpolation guided by full-resolution green.

    Inputs: the mosaic and full-resolution green (1 channel each); output RGB. For each of red and blue
    the samples form a lattice of period ``p`` (one per CFA tile: Bayer). On that lattice a local linear
    model ``R ~ a G + b`` is fitted by regularised least squares over ``(2 radius + 1)^2`` samples,
    ``a = (covariance + eps prior) / (variance + eps)`` (a guided filter's slope, shrunk towards ``prior``
    where green is flat), and ``a`` is averaged over the same window. The output is
    ``a G`` plus the bilinear interpolation of the residuals ``R - a G`` at the samples: where ``a = 1`` this is
    colour-difference interpolation, where ``a = 0`` plain bilinear interpolation of the samples, and the
    fit picks between and beyond them per neighbourhood. (The fitted offset ``b`` cancels: it is interpolated
    back out of the residuals.) The fit runs at the lattice's resolution, so the op costs about 40
    operations per pixel. The sensor's own samples pass through unchanged.

    References
    ----------
    D. Kiku, Y. Monno, M. Tanaka, M. Okutomi, "Residual interpolation for color image demosaicking",
    ICIP 2013. K. He, J. Sun, X. Tang, "Guided image filtering", TPAMI 2013.
    """

    name = "ResidualChroma"
    arity = 2
    defaults = {"radius": 1, "eps": 1e-3, "prior": 1.0}
    heavy = True
    periods = (2,)
    wide_helpers = True  # per colour 12 lattice channels (products, row sums, slope, its row sums, fit), 8 px of reach

    def infer(self, ins, p, period):
        self._check_arity(ins)
        if ins[0] != Shape(1, 1) or ins[1] != Shape(1, 1):
            raise ProgramError("ResidualChroma: mosaic and green must be (1 ch, scale 1)")
        if not isinstance(p["radius"], int) or p["radius"] < 1:
            raise ProgramError(f"ResidualChroma: radius must be an integer >= 1, got {p['radius']!r}")
        # the kernels compute in float32: eps must stay a normal positive float32 and eps * prior finite
        tiny, big = float(np.finfo(np.float32).tiny), float(np.finfo(np.float32).max)  # compared as Python floats
        if not isinstance(p["eps"], (int, float)) or not tiny <= p["eps"] <= big:
            raise ProgramError(f"ResidualChroma: eps must be a positive float32 ({tiny:.3g} to {big:.3g}), got {p['eps']!r}")
        if not isinstance(p["prior"], (int, float)) or not abs(p["eps"] * p["prior"]) <= big:
            raise ProgramError(f"ResidualChroma: prior must be a number with eps * prior within float32, got {p['prior']!r}")
        if period != 2:
            raise ProgramError(f"ResidualChroma: needs one sample of each of red and blue per CFA tile (Bayer), not a period-{period} CFA")
        return Shape(3, 1)

    def cost(self, ins, out, p, w):
        k = 2 * p["radius"] + 1
        # on the lattice: 2 products, 4 box means, the slope (7), its box mean, the residual (2)
        lattice = 2 + 4 * (2 * (k - 1) + 1) + 7 + (2 * (k - 1) + 1) + 2
        full = 4 + 4 + 2  # two bilinear interpolations, a G + residual, the sample select
        return 2.0 * (lattice / 4.0 + full)

    def radius(self, p):
        return 2 * (2 * p["radius"] + 2)

    # The lattice stage, shared by the three evaluations: given lattice green and samples, the
    # slope averaged over the window and the residual ``S - a G``.
    @staticmethod
    def _fit(gp: Any, sp: Any, box: Callable[[Any], Any], eps: Any, shrink: Any) -> tuple[Any, Any]:
        mg, ms, mgs, mgg = box(gp), box(sp), box(gp * sp), box(gp * gp)
        a = box((mgs - mg * ms + shrink) / (mgg - mg * mg + eps))
        return a, sp - a * gp

    def reference(self, xs, p, w, ctx):
        m, g = (a.astype(np.float32) for a in xs)
        pat = ctx.pattern
        per = pat.shape[0]
        cmap = _cfa_map(ctx, *m.shape[1:])
        out = [None, g[0], None]
        for colour in (0, 2):
            oy, ox = _lattice_offset(pat, colour, self.name)
            sy, sx = (oy - ctx.origin_y) % per, (ox - ctx.origin_x) % per  # the lattice in the region's indices
            a, res = self._fit(g[:, sy::per, sx::per], m[:, sy::per, sx::per], lambda v: _box_ref(v, p["radius"]), np.float32(p["eps"]), np.float32(p["eps"] * p["prior"]))
            est = _lattice_up_ref(a, sy, sx, per) * g + _lattice_up_ref(res, sy, sx, per)
            out[colour] = np.where(cmap == colour, m[0], est[0])
        return np.stack(out).astype(np.float32)

    def torch(self, xs, p, w, ctx):
        torch = _t()
        F = torch.nn.functional
        m, g = xs
        pat = ctx.pattern
        per = pat.shape[0]
        r = p["radius"]

        def up(v, oy, ox):
            n, c, h, wd = v.shape
            rows = torch.stack([sum(wt * _tshift(v, k, 0) for k, wt in _lattice_taps(j, oy, per)) for j in range(per)], dim=3)
            rows = rows.reshape(n, c, h * per, wd)
            cols = torch.stack([sum(wt * _tshift(rows, 0, k) for k, wt in _lattice_taps(i, ox, per)) for i in range(per)], dim=4)
            return cols.reshape(n, c, h * per, wd * per)

        out = [None, g, None]
        for colour in (0, 2):
            oy, ox = _lattice_offset(pat, colour, self.name)
            sy, sx = (oy - ctx.origin_y) % per, (ox - ctx.origin_x) % per
            a, res = self._fit(
                g[..., sy::per, sx::per], m[..., sy::per, sx::per],
                lambda v: F.avg_pool2d(v, 2 * r + 1, stride=1, padding=r, count_include_pad=True), float(p["eps"]), float(np.float32(p["eps"] * p["prior"])),
            )
            est = up(a, sy, sx) * g + up(res, sy, sx)
            out[colour] = torch.where(_cfa_mask_t(ctx, m, colour), m, est)
        return torch.cat(out, dim=1)

    def halide(self, xs, p, w, ctx):
        hl = ctx.hl
        m, g = xs
        pat = ctx.pattern
        per = pat.shape[0]
        r = p["radius"]
        norm = hl.f32(1.0 / (2 * r + 1))
        outs: list[Callable] = [None, (lambda x, y: g(0, x, y)), None]  # type: ignore[list-item]
        for colour in (0, 2):
            oy, ox = _lattice_offset(pat, colour, self.name)
            tag = "r" if colour == 0 else "b"

            def at(node, k, X, Y, oy=oy, ox=ox):
                return node(k, X * per + ox, Y * per + oy)

            # lattice green, samples, and their products, then the window sums (rows, then columns)
            prods = ctx.helper(f"rc_{tag}_p", [
                (lambda X, Y, at=at: at(g, 0, X, Y)),
                (lambda X, Y, at=at: at(m, 0, X, Y)),
                (lambda X, Y, at=at: at(g, 0, X, Y) * at(m, 0, X, Y)),
                (lambda X, Y, at=at: at(g, 0, X, Y) * at(g, 0, X, Y)),
            ], per)

            def hsum(node, k):
                return lambda X, Y: _sum_exprs([node(k, X + d, Y) for d in range(-r, r + 1)], hl.f32(0.0)) * norm

            def vsum(node, k, X, Y):
                return _sum_exprs([node(k, X, Y + d) for d in range(-r, r + 1)], hl.f32(0.0)) * norm

            rows = ctx.helper(f"rc_{tag}_h", [hsum(prods, k) for k in range(4)], per)

            def slope(X, Y, rows=rows):
                mg, ms, mgs, mgg = (vsum(rows, k, X, Y) for k in range(4))
                return (mgs - mg * ms + hl.f32(float(np.float32(p["eps"] * p["prior"])))) / (mgg - mg * mg + hl.f32(float(p["eps"])))

            a = ctx.helper(f"rc_{tag}_a", [slope], per)
            a_rows = ctx.helper(f"rc_{tag}_ah", [hsum(a, 0)], per)

            def fitted(X, Y, a_rows=a_rows, prods=prods):
                abar = vsum(a_rows, 0, X, Y)
                return abar, prods(1, X, Y) - abar * prods(0, X, Y)

            fit = ctx.helper(f"rc_{tag}_fit", [(lambda X, Y, f=fitted: f(X, Y)[0]), (lambda X, Y, f=fitted: f(X, Y)[1])], per)

            def make(colour=colour, oy=oy, ox=ox, fit=fit):
                def e(x, y):
                    X, Y = x // per, y // per
                    phases = []
                    for j in range(per):
                        for i in range(per):
                            taps = [(dy, dx, wy * wx) for dy, wy in _lattice_taps(j, oy, per) for dx, wx in _lattice_taps(i, ox, per)]
                            a_up = _mac([(wt, fit(0, X + dx, Y + dy)) for dy, dx, wt in taps], 0.0, hl)
                            r_up = _mac([(wt, fit(1, X + dx, Y + dy)) for dy, dx, wt in taps], 0.0, hl)
                            phases.append(a_up * g(0, x, y) + r_up)
                    v = hl.mux((y % per) * per + (x % per), phases)
                    return hl.select(ctx.is_color(x, y, colour), m(0, x, y), v)

                return e

            outs[colour] = make()
        return outs


# ------------------------------------------------------------------------------------------------
# Efficient-convolution blocks beyond the paper's set (the search can switch them off).


def _depthwise_ref(a: np.ndarray, dw: np.ndarray, k: int, d: int) -> np.ndarray:
    r = k // 2
    out = np.zeros_like(a)
    for ky in range(k):
        for kx in range(k):
            out += dw[:, 0, ky, kx][:, None, None] * _shift(a, (ky - r) * d, (kx - r) * d)
    return out


def _depthwise_hl(n: HNode, dw: np.ndarray, k: int, d: int, hl: Any) -> list[Callable]:
    r = k // 2
    return [
        (lambda x, y, c=c: _mac([(dw[c, 0, ky, kx], n(c, x + (kx - r) * d, y + (ky - r) * d)) for ky in range(k) for kx in range(k)], 0.0, hl))
        for c in range(dw.shape[0])  # the first dw.shape[0] channels of n
    ]


def _pointwise_hl(n: HNode, pw: np.ndarray, bias: np.ndarray | None, hl: Any) -> list[Callable]:
    b = bias if bias is not None else np.zeros(pw.shape[0], np.float32)
    return [
        (lambda x, y, o=o: _mac([(pw[o, c], n(c, x, y)) for c in range(pw.shape[1])], float(b[o]), hl))
        for o in range(pw.shape[0])
    ]


def _depthwise_t(a: Any, dw: Any, k: int, d: int) -> Any:
    F = _t().nn.functional
    return F.conv2d(a, dw, None, padding=(k // 2) * d, dilation=d, groups=a.shape[1])


class _Factorised(Op):
    weighted = True
    heavy = True
    required = ("out_channels",)
    defaults = {"kernel": 3, "dilation": 1, "bias": True}

    def infer(self, ins, p, period):
        self._check_arity(ins)
        if p["kernel"] < 1 or p["kernel"] % 2 == 0 or p["dilation"] < 1:
            raise ProgramError(f"{self.name}: bad kernel/dilation {p['kernel']}/{p['dilation']}")
        return Shape(p["out_channels"], ins[0].scale)

    def radius(self, p):
        return (p["kernel"] // 2) * p["dilation"]

    def cost(self, ins, out, p, w):
        return float(_nnz(*w.values()))


@register_op
class SeparableConv(_Factorised):
    """Depthwise-separable convolution: a ``k x k`` depthwise filter per channel, then a 1x1 mix.

    References
    ----------
    .. [1] F. Chollet, "Xception: Deep learning with depthwise separable convolutions", CVPR 2017.
    """

    name = "SeparableConv"

    def weight_shapes(self, ins, p):
        k, c, o = p["kernel"], ins[0].channels, p["out_channels"]
        shapes = {"depthwise": (c, 1, k, k), "pointwise": (o, c)}
        if p["bias"]:
            shapes["bias"] = (o,)
        return shapes

    def reference(self, xs, p, w, ctx):
        d = _depthwise_ref(xs[0].astype(np.float32), np.asarray(w["depthwise"], np.float32), p["kernel"], p["dilation"])
        y = np.tensordot(np.asarray(w["pointwise"], np.float32), d, axes=(1, 0))
        if p["bias"]:
            y += np.asarray(w["bias"], np.float32)[:, None, None]
        return y.astype(np.float32)

    def halide(self, xs, p, w, ctx):
        n = xs[0]
        dw = ctx.helper("sepconv_dw", _depthwise_hl(n, np.asarray(w["depthwise"], np.float32), p["kernel"], p["dilation"], ctx.hl), n.shape.scale)
        return _pointwise_hl(dw, np.asarray(w["pointwise"], np.float32), w.get("bias"), ctx.hl)

    def torch(self, xs, p, w, ctx):
        F = _t().nn.functional
        d = _depthwise_t(xs[0], w["depthwise"], p["kernel"], p["dilation"])
        return F.conv2d(d, w["pointwise"][:, :, None, None], w.get("bias"))


@register_op
class BSConv(_Factorised):
    """Blueprint-separable convolution (BSConv-U): a 1x1 mix, then a ``k x k`` depthwise filter.

    References
    ----------
    .. [1] D. Haase, M. Amthor, "Rethinking depthwise separable convolutions: how intra-kernel
       correlations lead to improved MobileNets", CVPR 2020.
    """

    name = "BSConv"

    def weight_shapes(self, ins, p):
        k, c, o = p["kernel"], ins[0].channels, p["out_channels"]
        shapes = {"pointwise": (o, c), "depthwise": (o, 1, k, k)}
        if p["bias"]:
            shapes["bias"] = (o,)
        return shapes

    def reference(self, xs, p, w, ctx):
        y = np.tensordot(np.asarray(w["pointwise"], np.float32), xs[0].astype(np.float32), axes=(1, 0)).astype(np.float32)
        d = _depthwise_ref(y, np.asarray(w["depthwise"], np.float32), p["kernel"], p["dilation"])
        if p["bias"]:
            d += np.asarray(w["bias"], np.float32)[:, None, None]
        return d.astype(np.float32)

    def halide(self, xs, p, w, ctx):
        hl = ctx.hl
        pw = ctx.helper("bsconv_pw", _pointwise_hl(xs[0], np.asarray(w["pointwise"], np.float32), None, hl), xs[0].shape.scale)
        dw = _depthwise_hl(pw, np.asarray(w["depthwise"], np.float32), p["kernel"], p["dilation"], hl)
        if not p["bias"]:
            return dw
        b = np.asarray(w["bias"], np.float32)
        return [(lambda x, y, o=o: dw[o](x, y) + hl.f32(float(b[o]))) for o in range(len(dw))]

    def torch(self, xs, p, w, ctx):
        F = _t().nn.functional
        y = F.conv2d(xs[0], w["pointwise"][:, :, None, None])
        d = _depthwise_t(y, w["depthwise"], p["kernel"], p["dilation"])
        return d + w["bias"][None, :, None, None] if p["bias"] else d


@register_op
class GatedConv(_Factorised):
    """Gated convolution, the first-order step of gnConv: ``dw(a) * b`` where ``[a, b]`` is a 1x1
    projection of the input to ``2 * out_channels`` and ``dw`` a ``k x k`` depthwise filter.

    References
    ----------
    .. [1] Y. Rao et al., "HorNet: Efficient high-order spatial interactions with recursive gated
       convolutions", NeurIPS 2022.
    """

    name = "GatedConv"

    def weight_shapes(self, ins, p):
        k, c, o = p["kernel"], ins[0].channels, p["out_channels"]
        shapes = {"proj": (2 * o, c), "depthwise": (o, 1, k, k)}
        if p["bias"]:
            shapes.update({"proj_bias": (2 * o,), "bias": (o,)})
        return shapes

    def cost(self, ins, out, p, w):
        return float(_nnz(*w.values()) + out.channels)  # + the gating products

    def reference(self, xs, p, w, ctx):
        o = p["out_channels"]
        y = np.tensordot(np.asarray(w["proj"], np.float32), xs[0].astype(np.float32), axes=(1, 0)).astype(np.float32)
        if p["bias"]:
            y += np.asarray(w["proj_bias"], np.float32)[:, None, None]
        d = _depthwise_ref(y[:o], np.asarray(w["depthwise"], np.float32), p["kernel"], p["dilation"])
        if p["bias"]:
            d += np.asarray(w["bias"], np.float32)[:, None, None]
        return (d * y[o:]).astype(np.float32)

    def halide(self, xs, p, w, ctx):
        hl = ctx.hl
        o = p["out_channels"]
        proj = ctx.helper("gated_proj", _pointwise_hl(xs[0], np.asarray(w["proj"], np.float32), w.get("proj_bias"), hl), xs[0].shape.scale)
        dw = _depthwise_hl(proj, np.asarray(w["depthwise"], np.float32), p["kernel"], p["dilation"], hl)
        b = np.asarray(w["bias"], np.float32) if p["bias"] else np.zeros(o, np.float32)
        return [(lambda x, y, c=c: (dw[c](x, y) + hl.f32(float(b[c]))) * proj(o + c, x, y)) for c in range(o)]

    def torch(self, xs, p, w, ctx):
        F = _t().nn.functional
        o = p["out_channels"]
        y = F.conv2d(xs[0], w["proj"][:, :, None, None], w.get("proj_bias"))
        d = _depthwise_t(y[:, :o].contiguous(), w["depthwise"], p["kernel"], p["dilation"])
        if p["bias"]:
            d = d + w["bias"][None, :, None, None]
        return d * y[:, o:]


@register_op
class ChannelShuffle(Op):
    """Channel shuffle across ``groups`` (ShuffleNet): channel ``g * (C / G) + k`` moves to ``k * G + g``.

    References
    ----------
    .. [1] X. Zhang et al., "ShuffleNet: An extremely efficient convolutional neural network for
       mobile devices", CVPR 2018.
    """

    name = "ChannelShuffle"
    required = ("groups",)

    def infer(self, ins, p, period):
        self._check_arity(ins)
        if p["groups"] < 1 or ins[0].channels % p["groups"]:
            raise ProgramError(f"ChannelShuffle: {ins[0].channels} channels not divisible by {p['groups']}")
        return ins[0]

    def _perm(self, c: int, g: int) -> list[int]:
        """``out[i] = in[perm[i]]``."""
        return list(np.arange(c).reshape(g, c // g).T.ravel())

    def reference(self, xs, p, w, ctx):
        return xs[0][self._perm(xs[0].shape[0], p["groups"])]

    def halide(self, xs, p, w, ctx):
        n = xs[0]
        return [(lambda x, y, k=int(k): n(k, x, y)) for k in self._perm(n.shape.channels, p["groups"])]

    def torch(self, xs, p, w, ctx):
        a = xs[0]
        g = p["groups"]
        n, c, h, wd = a.shape
        return a.reshape(n, g, c // g, h, wd).transpose(1, 2).reshape(n, c, h, wd)
