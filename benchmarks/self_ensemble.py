#!/usr/bin/env python
"""Geometric self-ensemble: what averaging a kernel over flips and transposes of the mosaic buys.

Every one of the 8 dihedral transforms maps a Bayer or X-Trans mosaic onto a mosaic of the same family in
another phase, so a kernel can demosaic the transformed mosaic (in the detected phase), the result be
transformed back, and the results averaged (Timofte et al., "Seven ways to improve example-based single
image super resolution", CVPR 2016). Cost and time grow with the number of transforms. Quality under the
protocol of :mod:`rawdemosaic.evaluate` on Kodak24, McMaster18 and the training corpus' validation split.

    python benchmarks/self_ensemble.py                          # rewrites benchmarks/RESULTS_ensemble.md
    python benchmarks/self_ensemble.py --limit 2 --results ''   # quick look, writes nothing
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from rawdemosaic.cfa import CFAPattern, detect, mosaic  # noqa: E402

# name -> (forward, inverse) on (H, W[, C]) arrays
TRANSFORMS: dict[str, tuple[Callable, Callable]] = {
    "id": (lambda a: a, lambda a: a),
    "flip_lr": (lambda a: a[:, ::-1], lambda a: a[:, ::-1]),
    "flip_ud": (lambda a: a[::-1], lambda a: a[::-1]),
    "rot180": (lambda a: a[::-1, ::-1], lambda a: a[::-1, ::-1]),
    "transpose": (lambda a: a.swapaxes(0, 1), lambda a: a.swapaxes(0, 1)),
    "rot90": (lambda a: a.swapaxes(0, 1)[::-1], lambda a: a[::-1].swapaxes(0, 1)),
    "rot270": (lambda a: a.swapaxes(0, 1)[:, ::-1], lambda a: a[:, ::-1].swapaxes(0, 1)),
    "antitranspose": (lambda a: a[::-1, ::-1].swapaxes(0, 1), lambda a: a.swapaxes(0, 1)[::-1, ::-1]),
}
ENSEMBLES = {1: ("id",), 2: ("id", "rot180"), 4: ("id", "flip_lr", "flip_ud", "rot180"), 8: tuple(TRANSFORMS)}


def transformed_pattern(pat: CFAPattern, shape: tuple[int, int], name: str) -> CFAPattern:
    """The layout of ``TRANSFORMS[name]`` applied to a mosaic of ``shape`` sampled through ``pat``."""
    p = pat.period
    # the transform of the pixel coordinates (broadcast views: no image-sized array), cut to one period
    rows = TRANSFORMS[name][0](np.broadcast_to(np.arange(shape[0])[:, None], shape))[:p, :p]
    cols = TRANSFORMS[name][0](np.broadcast_to(np.arange(shape[1])[None, :], shape))[:p, :p]
    return detect(pat.pattern[rows % p, cols % p])


def ensemble(fn: Callable[[np.ndarray, CFAPattern], np.ndarray], m: np.ndarray, pat: CFAPattern, names) -> np.ndarray:
    """Mean of ``fn`` over the transforms ``names`` of mosaic ``m`` (layout ``pat``), each transformed back:
    a float32 sum, rounded back to uint16 when ``fn`` returns uint16 (as the converter's kernels do)."""
    if tuple(names) == ("id",):
        return fn(m, pat)
    acc = dtype = None
    for n in names:
        f, g = TRANSFORMS[n]
        out = g(np.asarray(fn(np.ascontiguousarray(f(m)), transformed_pattern(pat, m.shape, n))))
        if acc is None:
            acc, dtype = out.astype(np.float32), out.dtype
        else:
            np.add(acc, out, out=acc)
    acc *= np.float32(1 / len(names))
    return (acc + np.float32(0.5)).astype(np.uint16) if dtype == np.uint16 else acc


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kernels", default="bg_bayer_bayer_gpu_c153,xm_xtrans_xtrans_mid_c3", help="registry names, comma-separated")
    ap.add_argument("--sizes", default="1,2,4,8", help="ensemble sizes (of 1, 2, 4, 8)")
    ap.add_argument("--limit", type=int, default=None, help="first N images of each set")
    ap.add_argument("--time", default="3000x3996", help="also time each ensemble on an HxW uint16 mosaic, linear light in and out as the converter runs kernels ('' to skip)")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs (median)")
    ap.add_argument("--results", default=str(C.BENCH / "RESULTS_ensemble.md"), help="markdown file to rewrite ('' for none)")
    a = ap.parse_args(argv)
    from rawdemosaic.evaluate import TEST_SETS, cpsnr, load_images
    from quality import load_files, validation_files

    sizes = [int(s) for s in a.sizes.split(",")]
    infos = C.registry_entries()
    if set(sizes) - set(ENSEMBLES):
        ap.error(f"--sizes: {sorted(set(sizes) - set(ENSEMBLES))} not among {sorted(ENSEMBLES)}")
    if set(a.kernels.split(",")) - set(infos):
        ap.error(f"--kernels: not in the registry (nor search/results/dropped): {sorted(set(a.kernels.split(',')) - set(infos))}")
    sets = {"kodak24": load_images(TEST_SETS["kodak24"], limit=a.limit), "mcmaster18": load_images(TEST_SETS["mcmaster18"], limit=a.limit)}
    sets["val"] = load_files(validation_files()[0][: a.limit])
    rows, doc = [], {"machine": C.machine_info(), "rows": []}
    for name in a.kernels.split(","):
        info = infos[name]
        fn = C.registry_fn(info)
        base = CFAPattern(info.cfa, 0, 0)
        scores = {(s, n): [] for s in sets for n in sizes}
        for sname, imgs in sets.items():
            for img in imgs:
                m = mosaic(img, base)
                for n in sizes:
                    scores[(sname, n)].append(cpsnr(np.clip(ensemble(fn, m, base, ENSEMBLES[n]), 0, 1), img))
        if a.time:
            from rawdemosaic.program.compiler import Kernel

            h, w = (int(v) for v in a.time.split("x"))
            k = Kernel(info.program(), "uint16", "uint16", quiet=True, linear_io=True)
            mu = (np.random.default_rng(0).random((h, w)) * 65535).astype(np.uint16)
        for n in sizes:
            q = {s: float(np.mean(scores[(s, n)])) for s in sets}
            mps = float("nan")
            if a.time:
                mps = h * w / 1e6 / float(np.median(C.timed(lambda: ensemble(k, mu, base, ENSEMBLES[n]), a.repeats)))
            doc["rows"].append({"kernel": name, "n": n, "transforms": list(ENSEMBLES[n]), "cost": info.cost * n, "mps": mps, **q})
            rows.append([f"`{name}`", str(n), f"{info.cost * n:.0f}", *(C.fmt(q[s]) for s in sets), C.fmt_speed(mps) if a.time else "-"])
            print(f"{name} x{n}: " + ", ".join(f"{s} {q[s]:.2f}" for s in sets) + (f", {mps:.1f} MP/s" if a.time else ""), flush=True)
    body = (
        "Mean over the dihedral transforms of the mosaic (each demosaicked in its own CFA phase and transformed back): "
        "x2 = identity + 180-degree rotation, x4 adds both flips, x8 all eight. Cost is the kernel's times n "
        "(n kernel runs). CPSNR (dB), sRGB protocol" + (f", first {a.limit} images per set" if a.limit else "")
        + (f"; MP/s on a {a.time} uint16 mosaic in linear light (as `convert` runs kernels), median of {a.repeats}, "
           "transforms, copies and the mean included" if a.time else "") + ".\n\n"
        + C.md_table(["kernel", "n", "ops/pixel", "Kodak24", "McMaster18", "validation", "MP/s"], rows)
    )
    if a.results:
        C.write_page(Path(a.results), "Self-ensemble", "self_ensemble.py", doc["machine"], body)
    return doc


if __name__ == "__main__":
    main()
