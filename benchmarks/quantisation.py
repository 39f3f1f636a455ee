#!/usr/bin/env python
"""What integer arithmetic would cost a kernel in quality: post-training quantisation, simulated in PyTorch.

Every weighted op (convolutions, learned up/down-sampling) gets its inputs as ``abits``-bit unsigned codes
(asymmetric: the zero point covers negative values) over a range calibrated per tensor on training images
(min and max, widened by ``margin``), and its weights as ``wbits``-bit signed codes per output channel
(symmetric, max-abs). Biases and everything between weighted ops stay float. This is the usual
quantisation of an int8 (``uint8`` activations x ``int8`` weights) or int16 inference engine, before any
quantisation-aware training. Quality under the protocol of :mod:`rawdemosaic.evaluate` on Kodak24,
McMaster18 and the corpus' validation split, through the program's PyTorch twin
(:class:`rawdemosaic.search.model.ProgramModule`; images cropped to a multiple of the program's grid, the
16 px border crop covers its zero padding), so the float row reproduces the registry's scores. Needs the
``[search]`` extra (torch). Calibration reads the first ``--calib`` images of the training split, never a
test or validation image.

    python benchmarks/quantisation.py                      # rewrites benchmarks/RESULTS_quantisation.md
    python benchmarks/quantisation.py --limit 2 --results ''  # quick look, writes nothing
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Iterable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from rawdemosaic.cfa import CFAPattern, mosaic  # noqa: E402

Ranges = dict[tuple[str, int], list[float]]  # (node id, input index) -> [min, max]


def _fake_quant(x, lo: float, hi: float, bits: int):
    """``x`` through ``bits``-bit unsigned codes spanning ``[lo, hi]`` (``lo <= 0``; the zero point is rounded
    so that 0 stays exact, as integer engines keep it); values outside clip."""
    import torch

    n = 2**bits - 1
    s = max(hi - lo, 1e-12) / n
    z = round(-lo / s)
    return (torch.clamp(torch.round(x / s) + z, 0, n) - z) * s


def _weight_quant(w, bits: int):
    """Symmetric per-output-channel ``bits``-bit codes of a weight tensor (first axis: output channel)."""
    import torch

    if w.ndim < 2:
        return w
    n = 2 ** (bits - 1) - 1
    a = w.abs().flatten(1).max(1).values.clamp_min(1e-12).view(-1, *[1] * (w.ndim - 1))
    return torch.round(w / a * n) / n * a


def forward(module, x, ranges: Ranges | None = None, calibrate: Ranges | None = None, abits: int = 8, wbits: int = 8, margin: float = 1.0):
    """The program of ``module`` on mosaics ``x`` (N, 1, H, W): float when ``ranges`` is None, else quantised
    with them. ``calibrate``: a dict that accumulates the min/max of every weighted op's inputs."""

    def hook(node, ins, w):
        if not w:
            return ins, w
        if calibrate is not None:
            for j, t in enumerate(ins):
                r = calibrate.setdefault((node.id, j), [0.0, 0.0])
                r[0], r[1] = min(r[0], float(t.min())), max(r[1], float(t.max()))
        if ranges is not None:
            ins = [_fake_quant(t, ranges[(node.id, j)][0] * margin, ranges[(node.id, j)][1] * margin, abits) for j, t in enumerate(ins)]
            w = {k: (v if k.startswith("bias") else _weight_quant(v, wbits)) for k, v in w.items()}
        return ins, w

    return module(x, hook=hook if ranges is not None or calibrate is not None else None)


