"""Peak multiply-add throughput of one core in float32 and in the integer forms a quantised kernel would use.

The question it answers: would quantising the learned kernels (int16 or int8 weights and activations, the
edge-deployment route) make them faster on this machine? A kernel's dense layers run at a fraction of the
core's float32 FMA peak; an integer kernel could at best reach the integer instructions' peak. Measured with
register-only loops in inline assembly (no memory traffic, independent accumulators), x86-64 with AVX2:

* ``vfmadd231ps`` (ymm): 8 float32 multiply-adds per instruction, what the kernels use now.
* ``vpmaddwd`` + ``vpaddd``: 16 int16 x int16 products summed in pairs into int32, then accumulated
  (int16 activations and weights, int32 accumulators: the lossless-enough quantisation).
* ``vpmaddubsw`` + ``vpaddw``: 32 uint8 x int8 products summed in pairs into saturating int16 (int8
  quantisation; the int16 sums saturate, so real kernels widen them every few steps, at extra cost).
* The same with every pair-sum widened to int32 (``vpmaddwd`` by ones, then ``vpaddd``): int8 without
  saturation, the usual AVX2 int8 inner loop.

Usage: ``python benchmarks/simd_peak.py`` (needs ``cc``/``gcc``); prints a markdown table, GMAC/s per core,
median of 7 runs (each times every form once, float32 before and after the integer loops), and each integer
form's ratio to float32. With ``--halide``: a Halide A/B instead, a fused stack of eight 16-channel 1x1
layers with ReLU (every layer computed per 32-px strip of the last, so it runs from cache), built in float32
and in int16 with int32 sums (weights scaled by 256, shifted back per layer), timed alternately on a
2048 x 256 image on all cores (medians of 15).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile

_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
#define CLOB "xmm13","xmm0","xmm1","xmm2","xmm3","xmm4","xmm5","xmm6","xmm7","xmm8","xmm9","xmm10","xmm11","xmm14","xmm15"
/* eight independent FMA chains: enough to cover the latency at two per cycle */
#define F(a) "vfmadd231ps %%ymm15,%%ymm14," a "\n"
/* a product into a scratch register, then an accumulate: six independent pairs */
#define W(a, b) "vpmaddwd %%ymm15,%%ymm14," a "\n vpaddd " a "," b "," b "\n"
#define B(a, b) "vpmaddubsw %%ymm15,%%ymm14," a "\n vpaddw " a "," b "," b "\n"
/* the same, each int16 pair-sum widened to int32 at once (vpmaddwd by ones): no saturation */
#define BW(a, b) "vpmaddubsw %%ymm15,%%ymm14," a "\n vpmaddwd %%ymm13," a "," a "\n vpaddd " a "," b "," b "\n"
#define SIX(M) M("%%ymm0","%%ymm1") M("%%ymm2","%%ymm3") M("%%ymm4","%%ymm5") M("%%ymm6","%%ymm7") M("%%ymm8","%%ymm9") M("%%ymm10","%%ymm11")
static double f32(long n) {
    double t = now();
    __asm__ volatile("1:\n" F("%%ymm0") F("%%ymm1") F("%%ymm2") F("%%ymm3") F("%%ymm4") F("%%ymm5") F("%%ymm6") F("%%ymm7")
                     "dec %0\n jnz 1b\n" : "+r"(n) :: CLOB);
    return now() - t;
}
static double i16(long n) { double t = now(); __asm__ volatile("1:\n" SIX(W) "dec %0\n jnz 1b\n" : "+r"(n) :: CLOB); return now() - t; }
static double i8s(long n) { double t = now(); __asm__ volatile("1:\n" SIX(B) "dec %0\n jnz 1b\n" : "+r"(n) :: CLOB); return now() - t; }
static double i8w(long n) { double t = now(); __asm__ volatile("1:\n" SIX(BW) "dec %0\n jnz 1b\n" : "+r"(n) :: CLOB); return now() - t; }
int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 50000000L;
    __asm__ volatile("vxorps %%ymm15,%%ymm15,%%ymm15\n vxorps %%ymm14,%%ymm14,%%ymm14\n vxorps %%ymm13,%%ymm13,%%ymm13\n" ::: "xmm13", "xmm14", "xmm15");
    f32(n);  /* warm-up: let the clock settle before anything is timed */
    printf("%.3f\n", n * 8 * 8 / f32(n) / 1e9);
    printf("%.3f\n", n * 6 * 16 / i16(n) / 1e9);
    printf("%.3f\n", n * 6 * 32 / i8s(n) / 1e9);
    printf("%.3f\n", n * 6 * 32 / i8w(n) / 1e9);
    printf("%.3f\n", n * 8 * 8 / f32(n) / 1e9);
    return 0;
}
"""

