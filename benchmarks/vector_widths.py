"""A/B of the schedule's vector shape on this machine: 16 lanes / 16 accumulators (the AVX-512 shape,
what every target got before) against the target's own (:func:`rawdemosaic.program.compiler._widths`).

With ``--blocks``: dense-convolution register blocks of up to 8 output channels (what every target got
before) against the target's own width (4 on x86 without AVX-512, whose FMAs have no embedded broadcast).
With ``--accumulators``: blocks of at most 8 accumulators (4 x 2 on AVX2, what it got before) against the
target's own (4 x 3 there). With ``--winograd``: every 3x3 layer as a direct reduction (before) against
Winograd F(2x2, 3x3) where it is worthwhile (:func:`rawdemosaic.program.compiler._winograd_worthwhile`).

Both kernels of an entry are built into throw-away caches, then timed alternately (uint16 12 MP mosaic,
medians of 9). Prints a markdown table; usage:
``python benchmarks/vector_widths.py [--blocks | --accumulators | --winograd] [name,name,...]``
(default: registry entries below 1000 ops/pixel).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import numpy as np

import rawdemosaic.program.compiler as C
from rawdemosaic.registry import kernels


def main() -> None:
    entries = {e.name: e for e in kernels(plugins=False)}
    flags = ("--blocks", "--accumulators", "--winograd")
    args = [a for a in sys.argv[1:] if a not in flags]
    blocks, accs, wino = (f in sys.argv[1:] for f in flags)
    names = args[0].split(",") if args else [n for n, e in entries.items() if e.cost < 1000]
    real, real_wino = C._widths, C._winograd_worthwhile
    if wino:
        before = real
    elif accs:
        before = lambda t: real(t)._replace(accumulators=min(8, real(t).accumulators))  # noqa: E731
    elif blocks:
        before = lambda t: real(t)._replace(channels=8)  # noqa: E731
    else:
        before = lambda t: C._Widths(16, 16)  # noqa: E731
    variants = [before, real]
    m = np.random.default_rng(0).integers(0, 65535, (3000, 3996), dtype=np.uint16)
    print(f"target {C.host_target()}: {real(C.host_target())}\n")
    head = "direct 3x3 (before) | Winograd" if wino else "8 accumulators (before) | target's" if accs else "8-channel blocks (before) | target blocks" if blocks else "16 lanes (before) | target widths"
    print(f"| kernel | {head} | ratio |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in names:
            prog = entries[n].program()
            ks = []
            for i, fn in enumerate(variants):
                os.environ["RAWDEMOSAIC_CACHE"] = os.path.join(tmp, f"{n}-{i}")
                C._widths = fn
                if wino and i == 0:
                    C._winograd_worthwhile = lambda *a, **k: False
                try:
                    k = C.Kernel(prog, "uint16", "uint16", quiet=True)
                    k._load()
                    k(m)
                finally:
                    C._widths, C._winograd_worthwhile = real, real_wino
                ks.append(k)
            ts: list[list[float]] = [[] for _ in ks]
            for _ in range(9):
                for i, k in enumerate(ks):
                    t0 = time.perf_counter()
                    k(m)
                    ts[i].append(time.perf_counter() - t0)
            a, b = (float(np.median(t)) for t in ts)
            print(f"| `{n}` | {m.size / a / 1e6:.0f} | {m.size / b / 1e6:.0f} | {a / b:.2f} |", flush=True)


if __name__ == "__main__":
    main()