def _crop(img: np.ndarray, s: int) -> np.ndarray:
    return img[: img.shape[0] // s * s, : img.shape[1] // s * s]


def demosaic(module, img: np.ndarray, **kw) -> np.ndarray:
    """CPSNR-ready output of the (cropped) sRGB image ``img`` through :func:`forward` (canonical phase)."""
    import torch

    pat = CFAPattern(module.program.cfa, 0, 0)
    m = torch.from_numpy(np.ascontiguousarray(mosaic(img, pat), np.float32))[None, None]
    with torch.no_grad():
        return np.clip(forward(module, m, **kw)[0].permute(1, 2, 0).numpy(), 0, 1)


def calibrate(module, images: Iterable[np.ndarray]) -> Ranges:
    ranges: Ranges = {}
    for img in images:
        demosaic(module, _crop(img, module.scale), calibrate=ranges)
    return ranges


def parse_configs(text: str) -> list[tuple[int, int, float]]:
    """``"16/16@2,8/8@1.5"`` -> ``[(16, 16, 2.0), (8, 8, 1.5)]`` (activation bits / weight bits @ range margin)."""
    out = []
    for part in text.split(","):
        bits, _, margin = part.partition("@")
        a, _, w = bits.partition("/")
        out.append((int(a), int(w), float(margin or 1.0)))
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kernels", default="bq_bayer_bayer_hq_c17_p1320,bg_bayer_bayer_gpu_c127", help="registry names, comma-separated")
    ap.add_argument("--configs", default="16/16@1,16/16@2,8/8@1,8/8@1.5,8/8@2", help="activation bits/weight bits@range margin, comma-separated")
    ap.add_argument("--calib", type=int, default=8, help="training-split images to calibrate the ranges on")
    ap.add_argument("--limit", type=int, default=None, help="first N images of each set")
    ap.add_argument("--results", default=str(C.BENCH / "RESULTS_quantisation.md"), help="markdown file to rewrite ('' for none)")
    a = ap.parse_args(argv)
    from quality import corpus_split, load_files
    from rawdemosaic.evaluate import TEST_SETS, cpsnr, load_images
    from rawdemosaic.search.model import ProgramModule

    configs = parse_configs(a.configs)
    infos = C.registry_entries()
    if set(a.kernels.split(",")) - set(infos):
        ap.error(f"--kernels: not in the registry (nor search/results/dropped): {sorted(set(a.kernels.split(',')) - set(infos))}")
    train, val = corpus_split()
    calib_images = load_files(train[: a.calib])
    sets = {"kodak24": load_images(TEST_SETS["kodak24"], limit=a.limit), "mcmaster18": load_images(TEST_SETS["mcmaster18"], limit=a.limit)}
    sets["val"] = load_files(val[: a.limit])
    rows, doc = [], {"machine": C.machine_info(), "calibration": [f"{p.parent.name}/{p.name}" for p in train[: a.calib]], "rows": []}
    for name in a.kernels.split(","):
        module = ProgramModule(infos[name].program()).eval()
        ranges = calibrate(module, calib_images)

        def score(**kw) -> dict[str, float]:
            out = {}
            for s, imgs in sets.items():
                crops = [_crop(i, module.scale) for i in imgs]
                out[s] = float(np.mean([cpsnr(demosaic(module, i, **kw), i) for i in crops]))
            return out

        base = score()
        doc["rows"].append({"kernel": name, "arithmetic": "float32", **base})
        rows.append([f"`{name}`", "float32", "", *(C.fmt(base[s]) for s in sets)])
        print(f"{name} float32: " + ", ".join(f"{s} {base[s]:.2f}" for s in sets), flush=True)
        for ab, wb, margin in configs:
            q = score(ranges=ranges, abits=ab, wbits=wb, margin=margin)
            doc["rows"].append({"kernel": name, "abits": ab, "wbits": wb, "margin": margin, **q})
            rows.append([f"`{name}`", f"uint{ab} x int{wb}", f"{margin:g}", *(f"{q[s]:.2f} ({q[s] - base[s]:+.2f})" for s in sets)])
            print(f"{name} a{ab} w{wb} margin {margin:g}: " + ", ".join(f"{s} {q[s]:.2f} ({q[s] - base[s]:+.2f})" for s in sets), flush=True)
    body = (
        f"Post-training quantisation simulated in PyTorch (activations entering weighted ops as unsigned codes over the "
        f"min/max of {a.calib} training images times the margin, weights as signed codes per output channel); CPSNR (dB), "
        "sRGB protocol" + (f", first {a.limit} images per set" if a.limit else "") + "; in brackets the change from float32.\n\n"
        + C.md_table(["kernel", "arithmetic", "range margin", "Kodak24", "McMaster18", "validation"], rows)
    )
    if a.results:
        C.write_page(Path(a.results), "Quantisation", "quantisation.py", doc["machine"], body)
    return doc


if __name__ == "__main__":
    main()
