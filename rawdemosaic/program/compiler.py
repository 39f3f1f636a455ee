"""Compile programs to fused Halide pipelines, ahead of time, into a per-target cache.

Lowering
--------
Every live node becomes a Halide ``Func`` over ``(x, y, c)`` on its own grid, in *canonical* CFA
coordinates: the caller sets the input buffer's ``min`` to the sensor's phase ``(dx, dy)``, so one
kernel serves every phase of its CFA family. The mosaic is extended beyond its borders with the
period-preserving block mirror (:func:`rawdemosaic.program.reference.fold_index`), so borders are
computed like the interior, never garbage.

Schedule
--------
The output ``(c, x, y)`` (interleaved RGB, i.e. a numpy ``(H, W, 3)`` array) is cut into tiles processed
in parallel; inside a tile, loops are split by the CFA period (and any up-sampling factor) and unrolled
so every ``x mod p`` is a compile-time constant, and vectorised across tiles of the period. Heavy nodes
(convolutions, softmax, resampling) and the extended mosaic are computed per tile into small buffers,
channels unrolled; pointwise nodes are inlined into their consumers. A materialised node is split by
the phase only when its inlined inputs carry one *on its own grid* (:func:`_carried_phase`): a Pack by
the period reads every tile position at a constant phase and is never split. The output region must be
aligned to the period: :class:`Kernel` pads and crops around that.

Cache
-----
``<cache>/<halide version>/<target>/<program digest>-<in>-<out>.so``: a shared library holding the
static pipeline and the Halide runtime, called through ctypes (which releases the GIL while it runs).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import KernelBuildError, ProgramError
from .ensemble import pattern_offsets, reflection_origin, reflections
from .graph import Program
from .ops import HalideContext, HNode, Shape, get_op

__all__ = ["Kernel", "cache_dir", "build_pipeline", "host_target"]

_DTYPES = {"float32": np.float32, "uint16": np.uint16}
_ALLOC_SOURCE = "_scratch_alloc.c"  # halide_malloc/free linked into every kernel
_PHASE_OPS = {"Unpack", "Upsample", "LearnedUpsample", "GreenInsert", "ChromaInsert", "ResidualChroma"}
_LOCK = threading.Lock()


@contextmanager
def _file_lock(path: Path):
    """Exclusive lock across processes (parallel tests, batch workers) on ``path``; no-op without fcntl."""
    try:
        import fcntl
    except ImportError:  # Windows: the atomic rename alone keeps the cache consistent
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _hl():
    try:
        import halide as hl
    except ImportError as e:  # pragma: no cover - halide is a dependency
        raise KernelBuildError(f"Halide is needed to compile kernels: {e}") from None
    return hl


def cache_dir() -> Path:
    """Kernel cache root: ``$RAWDEMOSAIC_CACHE`` or the user cache directory."""
    env = os.environ.get("RAWDEMOSAIC_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("rawdemosaic"))


def host_target() -> str:
    """The Halide target string kernels are built for on this machine (``$RAWDEMOSAIC_TARGET`` overrides)."""
    env = os.environ.get("RAWDEMOSAIC_TARGET")
    if env:
        return env
    return str(_hl().get_host_target())


def _compiler_key() -> str:
    """Fingerprint of the lowering code: kernels built by other versions of it are not reused."""
    h = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for name in ("ops.py", "compiler.py", "ensemble.py", "graph.py", _ALLOC_SOURCE):
        h.update((here / name).read_bytes())
    h.update((here.parent / "cfa.py").read_bytes())  # the canonical patterns the lowering folds phases by
    return h.hexdigest()[:8]


def _halide_version() -> str:
    from importlib.metadata import version

    try:
        return version("halide")
    except Exception:  # pragma: no cover
        return "unknown"


# ------------------------------------------------------------------------------------------------
# Lowering


def _fold(hl: Any, x: Any, lo: Any, n: Any, p: int) -> Any:
    """Halide twin of :func:`rawdemosaic.program.reference.fold_index`.

    The interior branch is marked ``likely`` so Halide partitions the loop: the steady state loads
    the input densely and only the edges pay for the mirroring. The clamp (for mosaics smaller than a
    period's reflection) sits on the edge branches only: around the whole select it stayed in the steady
    state, where it turned every vector load of the input into a gather.
    """
    hi = lo + n - 1
    below = x + p * (2 * ((lo - x + (p - 1)) // p) - 1)
    above = x - p * (2 * ((x - hi + (p - 1)) // p) - 1)
    inside = hl.unsafe_promise_clamped(hl.likely(x), lo, hi)  # true where it is selected
    return hl.select(x < lo, hl.clamp(below, lo, hi), hl.likely(hl.select(x > hi, hl.clamp(above, lo, hi), inside)))


# The sRGB transfer around programs trained on sRGB-encoded data (``linear_io``) runs once per input pixel
# and once per output sample: with ``pow`` it took a third of a 200 ops/pixel kernel's time. A float
# mosaic is encoded with ``fast_pow`` (within 2e-6 of the exact curve, an eighth of a uint16 step), a
# uint16 one through an exact 65536-entry table; the output is decoded by polynomials (table look-ups,
# which vectorise as gathers, were slower than fast_pow, and fast_pow slower than the polynomials).


_DECODE_KNEE = 0.04045  # below it the sRGB decode is linear


def _srgb_encode(hl: Any, v: Any) -> Any:
    f = hl.f32
    v = hl.max(v, f(0.0))
    return hl.select(v <= f(0.0031308), v * f(12.92), f(1.055) * hl.fast_pow(v, f(1.0 / 2.4)) - f(0.055))


DECODE_MAX = 1.5  # float output of sRGB programs saturates at this encoded value (linear 2.54)


def _srgb_decode(hl: Any, v: Any) -> Any:
    """The sRGB decode for float output: linear below the knee (negative values stay negative), above it a
    polynomial on ``[knee, DECODE_MAX]`` (degree 11, within 1e-6), saturating above. It replaced fast_pow
    (about 30 operations per value, three values per pixel): same-run A/Bs on 12 MP, float32 in and out,
    ``bayer_malvar`` 275-318 -> 349-370 MP/s, ``bg_..._c112`` 99-103 -> 114-118, ``c333`` 84 -> 94-102."""
    return _srgb_decode_poly(hl, hl.min(v, hl.f32(DECODE_MAX)), DECODE_MAX, 11)


@functools.lru_cache(maxsize=None)  # fitted once per (degree, range), not per decoded expression
def _srgb_decode_poly_coefficients(degree: int = 9, hi: float = 1.0) -> tuple[float, ...]:
    """Monomial coefficients, in ``t = (v - mid) / half`` over ``[knee, hi]``, of a Chebyshev fit of the decode.

    Degree 9 on [knee, 1] is within 1e-6 of the curve in float32 (Horner in ``t``, whose coefficients are
    all below 1, so nothing cancels), half fast_pow's error; 150 to 450 ops/pixel kernels ran 7 to 15%
    faster with it. Degree 11 on [knee, 1.5]: within 1e-6 as well.
    """
    lo = _DECODE_KNEE
    v = np.linspace(lo, hi, 20_001)
    fit = np.polynomial.chebyshev.Chebyshev.fit(v, ((v + 0.055) / 1.055) ** 2.4, degree, domain=[lo, hi])
    return tuple(float(a) for a in fit.convert(kind=np.polynomial.Polynomial, domain=[lo, hi]).coef)


def _srgb_decode_poly(hl: Any, v: Any, hi: float, degree: int) -> Any:
    """The sRGB decode of ``v`` (at most ``hi``): linear below the knee, the polynomial fit above."""
    f = hl.f32
    lo = _DECODE_KNEE
    t = (v - f((lo + hi) / 2)) * f(2.0 / (hi - lo))
    co = _srgb_decode_poly_coefficients(degree, hi)
    acc = f(co[-1])
    for a in co[-2::-1]:
        acc = acc * t + f(a)
    return hl.select(v <= f(lo), v * f(1.0 / 12.92), acc)


def _srgb_decode_unit(hl: Any, v: Any) -> Any:
    """The sRGB decode of ``v`` clamped to ``[0, 1]`` (for integer output, which saturates at 1 anyway)."""
    f = hl.f32
    return _srgb_decode_poly(hl, hl.clamp(v, f(0.0), f(1.0)), 1.0, 9)


def _srgb_encode_table() -> np.ndarray:
    """The encoded value of every uint16 code, float32 (as :func:`rawdemosaic.evaluate.linear_to_srgb`)."""
    v = np.arange(65536, dtype=np.float64) / 65535.0
    return np.where(v <= 0.0031308, v * 12.92, 1.055 * v ** (1.0 / 2.4) - 0.055).astype(np.float32)


def _encode(hl: Any, domain: str, v: Any) -> Any:
    """Linear light (float) to ``domain``."""
    return _srgb_encode(hl, v) if domain == "srgb" else hl.sqrt(hl.max(v, hl.f32(0.0)))


def _decode(hl: Any, domain: str, v: Any) -> Any:
    """``domain`` to linear light, float output (negative values stay negative, as the sRGB decode's)."""
    return _srgb_decode(hl, v) if domain == "srgb" else v * hl.abs(v)


def _decode_unit(hl: Any, domain: str, v: Any) -> Any:
    """``domain`` to linear light of ``v`` clamped to ``[0, 1]`` (integer output)."""
    if domain == "srgb":
        return _srgb_decode_unit(hl, v)
    w = hl.clamp(v, hl.f32(0.0), hl.f32(1.0))
    return w * w


def build_pipeline(program: Program, in_dtype: str = "float32", out_dtype: str = "float32", linear_io: bool = False, target: str | None = None):
    """Lower ``program`` to ``(pipeline, [mosaic ImageParam])`` with its schedule for ``target``
    (default :func:`host_target`; the vector width and register blocking follow it, :func:`_widths`).

    With ``linear_io`` a program of domain ``"srgb"`` or ``"gamma2"`` gets linear light in and out: the mosaic
    is encoded (once per input pixel, in the materialised input) and the result decoded.
    An ensemble program lowers its graph once per reflection of the mosaic (each copy reading its own
    reflected view of the extended mosaic, :mod:`rawdemosaic.program.ensemble`) and averages the copies
    before the output encoding.
    """
    hl = _hl()
    wd = _widths(target or host_target())
    if in_dtype not in _DTYPES or out_dtype not in _DTYPES:
        raise ProgramError(f"dtypes must be float32 or uint16, got {in_dtype}/{out_dtype}")
    p = program.period
    x, y, c = hl.Var("x"), hl.Var("y"), hl.Var("c")
    inp = hl.ImageParam(hl.Float(32) if in_dtype == "float32" else hl.UInt(16), 2, "mosaic")
    transfer = program.domain if linear_io and program.domain != "linear" else None  # the encoding to undo
    copy = in_dtype == "uint16" and program.ensemble == 1 and _passes_samples(program)  # the output copies samples
    lowered, rgb = [], None
    for k, (sx, sy) in enumerate(reflections(program.ensemble)):
        a, b = pattern_offsets(program.cfa.canonical, sx, sy)
        ox = reflection_origin(inp.dim(0).min(), inp.dim(0).extent(), sx, a, p)
        oy = reflection_origin(inp.dim(1).min(), inp.dim(1).extent(), sy, b, p)
        g = _lower_graph(hl, program, inp, in_dtype, transfer, sx * x + ox, sy * y + oy, f"_e{k}" if k else "", wd, copy)
        lowered.append(g)
        if k == 0:
            rgb = g.rgb[x, y, c]
            continue
        # a reflected copy's output, materialised in its own phase-split loops (g.rgb), is reflected back
        # into the output's frame per tile (dense reversed loads); the output reads it like any intermediate
        back = hl.Func(f"{g.rgb.name()}_back")
        back[x, y, c] = g.rgb[sx * (x - ox), sy * (y - oy), c]
        g.stacks.append((back, 1, 3))
        rgb = rgb + back[x, y, c]
    if len(lowered) > 1:
        rgb = rgb * hl.f32(1.0 / len(lowered))
    out = hl.Func("rgb_out")
    if out_dtype == "float32":
        out[c, x, y] = _decode(hl, transfer, rgb) if transfer else rgb
    else:  # saturates at 1: the decode may clamp first (and the sRGB one run as a polynomial)
        val = _decode_unit(hl, transfer, rgb) if transfer else rgb
        # to int32 (truncating: +0.5 rounds), then saturated to uint16 by the integer pack (vpackusdw):
        # the float clamp only keeps the conversion in int32's range, so it can be loose ([-1, 65536])
        # and LLVM need not clamp again; an exact [0, 65535] float clamp left both clamps in the loop
        q = hl.cast(hl.Int(32), hl.clamp(val * 65535.0 + 0.5, hl.f32(-1.0), hl.f32(65536.0)))
        q = hl.saturating_cast(hl.UInt(16), q)
        if copy:
            # the sensor's own samples are copied as they are, not round-tripped through float (and the sRGB
            # transfer): a third of the output values skip the conversions and the decode (the select folds
            # away in the phase-unrolled loops). With the transfer they come from the tile's raw copy.
            pat = program.cfa.canonical
            known = hl.mux((y % p) * p + (x % p), [hl.u8(int(v)) for v in pat.ravel()]) == hl.cast(hl.UInt(8), c)
            q = hl.select(known, lowered[0].raw[x, y, 0], q)
        out[c, x, y] = q

    _schedule(hl, out, lowered, program, x, y, c, wd)
    return hl.Pipeline(out), [inp]


def _passes_samples(program: Program) -> bool:
    """Whether the output is the mosaic's own sample wherever the CFA has that colour: a ChromaInsert or
    ResidualChroma of the Input whose green is a GreenInsert of the Input (all pass the samples through)."""
    out = program.node(program.output)
    if out.op not in ("ChromaInsert", "ResidualChroma") or program.node(out.inputs[0]).op != "Input":
        return False
    green = program.node(out.inputs[1])
    return green.op == "GreenInsert" and program.node(green.inputs[0]).op == "Input"


class _Lowered:
    """One copy of a program's graph in Halide: its output Func and what the schedule materialises."""

    def __init__(self, rgb, ext, raw, heavy, helpers, stacks, out_mod):
        self.rgb, self.ext, self.heavy, self.helpers, self.stacks = rgb, ext, heavy, helpers, stacks
        self.raw = raw  # the extended mosaic in the input's type (ext itself, unless ext holds it encoded)
        self.out_mod = out_mod  # phase modulus of the output expression


def _lower_graph(hl: Any, program: Program, inp: Any, in_dtype: str, transfer: str | None, xr: Any, yr: Any, tag: str, wd: _Widths,
                 keep_raw: bool = False) -> _Lowered:
    """Lower the graph on the extended mosaic read at ``(xr, yr)`` (the identity, or a reflection), encoded
    to the domain ``transfer`` (``None``: as it is); ``tag`` keeps the Func and buffer names of ensemble
    copies apart. ``keep_raw``: the samples as they are stay available (``raw``) beside an encoded copy."""
    shapes = program.shapes()
    p = program.period
    x, y, c = hl.Var("x"), hl.Var("y"), hl.Var("c")
    ctx = HalideContext(hl, program.cfa.canonical, tag)
    ext = hl.Func(f"mosaic_ext{tag}")
    xs = _fold(hl, xr, inp.dim(0).min(), inp.dim(0).extent(), p)
    ys = _fold(hl, yr, inp.dim(1).min(), inp.dim(1).extent(), p)
    norm = (lambda v: hl.f32(v)) if in_dtype == "float32" else (lambda v: hl.f32(v) * hl.f32(1.0 / 65535.0))
    mosaic = hl.Func(f"mosaic_f32{tag}")
    raw = ext  # the extended mosaic in the input's type, materialised per tile (with a transfer: see keep_raw)
    if transfer:  # encode once per input pixel (uint16 to sRGB: a table look-up), materialised as float32
        if in_dtype == "uint16":
            if keep_raw:  # the samples themselves are materialised too, for the output to copy
                raw = hl.Func(f"mosaic_raw{tag}")
                raw[x, y, c] = inp[xs, ys]
                sample = raw[x, y, 0]
            else:
                sample = inp[xs, ys]
            if transfer == "srgb":
                ext[x, y, c] = _owned_buffer(hl, _srgb_encode_table(), f"srgb_encode{tag}")[hl.cast(hl.Int(32), sample)]
            else:
                ext[x, y, c] = _encode(hl, transfer, norm(sample))
        else:
            ext[x, y, c] = _encode(hl, transfer, norm(inp[xs, ys]))
        mosaic[x, y, c] = ext[x, y, c]
    else:
        ext[x, y, c] = inp[xs, ys]  # materialised per tile in the input's own type
        mosaic[x, y, c] = norm(ext[x, y, c])  # inlined: converted where it is read

    inline = _read_once(program)
    relu_only = _relu_only_readers(program)
    nodes: dict[str, HNode] = {}
    heavy: list[tuple[HNode, int]] = []  # materialised funcs and their phase modulus
    stacks: list[tuple[Any, int, int]] = []  # dense convolutions' materialised inputs: (func, modulus, channels)
    phase: dict[str, int] = {}  # phase modulus a node's *expression* carries when inlined
    for n in program.live_nodes():
        op = get_op(n.op)
        params = program.params(n)
        if n.id in nodes:  # a ReLU folded into the dense layer it reads
            continue
        if n.op == "Input":
            nodes[n.id] = HNode(mosaic, Shape(1, 1))
            phase[n.id] = 1
            continue
        materialised = _materialised(program, n, inline)
        name = f"{n.op.lower()}_{_safe(n.id)}{tag}"
        form = op.dense(params, program.node_weights(n)) if materialised and hasattr(op, "dense") else None
        if form is not None and _dense_worthwhile(form[0]):
            (src,) = n.inputs
            stride = form[4] if len(form) > 4 else 1  # a strided form: Downsample
            relu = n.id in relu_only  # stores max(., 0): its ReLU reads it as it is, with no copy in between
            src_node, src_mod, src_channels = nodes[src], phase[src], shapes[src].channels
            if stride > 1 and src_node.dense is None:
                src_node, form = _packed_input(hl, name, src_node, *form[:4], stride, shapes[n.id])
                src_mod, src_channels, stride = _carried_phase(src_mod, shapes[src].scale, shapes[n.id].scale), src_node.shape.channels, 1
            if stride == 1 and _winograd_worthwhile(*form[:4], scale=shapes[n.id].scale):
                node, stack = _winograd_conv(hl, name, src_node, *form[:4], shapes[n.id], wd, relu=relu)
            else:
                node, stack = _dense_conv(hl, name, src_node, *form[:4], shapes[n.id], wd, stride=stride, relu=relu)
            if relu:
                nodes[relu_only[n.id]] = node
                phase[relu_only[n.id]] = 1
            if stack is not None:  # the input, materialised on its own grid with the phase its expression carries
                stacks.append((stack, src_mod, src_channels))
            nodes[n.id] = node
            heavy.append((node, 1))
            phase[n.id] = 1
            continue
        builders = op.halide([nodes[i] for i in n.inputs], params, program.node_weights(n), ctx)
        node = ctx.define(name, builders, materialised, shapes[n.id])
        own = 1
        if n.op in _PHASE_OPS:
            own = params.get("factor") or p
        mod = math.lcm(own, *(_carried_phase(phase[i], shapes[i].scale, shapes[n.id].scale) for i in n.inputs))
        nodes[n.id] = node
        if materialised:
            heavy.append((node, mod))
            phase[n.id] = 1
        else:
            phase[n.id] = mod

    rgb = nodes[program.output].func
    assert rgb is not None  # the output is never materialised
    out_mod = math.lcm(phase[program.output], p)
    if tag:  # a reflected copy: its output is materialised per tile in its own phase-split loops (read
        # reversed by the average, inlined, it failed Halide 21's vectoriser on X-Trans programs)
        mat = hl.Func(f"rgb{tag}")
        mat[x, y, c] = rgb[x, y, c]
        stacks.append((mat, out_mod, 3))
        rgb = mat
    return _Lowered(rgb, ext, raw, heavy, ctx.helpers, stacks, out_mod)


_DENSE_MIN_FANIN = 16  # taps x input channels below which constant-weight expressions are as good
_DENSE_MIN_DENSITY = 0.75  # sparser (pruned) layers keep the expressions, which skip zero weights


def _dense_worthwhile(wt: np.ndarray) -> bool:
    """Whether a layer of weights ``(O, Cin per group, taps)`` runs faster as a dense reduction."""
    return wt.shape[1] * wt.shape[2] >= _DENSE_MIN_FANIN and np.count_nonzero(wt) >= _DENSE_MIN_DENSITY * wt.size


def _dense_block(o: int, accumulators: int = 16, channels: int = 8) -> tuple[int, int]:
    """Register block ``(K, U)``: K output channels (at most ``channels``) times U vectors of x
    accumulate in registers (``K * U <= accumulators``, at most 4 vectors)."""
    k = next(k for k in (8, 4, 2, 1) if o % k == 0 and k <= min(accumulators, channels))
    return k, max(1, min(4, accumulators // k))


def _owned_buffer(hl: Any, a: np.ndarray, name: str) -> Any:
    """A Halide-owned float32 copy of ``a``: ``hl.Buffer(array)`` only wraps the array's memory (and
    refuses read-only ones, as weights from ``np.load`` or torch can be), which must outlive the compile."""
    buf = hl.Buffer(np.array(a, np.float32, order="C")).copy()
    buf.set_name(name)
    return buf


def _dense_conv(hl: Any, name: str, src: HNode, wt: np.ndarray, bias: np.ndarray, taps: list[tuple[int, int]], groups: int, shape: Shape, wd: "_Widths", stride: int = 1, relu: bool = False) -> tuple[HNode, Any]:
    """Lower a convolution as a reduction over (tap, input channel of the group), weights in a buffer;
    with ``stride`` an output sample reads input ``stride * x + tap`` (a learned down-sampling), with
    ``relu`` the layer stores ``max(., 0)`` (:func:`_relu_only_readers`).

    Returns the node (one Func over ``(x, y, c)``, ``c`` stored) and the Func materialising its input
    (``None`` when the input is itself a dense convolution's output). The schedule (:func:`_schedule`)
    keeps a block of ``K`` output channels times ``U`` vectors of x in registers while the reduction
    runs, so each input vector loaded feeds up to ``K`` multiply-adds (those of its group): unlike one
    expression per output channel, whose hundreds of terms spill, and whose compile time grows with the
    layer's width.
    """
    x, y, c = hl.Var("x"), hl.Var("y"), hl.Var("c")
    o, cin_g, t = wt.shape
    inp, stack = _dense_input(hl, name, src, cin_g * groups)
    w = _owned_buffer(hl, wt, f"{name}_w")  # numpy (O, Cin, T) -> Halide [t, ci, o]
    b = _owned_buffer(hl, bias, f"{name}_b")
    r = hl.RDom([(0, t), (0, cin_g)], f"{name}_r")
    dx = hl.mux(r.x, [int(d) for _, d in taps]) if t > 1 else hl.i32(taps[0][1])
    dy = hl.mux(r.x, [int(d) for d, _ in taps]) if t > 1 else hl.i32(taps[0][0])
    acc = hl.Func(f"{name}_acc")
    acc[x, y, c] = b[c]
    ci = r.y if groups == 1 else (c // (o // groups)) * cin_g + r.y  # the output's group's inputs
    acc[x, y, c] += w[r.x, r.y, c] * inp[stride * x + dx, stride * y + dy, ci]
    f = hl.Func(name)
    f[x, y, c] = hl.max(acc[x, y, c], 0.0) if relu else acc[x, y, c]
    return HNode(f, shape, dense=(acc, r, o, *_dense_block(o, wd.accumulators, wd.channels))), stack


def _packed_input(hl: Any, name: str, src: HNode, wt: np.ndarray, bias: np.ndarray, taps: list[tuple[int, int]], groups: int, stride: int, shape: Shape) -> tuple[HNode, tuple]:
    """A strided reduction over an input that is no dense layer (a full-resolution stack, say), as a 1x1
    reduction over that input packed by the stride: ``(packed node, its form)``, one packed channel per
    (input channel, tap), sampled at ``stride * x + tap`` on the output's grid.

    The packed stack carries only the phase the stride does not absorb (:func:`_carried_phase`: none for
    a down-sampling by the CFA period). Read directly, the stack was materialised split by the CFA phase
    and the reduction unrolled its taps of strided vector loads per register block: an X-Trans
    down-sampling by 6 (36 taps) took LLVM many minutes to compile.
    """
    o, cin_g, t = wt.shape
    if groups != 1:
        raise ProgramError(f"{name}: a strided reduction over a non-dense input must be ungrouped")
    x, y, c = hl.Var("x"), hl.Var("y"), hl.Var("c")
    f = hl.Func(f"{name}_pk")
    f[x, y, c] = hl.mux(c, [src(ci, stride * x + int(dx), stride * y + int(dy)) for ci in range(cin_g) for dy, dx in taps])
    return HNode(f, Shape(cin_g * t, shape.scale)), (np.ascontiguousarray(wt.reshape(o, cin_g * t, 1)), bias, [(0, 0)], 1)


def _relu_only_readers(program: Program) -> dict[str, str]:
    """``{layer: its ReLU}`` for the layers whose only reader is a ReLU (not the output): the dense lowering
    stores the rectified value, and the layers after the ReLU read it without materialising a copy."""
    readers: dict[str, list[str]] = {}
    for n in program.live_nodes():
        for i in n.inputs:
            readers.setdefault(i, []).append(n.id)
    out = {}
    for n in program.live_nodes():
        if n.op == "ReLU" and n.id != program.output and readers.get(n.inputs[0]) == [n.id]:
            out[n.inputs[0]] = n.id
    return out


def _dense_input(hl: Any, name: str, src: HNode, cin: int) -> tuple[Any, Any]:
    """``(func read, func to materialise or None)``: a dense layer's output is read as it is, anything
    else through a stack materialised on its own grid (one Func over ``(x, y, c)``)."""
    if src.dense is not None:
        return src.func, None
    x, y, c = hl.Var("x"), hl.Var("y"), hl.Var("c")
    stack = hl.Func(f"{name}_in")
    stack[x, y, c] = src.func[x, y, c] if src.parts is None else hl.mux(c, [src(ci, x, y) for ci in range(cin)])
    return stack, stack


# Winograd F(2x2, 3x3) (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016):
# a 2x2 block of outputs from a 4x4 block of inputs with 16 multiplies per (input, output channel) pair
# instead of 36. out = A^T [(G g G^T) * (B^T d B)] A, per axis: B^T d takes (d0 - d2, d1 + d2, d2 - d1,
# d1 - d3), A^T m takes (m0 + m1 + m2, m1 - m2 - m3), and G is applied to the weights once, here.
_WINOGRAD_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])
_TAPS_3X3 = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]  # Conv2D's order, kernel 3, dilation 1
_WINOGRAD_MIN_GAIN = 1.25  # modelled operations saved, below which the direct reduction stays
_WINOGRAD_MAX_SCALE = 2  # coarsest grid (pixels per sample) where it was measured to pay


def _winograd_worthwhile(wt: np.ndarray, bias: np.ndarray, taps: list[tuple[int, int]], groups: int, scale: int = 1) -> bool:
    """Whether an ungrouped 3x3 layer on a grid of ``scale`` runs as Winograd F(2x2, 3x3).

    Per 2x2 block of outputs, O outputs and C inputs: 36 O C multiply-adds directly; 16 O C products plus
    the transforms (about 80 C for the input, 16 O stores of the products and 40 O for the output), so
    narrow layers gain nothing: the 4 -> 16 and 4 -> 24 input layers of the registry model at 1.0 to
    1.1, the 16 -> 16 and 8 -> 16 ones at 1.5 and 1.3 (measured 1.32x and 1.27x, Halide profile, AVX2).
    On the X-Trans programs' grid of a third of the resolution the layers ran 5 to 6% slower as Winograd
    (12 to 24 channels; ``benchmarks/vector_widths.py --winograd``): its tile rows are short, and half of
    that, rounded up to whole register blocks, wastes a large part of each row.
    """
    o, cin, _ = wt.shape
    if groups != 1 or [tuple(t) for t in taps] != _TAPS_3X3 or scale > _WINOGRAD_MAX_SCALE:
        return False
    return 36 * o * cin >= _WINOGRAD_MIN_GAIN * (16 * o * cin + 56 * o + 80 * cin)


def _winograd_weights(wt: np.ndarray) -> np.ndarray:
    """``(O, C, 9)`` 3x3 weights (taps ``(dy, dx)`` row-major) to ``(O, C, 16)``: ``G g G^T`` at index
    ``a + 4 b`` (``a`` along x, ``b`` along y), computed in float64."""
    o, cin, _ = wt.shape
    g = np.asarray(wt, np.float64).reshape(o, cin, 3, 3)  # [o, c, ky, kx]
    u = np.einsum("ai,bj,ocji->ocba", _WINOGRAD_G, _WINOGRAD_G, g)
    return u.reshape(o, cin, 16).astype(np.float32)


def _bt(v: list) -> list:
    return [v[0] - v[2], v[1] + v[2], v[2] - v[1], v[1] - v[3]]


def _at(m: list) -> list:
    return [m[0] + m[1] + m[2], m[1] - m[2] - m[3]]


class _Winograd(NamedTuple):
    """Scheduling handles of a Winograd layer: input transform ``v``, products ``m`` (accumulated in
    ``acc`` over ``r``, the input channels), ``o`` outputs in blocks of ``k`` channels by ``u`` vectors."""

    v: Any
    acc: Any
    m: Any
    r: Any
    o: int
    k: int
    u: int


def _winograd_conv(hl: Any, name: str, src: HNode, wt: np.ndarray, bias: np.ndarray, taps: list[tuple[int, int]], groups: int, shape: Shape, wd: "_Widths", relu: bool = False) -> tuple[HNode, Any]:
    """Lower a 3x3 convolution as Winograd F(2x2, 3x3) on 2x2 blocks of its output.

    ``v[X, Y, c, k]`` is the input transform of the 4x4 input block of output block ``(X, Y)``; the
    products ``m[X, Y, o, k] = sum_c U[k, c, o] v[X, Y, c, k]`` are 16 independent dense reductions
    (register-blocked like :func:`_dense_conv`), and the output transform reads ``m`` at ``(x // 2, y // 2)``
    in the output's phase ``(x % 2, y % 2)``. Returns the node (``c`` stored, like a dense layer; rectified
    with ``relu``) and the Func materialising its input, as :func:`_dense_conv`.
    """
    x, y, c, k = hl.Var("x"), hl.Var("y"), hl.Var("c"), hl.Var("k")
    o, cin, _ = wt.shape
    inp, stack = _dense_input(hl, name, src, cin)
    u = _owned_buffer(hl, _winograd_weights(wt), f"{name}_u")  # numpy (O, C, 16) -> Halide [k, c, o]
    b = _owned_buffer(hl, bias, f"{name}_b")
    d = [[inp[2 * x - 1 + i, 2 * y - 1 + j, c] for j in range(4)] for i in range(4)]  # d[i][j]: i along x
    cols = [_bt(d[i]) for i in range(4)]  # transformed along y: cols[i][bb]
    vt = [_bt([cols[i][bb] for i in range(4)]) for bb in range(4)]  # vt[bb][a]
    v = hl.Func(f"{name}_v")
    v[x, y, c, k] = hl.mux(k, [vt[bb][a] for bb in range(4) for a in range(4)])
    r = hl.RDom([(0, cin)], f"{name}_r")
    acc = hl.Func(f"{name}_acc")
    acc[x, y, c, k] = hl.f32(0.0)
    acc[x, y, c, k] += u[k, r.x, c] * v[x, y, r.x, k]
    m = hl.Func(f"{name}_m")
    m[x, y, c, k] = acc[x, y, c, k]
    mk = [[m[x // 2, y // 2, c, a + 4 * bb] for a in range(4)] for bb in range(4)]  # mk[bb][a]
    rows = [_at(mk[bb]) for bb in range(4)]  # along x: rows[bb][uu]
    blocks = [_at([rows[bb][uu] for bb in range(4)]) for uu in range(2)]  # blocks[uu][vv]
    even_x, even_y = x % 2 == 0, y % 2 == 0
    f = hl.Func(name)
    out = b[c] + hl.select(even_x, hl.select(even_y, blocks[0][0], blocks[0][1]), hl.select(even_y, blocks[1][0], blocks[1][1]))
    f[x, y, c] = hl.max(out, 0.0) if relu else out
    kb, ub = _dense_block(o, wd.accumulators, wd.channels)
    return HNode(f, shape, dense=_Winograd(v, acc, m, r, o, kb, ub)), stack


def _carried_phase(mod: int, s_in: int, s_out: int) -> int:
    """Phase modulus, on a node's own grid, of an inlined input whose expression has modulus ``mod``.

    A node reading a coarser grid (up-sampling by ``f = s_in / s_out``) reads input sample ``X // f + k``,
    whose phase is fixed by ``X mod (mod * f)``. A node reading a finer grid (``Pack``, ``Downsample`` by
    ``f = s_out / s_in``) reads ``f X + k``: the factor ``gcd(mod, f)`` of the phase is absorbed, e.g. a
    Pack by the CFA period of a full-resolution CFA-dependent expression (a green insert) reads every
    colour at a constant tile position and needs no phase split at all. (Splitting it anyway unrolls the
    packed layer ``p * p`` times, 36 for X-Trans, which is what made wide X-Trans programs take many
    minutes to compile, and slowed them down.)
    """
    if s_out > s_in:
        return mod // math.gcd(mod, s_out // s_in)
    if s_out < s_in:
        return mod * (s_in // s_out)
    return mod


_SELECTORS = {"Slice", "Unpack", "GreenInsert", "ChromaInsert"}


_INLINE_MAX_TERMS = 32  # per output channel: classical filters inline, learned layers do not


def _read_once(program: Program) -> set[str]:
    """Cheap nodes whose every use, through selector ops, picks one channel at the same pixel.

    Such nodes are inlined even when heavy: each output pixel then computes only the channel it needs
    (e.g. the prediction for its own CFA position) instead of all of them. Expensive ones are still
    materialised, where whole blocks of channels share their input loads.
    """
    shapes = program.shapes()
    costs = program.node_costs()
    consumers: dict[str, list[str]] = {n.id: [] for n in program.live_nodes()}
    ops = {n.id: n.op for n in program.live_nodes()}
    for n in program.live_nodes():
        for i in n.inputs:
            consumers[i].append(n.id)
    once: set[str] = set()
    for n in reversed(program.live_nodes()):
        uses = consumers[n.id]
        per_channel = costs.get(n.id, 0.0) * shapes[n.id].scale ** 2 / shapes[n.id].channels
        cheap = per_channel <= _INLINE_MAX_TERMS or ops[n.id] in _SELECTORS
        if n.id == program.output or (cheap and uses and all(ops[u] in _SELECTORS and (u in once or u == program.output) for u in uses)):
            once.add(n.id)
    once.discard(program.output)
    return once


def _safe(s: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in s)


class _Widths(NamedTuple):
    """Vector shape of a target's schedule.

    ``lanes``: float32 lanes of a vector (16 with AVX-512, 8 with AVX2, 4 with SSE and NEON); the output
    takes one lane per period-tile, so a vector covers ``lanes * period`` pixels of a row, and
    materialised intermediates are vectorised likewise. ``accumulators``: vectors a dense convolution's
    register block keeps live, half the vector registers (32 with AVX-512 and on 64-bit ARM, else 16),
    or 12 of x86's 16 where the weights need registers of their own (below).
    A 16-lane schedule on AVX2 needs twice the registers it has and spills: learned kernels ran 1.5 to
    2.2x slower than with 8 lanes and 8 accumulators (2-core Zen 3, 12 MP, same run). ``channels``: the
    most output channels a block spans. Each weight of the block is broadcast to a vector: AVX-512 and
    NEON fold that into the multiply-add (an embedded broadcast, a by-element FMA), AVX2 and SSE spend a
    load on it, so there a 4 x 2 block (6 loads per 8 FMAs) beats 8 x 1 (9): Bayer kernels of 226 to
    5781 ops/pixel ran 3 to 17% faster, X-Trans ones -3 to +10% (same machine, interleaved medians).
    A 4 x 3 block (7 loads per 12 FMAs, and 12 independent FMA chains to cover the latency) fills all 16
    registers with the 3 input vectors and the broadcast weight: X-Trans kernels ran 8 to 9% faster than
    with 4 x 2, Bayer ones the same (``benchmarks/vector_widths.py --accumulators``, alternating runs).
    """

    lanes: int
    accumulators: int
    channels: int = 8


@functools.lru_cache(maxsize=None)
def _widths(target: str) -> _Widths:
    hl = _hl()
    t = hl.Target(target)
    lanes = max(4, min(16, t.natural_vector_size(hl.Float(32))))
    regs = 32 if t.has_feature(hl.TargetFeature.AVX512) or (t.arch == hl.TargetArch.ARM and t.bits == 64) else 16
    broadcast_fma = t.arch != hl.TargetArch.X86 or t.has_feature(hl.TargetFeature.AVX512)
    if broadcast_fma:
        return _Widths(lanes, regs // 2, 8)
    return _Widths(lanes, 12, 4)  # 4 x 3 block: 12 accumulators + 3 input vectors + 1 broadcast weight


def tile_size(program: Program, target: str | None = None) -> tuple[int, int]:
    """Output tile ``(ty, tx)`` of the schedule, multiples of the period alignment.

    Programs without wide intermediates run in bands of 16 whole rows (:func:`_long_tiles`; ``tx`` is then
    the block along the rows, 256 px, the least width of an image). Learned ones take about 64 x
    352: taller tiles recompute less of the stacked convolutions' halo (on the packed grid a 32-row
    tile is 16 rows, each 3x3 layer adding one on either side), narrower ones keep a tile's
    intermediates near the cache (measured on 12 MP: +6 to +30% over 32 x 352..1024). The width is a
    multiple of ``period * lanes`` of ``target`` (default :func:`host_target`).
    """
    return _tile_size(program, _widths(target or host_target()).lanes)


def _tile_size(program: Program, lanes: int) -> tuple[int, int]:
    m = _out_modulus(program)
    L = program.lcm_scale()
    ax, ay = math.lcm(m * lanes, L), math.lcm(m, L)
    if _long_tiles(program):
        return ay * max(1, int(round(16 / ay))), ax * max(1, int(round(256 / ax)))
    return ay * max(1, int(round(64 / ay))), ax * max(1, int(round(352 / ax)))


def _long_tiles(program: Program) -> bool:
    """Programs without wide intermediates (the linear ones: a packed mosaic, few channels) run in bands of
    whole rows (16 high), each band in blocks of 256 px along its rows: a band's input and output are each
    one contiguous stretch of memory, which streams best. Same-run A/Bs on 12 MP (uint16, linear kernels):
    16 x 2048 tiles ran 0 to 8% faster than 32 x 1024 ones, and these bands 0 to 30% faster than 16 x 2048
    tiles (a run-time tile width alone lost the interleaved stores; the constant blocks keep them)."""
    if program.ensemble > 1:  # reflected copies in bands: Halide 21 took minutes to compile an X-Trans one
        return False
    shapes = program.shapes()
    if any(get_op(n.op).wide_helpers for n in program.live_nodes()):
        # a 16-row band recomputes the halos of such an op's per-tile intermediates (8 px each side for
        # ResidualChroma): the graph with c333's green ran at 65 MP/s in bands, 115 in square tiles
        return False
    width = 1 + sum(shapes[n.id].channels / shapes[n.id].scale ** 2 for n in program.live_nodes() if get_op(n.op).heavy)
    return width <= 16


def _materialised(program: Program, node: Any, inline: set[str]) -> bool:
    """Whether ``node`` is computed into a per-tile buffer (heavy, not the output, read more than once)."""
    return get_op(node.op).heavy and node.id != program.output and node.id not in inline


def _reads_learned_layers(program: Program) -> bool:
    """Whether a weighted layer is materialised (not inlined into the output, as linear filters are)."""
    inline = _read_once(program)
    return any(get_op(n.op).weighted and _materialised(program, n, inline) for n in program.live_nodes())


def _out_modulus(program: Program) -> int:
    """Phase modulus of the output's inlined expression (period and resampling factors at scale 1)."""
    mods = [program.period]
    for n in program.live_nodes():
        if n.op in _PHASE_OPS and program.shapes()[n.id].scale == 1:
            mods.append(program.params(n).get("factor") or program.period)
    return math.lcm(*mods)


def _schedule(hl, out, copies, program, x, y, c, wd: _Widths) -> None:
    m = copies[0].out_mod  # the output inlines the first copy only
    vec = lanes = wd.lanes  # output vectors and materialised intermediates take the same width, except:
    if program.period == 6 and _reads_learned_layers(program):  # X-Trans
        # learned X-Trans programs store half-width output vectors: the phase-unrolled output body
        # interleaves 3 channels x 6 phases x vec lanes per store from materialised layers, and at 8 lanes
        # (144-element shuffles) LLVM took 2 to 7 times as long to compile them (AVX2, with the transfer:
        # registry kernels below 500 ops 27 to 38 s -> 11 to 21 s, the dense-convolution test program
        # 142 s -> 19 s) for the same speed (same-run A/B, within +-4%). Linear ones, whose output inlines its filters, compiled slower at
        # 4 lanes (6 -> 19 s: twice the vector arithmetic) and keep the full width.
        vec = max(4, lanes // 2)
    ty, tx = _tile_size(program, lanes)
    assert tx % m == 0 and ty % m == 0
    L = program.lcm_scale()
    ob = out.output_buffer()
    # the wrapper guarantees a period-aligned output region (min and extent multiples of L)
    for d in (1, 2):
        ob.dim(d).set_min((ob.dim(d).min() // L) * L)
        ob.dim(d).set_extent((ob.dim(d).extent() // L) * L)
    ob.dim(0).set_bounds(0, 3).set_stride(1)
    ob.dim(1).set_stride(3)

    xo, yo, xi, yi = hl.Var("xo"), hl.Var("yo"), hl.Var("xi"), hl.Var("yi")
    xp, xq, yp, yq, xv = hl.Var("xp"), hl.Var("xq"), hl.Var("yp"), hl.Var("yq"), hl.Var("xv")
    out.bound(c, 0, 3)
    tile = hl.Var("tile")
    if _long_tiles(program):  # bands of whole rows, in blocks of tx along them
        out.split(y, tile, yi, ty, hl.TailStrategy.ShiftInwards)
        out.split(x, xo, xi, tx, hl.TailStrategy.ShiftInwards)
        out.split(xi, xp, xq, m).split(yi, yp, yq, m).split(xp, xp, xv, vec, hl.TailStrategy.ShiftInwards)
        out.reorder(c, xq, xv, yq, xp, xo, yp, tile)
        out.unroll(c).unroll(xq).unroll(yq).vectorize(xv)
        out.parallel(tile)
    else:
        out.tile(x, y, xo, yo, xi, yi, tx, ty, hl.TailStrategy.ShiftInwards)
        out.split(xi, xp, xq, m).split(yi, yp, yq, m).split(xp, xp, xv, vec, hl.TailStrategy.ShiftInwards)
        out.reorder(c, xq, xv, yq, xp, yp, xo, yo)
        out.unroll(c).unroll(xq).unroll(yq).vectorize(xv)
        out.fuse(xo, yo, tile).parallel(tile)

    def materialise(f, mod: int, channels: int = 0) -> None:
        """Compute ``f`` per output tile, vectorised; split by the phase modulus when it has one."""
        f.compute_at(out, tile)
        if channels:  # a Func over (x, y, c) (the extended mosaic)
            f.bound(c, 0, channels).reorder(c, x, y).unroll(c)
        if mod > 1:
            f.align_bounds(x, mod).align_bounds(y, mod)
            fx, fq, fy, fyq, fv = hl.Var(), hl.Var(), hl.Var(), hl.Var(), hl.Var()
            f.split(x, fx, fq, mod).split(y, fy, fyq, mod).split(fx, fx, fv, lanes // 2, hl.TailStrategy.RoundUp)
            f.reorder(fq, fv, fyq, fx, fy).unroll(fq).unroll(fyq).vectorize(fv)
        else:
            f.vectorize(x, lanes, hl.TailStrategy.RoundUp)

    def dense(node) -> None:
        """A dense convolution: per tile, blocks of K channels by U vectors of x accumulate in registers."""
        f, (acc, r, o, k, u) = node.func, node.dense
        f.compute_at(out, tile).bound(c, 0, o)
        fxo, fxi, fco, fci = hl.Var(), hl.Var(), hl.Var(), hl.Var()
        f.split(x, fxo, fxi, lanes * u, hl.TailStrategy.RoundUp).split(c, fco, fci, k)
        f.reorder(fxi, fci, fxo, y, fco).vectorize(fxi, lanes).unroll(fxi).unroll(fci)
        acc.compute_at(f, fxo).vectorize(x, lanes).unroll(x).unroll(c)
        acc.update().reorder(x, c, r.x, r.y, y).vectorize(x, lanes).unroll(x).unroll(c).unroll(r.x)

    def winograd(node) -> None:
        """A Winograd layer: per tile, its output by 2x2 blocks; per row of blocks, the input transform
        and then the products, in register blocks of K channels by U vectors (as :func:`dense`)."""
        f, w = node.func, node.dense
        f.compute_at(out, tile).bound(c, 0, w.o).align_bounds(x, 2).align_bounds(y, 2)
        fx, fq, fy, fyq, fv = hl.Var(), hl.Var(), hl.Var(), hl.Var(), hl.Var()
        f.split(x, fx, fq, 2).split(y, fy, fyq, 2).split(fx, fx, fv, lanes, hl.TailStrategy.RoundUp)
        f.reorder(fq, fv, fyq, c, fx, fy).unroll(fq).unroll(fyq).vectorize(fv)
        k4 = w.v.args()[3]
        w.v.compute_at(f, fy).bound(k4, 0, 16).reorder(k4, x, y, c).vectorize(x, lanes, hl.TailStrategy.RoundUp).unroll(k4)
        mxo, mxi, mco, mci = hl.Var(), hl.Var(), hl.Var(), hl.Var()
        w.m.compute_at(f, fy).bound(k4, 0, 16)
        w.m.split(x, mxo, mxi, lanes * w.u, hl.TailStrategy.RoundUp).split(c, mco, mci, w.k)
        w.m.reorder(mxi, mci, mxo, y, k4, mco).vectorize(mxi, lanes).unroll(mxi).unroll(mci)
        w.acc.compute_at(w.m, mxo).vectorize(x, lanes).unroll(x).unroll(c)
        w.acc.update().reorder(x, c, w.r.x, y, k4).vectorize(x, lanes).unroll(x).unroll(c)

    for g in copies:  # each ensemble copy's intermediates per tile, over the tile's reflection
        materialise(g.ext, 1, channels=1)
        if g.raw is not g.ext:
            materialise(g.raw, 1, channels=1)
        for f, mod, channels in g.stacks:
            materialise(f, mod, channels=channels)
        for node, mod in g.heavy:
            if isinstance(node.dense, _Winograd):
                winograd(node)
                continue
            if node.dense is not None:
                dense(node)
                continue
            for f in node.funcs():
                materialise(f, mod)
        for h in g.helpers:
            for f in h.funcs():
                materialise(f, 1)


# ------------------------------------------------------------------------------------------------
# halide_buffer_t for ctypes


class _Dim(ctypes.Structure):
    _fields_ = [("min", ctypes.c_int32), ("extent", ctypes.c_int32), ("stride", ctypes.c_int32), ("flags", ctypes.c_uint32)]


class _Type(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _Buffer(ctypes.Structure):
    _fields_ = [
        ("device", ctypes.c_uint64),
        ("device_interface", ctypes.c_void_p),
        ("host", ctypes.c_void_p),
        ("flags", ctypes.c_uint64),
        ("type", _Type),
        ("dimensions", ctypes.c_int32),
        ("dim", ctypes.POINTER(_Dim)),
        ("padding", ctypes.c_void_p),
    ]


def _hbuf(a: np.ndarray, mins: tuple[int, ...]) -> tuple[_Buffer, Any]:
    """Describe numpy array ``a`` as a halide_buffer_t with dims reversed (x fastest) and given mins."""
    nd = a.ndim
    dims = (_Dim * nd)()
    for i in range(nd):
        ax = nd - 1 - i
        if a.strides[ax] % a.itemsize:
            raise ValueError("array strides must be multiples of the item size")
        dims[i] = _Dim(mins[i], a.shape[ax], a.strides[ax] // a.itemsize, 0)
    code = {np.dtype(np.float32): (2, 32), np.dtype(np.uint16): (1, 16), np.dtype(np.uint8): (1, 8)}[a.dtype]
    buf = _Buffer(0, None, a.ctypes.data, 0, _Type(code[0], code[1], 1), nd, dims, None)
    return buf, dims


# ------------------------------------------------------------------------------------------------
# Kernels

_ERROR_HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_char_p)


_STALE_BUILD_S = 3600.0  # a temporary build directory this old was left by a killed build


def _library_ok(path: Path) -> bool:
    """``path`` holds a whole shared library: on ELF systems, a file reaching past its section header table
    (the ELF file's last part). A crash while it was written, or a damaged cache, leaves a short or foreign file,
    which would fail to load, or load and crash the process (SIGBUS); such a file is rebuilt."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
            size = os.fstat(fh.fileno()).st_size
    except OSError:
        return False
    if not sys.platform.startswith("linux"):
        return size > 0
    if len(head) < 52 or head[:4] != b"\x7fELF" or head[4] not in (1, 2) or head[5] not in (1, 2):
        return False
    e = "<" if head[5] == 1 else ">"
    if head[4] == 2:  # 64-bit
        if len(head) < 64:
            return False
        shoff, (shentsize, shnum) = struct.unpack_from(e + "Q", head, 0x28)[0], struct.unpack_from(e + "HH", head, 0x3A)
    else:
        shoff, (shentsize, shnum) = struct.unpack_from(e + "I", head, 0x20)[0], struct.unpack_from(e + "HH", head, 0x2E)
    return shoff > 0 and shnum > 0 and shoff + shentsize * shnum <= size


def _build_library(path: Path, what: str, label: str, make, fn_name: str, target: str, quiet: bool) -> Path:
    """Compile the pipeline ``make() -> (pipeline, arguments)`` for ``target`` into the shared library
    ``path`` (exporting ``fn_name``) unless a whole one is there (:func:`_library_ok`); ``what`` names it in
    errors, ``label`` in the one-line message printed when compiling. Safe across threads and processes: a
    lock, then a rename of a file synced to disk; temporary directories of killed builds are removed."""
    if _library_ok(path):
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _LOCK, _file_lock(path.with_name(path.name + ".lock")):
            if _library_ok(path):  # built meanwhile by another thread or process
                return path
            path.unlink(missing_ok=True)  # damaged (see _library_ok)
            _remove_stale_builds(path.parent)
            if not quiet:
                print(f"rawdemosaic: compiling {label} for this machine...", file=sys.stderr)
            (path.parent / "TARGET").write_text(target + "\n")
            with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
                _compile_and_link(Path(tmp), path, what, make, fn_name, target)
    except OSError as e:
        raise KernelBuildError(f"kernel cache {cache_dir()}: cannot write ({e.strerror or e}: {e.filename or path}); set RAWDEMOSAIC_CACHE to a writable directory") from None
    return path


def _remove_stale_builds(directory: Path) -> None:
    now = time.time()
    for d in directory.glob("tmp*"):
        try:
            if d.is_dir() and now - d.stat().st_mtime > _STALE_BUILD_S:
                shutil.rmtree(d, ignore_errors=True)
        except OSError:
            pass


def _compile_and_link(tmp: Path, path: Path, what: str, make, fn_name: str, target: str) -> None:
    base = tmp / "k"
    try:
        hl = _hl()
        pipe, args = make()
        pipe.compile_to({hl.OutputFileType.static_library: str(base) + ".a"}, args, fn_name, hl.Target(target))
    except Exception as e:  # Halide raises RuntimeError / CompileError
        raise KernelBuildError(f"{what}: Halide compile failed: {e}") from None
    so = tmp / "k.so"
    alloc = str(Path(__file__).resolve().parent / _ALLOC_SOURCE)  # per-thread scratch reuse
    cxx = os.environ.get("CXX", "g++")
    cmd = [cxx, "-shared", "-fPIC", "-O2", "-x", "c", alloc, "-x", "none", "-o", str(so),
           "-Wl,--whole-archive", str(base) + ".a", "-Wl,--no-whole-archive", "-lpthread", "-ldl"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:
        raise KernelBuildError(f"{what}: cannot run the C compiler {cxx!r} ({e.strerror or e}; set CXX)") from None
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or [f"{cxx} exited with status {r.returncode}"])[-1]
        raise KernelBuildError(f"{what}: linking failed: {last}")
    with open(so, "rb+") as fh:
        os.fsync(fh.fileno())  # whole on disk before it is renamed into place
    os.replace(so, path)


#: one handle and error handler per library, for the life of the process: Halide's handler is a global of the
#: library, so a second one set for the same file would replace the first (and dangle once freed)
_LIBRARIES: dict[str, tuple] = {}
_LIBRARIES_LOCK = threading.Lock()


def _load_library(path: Path, fn_name: str, argtypes: list) -> tuple:
    """``(library, function, error messages, handler)`` of a built library. Halide's default error handler
    aborts the process: this one appends the message to the library's list instead."""
    key = str(path)
    with _LIBRARIES_LOCK:
        entry = _LIBRARIES.get(key)
        if entry is None:
            try:
                lib = ctypes.CDLL(key)
            except OSError as e:
                raise KernelBuildError(f"{path}: cannot load the compiled kernel ({e}); delete it to rebuild") from None
            errors: list[str] = []
            handler = _ERROR_HANDLER(lambda ctx, msg: errors.append(msg.decode(errors="replace")))
            lib.halide_set_error_handler(handler)
            entry = _LIBRARIES[key] = (lib, errors, handler)
        lib, errors, handler = entry
        fn = getattr(lib, fn_name)
        fn.argtypes = argtypes
        fn.restype = ctypes.c_int
    return lib, fn, errors, handler


def _error_detail(errors: list[str], before: int) -> str:
    """The library's messages since ``before`` (its count when the call started), last first."""
    new = errors[before:]
    return new[-1].strip() if new else ""


class Kernel:
    """A compiled program: call it on a 2-D mosaic of any size and phase of its CFA family.

    Parameters
    ----------
    program
        The program to compile (its :meth:`~Program.digest` keys the cache).
    in_dtype, out_dtype
        ``"float32"`` (values in [0, 1]) or ``"uint16"`` (full scale 65535).
    target
        Halide target string; default :func:`host_target`.
    linear_io
        Take and return linear light whatever the program's domain: a program trained for ``"srgb"`` or
        ``"gamma2"`` data gets its input encoded and its output decoded inside the kernel. Without it the kernel
        computes in the program's own domain (how the quality protocol feeds it sRGB test images).
    quiet
        Suppress the one-line message printed when a kernel is compiled rather than found in the cache.
    """

    def __init__(self, program: Program, in_dtype: str = "float32", out_dtype: str = "float32", target: str | None = None, quiet: bool = False, linear_io: bool = False):
        self.program = program
        self.in_dtype, self.out_dtype = in_dtype, out_dtype
        self.transfer = bool(linear_io) and program.domain != "linear"  # only then does linear_io change the code
        self.target = target or host_target()
        self.quiet = quiet
        self._fn = None

    @property
    def path(self) -> Path:
        tkey = hashlib.sha256(self.target.encode()).hexdigest()[:10]
        return cache_dir() / f"halide-{_halide_version()}-{_compiler_key()}" / tkey / f"{self.program.digest()}-{self.in_dtype}-{self.out_dtype}{'-lin' if self.transfer else ''}.so"

    @property
    def fn_name(self) -> str:
        return f"rd_{self.program.digest()}_{self.in_dtype[0]}{self.out_dtype[0]}{'_lin' if self.transfer else ''}"

    def is_cached(self) -> bool:
        """A whole library for this kernel is in the cache."""
        return _library_ok(self.path)

    def build(self) -> Path:
        """Compile to the cache if needed; returns the shared library's path."""
        return _build_library(
            self.path, f"kernel {self.program.name}", f"kernel {self.program.name} ({self.in_dtype}->{self.out_dtype})",
            lambda: build_pipeline(self.program, self.in_dtype, self.out_dtype, linear_io=self.transfer, target=self.target),
            self.fn_name, self.target, self.quiet)

    def _load(self):
        if self._fn is None:
            self._lib, self._fn, self._errors, self._handler = _load_library(self.build(), self.fn_name, [ctypes.POINTER(_Buffer), ctypes.POINTER(_Buffer)])
        return self._fn

    def __call__(self, mosaic: np.ndarray, cfa=None, out: np.ndarray | None = None) -> np.ndarray:
        """Demosaic ``mosaic`` (2-D, ``in_dtype``) whose CFA is ``cfa`` (default canonical).

        Returns ``(H, W, 3)`` of ``out_dtype``: contiguous when the phase is canonical and both sides are
        multiples of the period's alignment, else a view into a slightly larger aligned array.
        """
        from ..cfa import as_pattern

        fn = self._load()
        m = np.asarray(mosaic)
        if m.dtype != _DTYPES[self.in_dtype] or m.ndim != 2:
            raise ValueError(f"kernel {self.program.name} takes a 2-D {self.in_dtype} mosaic, got {m.dtype} {m.shape}")
        if m.strides[1] != m.itemsize:
            m = np.ascontiguousarray(m)
        pat = as_pattern(cfa if cfa is not None else self.program.cfa)
        if pat.kind != self.program.cfa:
            raise ValueError(f"kernel {self.program.name} serves {self.program.cfa.value}, not {pat.kind.value}")
        h, w = m.shape
        L = self.program.lcm_scale()
        ty, tx = tile_size(self.program, self.target)
        y0, x0 = 0, 0  # the phase is below the period, so the aligned region starts at 0
        hh = max(-(-(pat.dy + h) // L) * L, ty)
        ww = max(-(-(pat.dx + w) // L) * L, tx)
        aligned = (hh, ww) == (h, w) and (y0, x0) == (pat.dy, pat.dx)
        dtype = _DTYPES[self.out_dtype]
        if out is not None and aligned and out.shape == (h, w, 3) and out.dtype == dtype and out.flags.c_contiguous:
            full = out
        else:
            full = np.empty((hh, ww, 3), dtype)
        ib, _d1 = _hbuf(m, (pat.dx, pat.dy))
        ob, _d2 = _hbuf(full, (0, x0, y0))
        before = len(self._errors)
        rc = fn(ctypes.byref(ib), ctypes.byref(ob))
        if rc != 0:
            raise RuntimeError(f"kernel {self.program.name} failed with Halide error {rc}: {_error_detail(self._errors, before)}")
        if aligned:
            return full
        oy, ox = pat.dy - y0, pat.dx - x0
        res = full[oy : oy + h, ox : ox + w]
        if out is not None:
            out[...] = res
            return out
        return res