_ROWS = (
    ("float32 FMA (`vfmadd231ps`), what the kernels use", 0),
    ("int16 x int16 -> int32 (`vpmaddwd` + `vpaddd`)", 1),
    ("uint8 x int8 -> int16, saturating (`vpmaddubsw` + `vpaddw`)", 2),
    ("uint8 x int8 -> int32 (`vpmaddubsw` + `vpmaddwd` by ones + `vpaddd`)", 3),
)


def _halide_stack(kind: str, channels: int = 16, layers: int = 8, strip: int = 32):
    """The fused 1x1-layer stack in ``kind`` ("float32" or "int16"): ``(input param, output func)``."""
    import halide as hl
    import numpy as np

    rng = np.random.default_rng(0)
    x, y, c, xo, xi = (hl.Var(n) for n in ("x", "y", "c", "xo", "xi"))
    inp = hl.ImageParam(hl.Float(32) if kind == "float32" else hl.Int(16), 3, "inp")
    prev, stages = inp, []
    for n in range(layers):
        wt = rng.normal(size=(channels, channels)) / 4
        f = hl.Func(f"layer{n}")
        if kind == "float32":
            acc = [hl.max(sum(hl.f32(float(wt[o, i])) * prev[x, y, i] for i in range(channels)), 0.0) for o in range(channels)]
        else:
            # pairs of int16 products summed in int32: the shape Halide lowers to vpmaddwd
            wq = np.round(wt * 256).astype(int)
            acc = []
            for o in range(channels):
                s = sum(hl.i32(prev[x, y, i]) * int(wq[o, i]) + hl.i32(prev[x, y, i + 1]) * int(wq[o, i + 1]) for i in range(0, channels, 2))
                acc.append(hl.i16(hl.max(s >> 8, 0)))
        f[x, y, c] = hl.mux(c, acc)
        stages.append(f)
        prev = f
    lanes = 8 if kind == "float32" else 16
    out = stages[-1]
    out.bound(c, 0, channels).split(x, xo, xi, strip).reorder(c, xi, xo, y).unroll(c).vectorize(xi, lanes).parallel(y)
    for f in stages[:-1]:
        f.compute_at(out, xo).reorder(c, x, y).unroll(c).vectorize(x, lanes)
    return inp, out


def _halide_ab() -> int:
    import time

    import halide as hl
    import numpy as np

    channels, layers, w, h = 16, 8, 2048, 256
    print(f"Halide {hl.get_host_target()}, {layers} fused 1x1 layers of {channels} channels, {w}x{h}, medians of 15 alternating runs\n")
    print("| arithmetic | ms | GMAC/s |")
    print("|---|---|---|")
    runs = {}
    for kind in ("float32", "int16"):
        inp, out = _halide_stack(kind, channels, layers)
        out.compile_jit(hl.get_host_target())
        a = (np.random.default_rng(1).random((channels, h, w)) * 1000).astype(kind)
        b = np.zeros_like(a)  # the arrays must outlive the buffers that view them
        ob = hl.Buffer(b)
        inp.set(hl.Buffer(a))
        out.realize(ob)  # warm-up
        runs[kind] = (out, ob, a, b, [])
    for _ in range(15):  # alternating, so both see the same drift of a shared machine
        for out, ob, _a, _b, ts in runs.values():
            t = time.perf_counter()
            out.realize(ob)
            ts.append(time.perf_counter() - t)
    for kind, (*_, ts) in runs.items():
        m = sorted(ts)[len(ts) // 2]
        print(f"| {kind} | {m * 1e3:.1f} | {layers * channels * channels * w * h / m / 1e9:.1f} |")
    return 0


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def peak_gmacs(iterations: int = 50_000_000, runs: int = 7) -> list[float]:
    """Median GMAC/s of one core for each form of ``_ROWS`` (float32 FMA, int16, int8 saturating, int8 widened)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("no C compiler (cc or gcc) on PATH")
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = os.path.join(tmp, "peak.c"), os.path.join(tmp, "peak")
        with open(src, "w") as f:
            f.write(_C)
        subprocess.run([cc, "-O2", src, "-o", exe], check=True)
        out = [subprocess.run([exe, str(iterations)], check=True, capture_output=True, text=True).stdout.split() for _ in range(runs)]
    rows = [[(float(r[0]) + float(r[4])) / 2, *map(float, r[1:4])] for r in out]  # float32 timed before and after
    return [sorted(r[i] for r in rows)[runs // 2] for i in range(len(_ROWS))]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--halide" in argv:
        return _halide_ab()
    if platform.machine().lower() not in ("x86_64", "amd64"):
        print(f"simd_peak: x86-64 only (this is {platform.machine()})", file=sys.stderr)
        return 2
    try:
        med = peak_gmacs()
    except RuntimeError as e:
        print(f"simd_peak: {e}", file=sys.stderr)
        return 2
    print(f"{_cpu_name()}, one core, median of 7 runs\n")
    print("| instruction form | GMAC/s per core | vs float32 |")
    print("|---|---|---|")
    for label, i in _ROWS:
        print(f"| {label} | {med[i]:.1f} | {med[i] / med[0]:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
