"""Classical demosaickers written in the program format.

All are *linear* demosaickers: for each tile position of the CFA and each missing colour, a fixed
full-resolution filter over the mosaic. :func:`linear_program` turns such filters into
``Pack -> Conv2D (3x3 at scale p) -> GreenInsert / ChromaInsert``, which any filter of reach up to
``p`` pixels fits.

References
----------
.. [1] H. S. Malvar, L.-W. He, R. Cutler, "High-quality linear interpolation for demosaicing of
   Bayer-patterned color images", ICASSP 2004.
"""

from __future__ import annotations

import numpy as np

from ..cfa import CFA
from .graph import Node, Program

__all__ = ["linear_program", "bayer_bilinear", "bayer_malvar", "xtrans_linear", "CLASSICAL"]

Filter = dict[tuple[int, int], float]  # (dy, dx) full-res offset -> weight


def _packed_weights(filters: dict[tuple[int, int], Filter], p: int, n_out: int, index) -> np.ndarray:
    """Packed 3x3 conv weights ``(n_out, p*p, 3, 3)`` from full-res filters keyed by (j, i)."""
    w = np.zeros((n_out, p * p, 3, 3), np.float32)
    for (j, i), filt in filters.items():
        o = index(j, i)
        for (dy, dx), v in filt.items():
            yy, xx = j + dy, i + dx
            ty, tx = yy // p, xx // p  # tap offset at packed scale
            if abs(ty) > 1 or abs(tx) > 1:
                raise ValueError(f"filter offset {(dy, dx)} reaches beyond one period")
            w[o, (yy % p) * p + (xx % p), ty + 1, tx + 1] += v
    return w


def linear_program(name: str, cfa: CFA, green: dict[tuple[int, int], Filter], red: dict[tuple[int, int], Filter], blue: dict[tuple[int, int], Filter], meta: dict | None = None) -> Program:
    """A linear demosaicker from per-position full-resolution filters (keys: tile row j, column i)."""
    p = cfa.period
    pp = p * p
    gw = _packed_weights(green, p, pp, lambda j, i: j * p + i)
    cw = np.concatenate(
        [_packed_weights(red, p, pp, lambda j, i: j * p + i), _packed_weights(blue, p, pp, lambda j, i: j * p + i)]
    )
    nodes = (
        Node("mosaic", "Input"),
        Node("packed", "Pack", ("mosaic",)),
        Node("green_pred", "Conv2D", ("packed",), {"out_channels": pp, "bias": False}),
        Node("green", "GreenInsert", ("mosaic", "green_pred")),
        Node("chroma_pred", "Conv2D", ("packed",), {"out_channels": 2 * pp, "bias": False}),
        Node("rgb", "ChromaInsert", ("mosaic", "green", "chroma_pred"), {"mode": "direct"}),
    )
    return Program(name, cfa, nodes, "rgb", {"green_pred.weight": gw, "chroma_pred.weight": cw}, dict(meta or {}))


def _grid(rows: list[list[float]], scale: float = 1.0) -> Filter:
    r = len(rows) // 2
    return {(dy - r, dx - r): v * scale for dy, row in enumerate(rows) for dx, v in enumerate(row) if v}


def bayer_bilinear() -> Program:
    """Bilinear interpolation of each colour plane (RGGB canonical)."""
    cross = _grid([[0, 1, 0], [1, 0, 1], [0, 1, 0]], 0.25)
    horiz = _grid([[0, 0, 0], [1, 0, 1], [0, 0, 0]], 0.5)
    vert = _grid([[0, 1, 0], [0, 0, 0], [0, 1, 0]], 0.5)
    diag = _grid([[1, 0, 1], [0, 0, 0], [1, 0, 1]], 0.25)
    # tile: (0,0) R, (0,1) G in a red row, (1,0) G in a blue row, (1,1) B
    return linear_program(
        "bayer_bilinear",
        CFA.BAYER,
        green={(0, 0): cross, (1, 1): cross},
        red={(0, 1): horiz, (1, 0): vert, (1, 1): diag},
        blue={(1, 0): horiz, (0, 1): vert, (0, 0): diag},
        meta={"family": "classical", "description": "bilinear interpolation"},
    )


def bayer_malvar() -> Program:
    """Malvar-He-Cutler gradient-corrected linear interpolation [1]_ (RGGB canonical)."""
    g_at_rb = _grid([[0, 0, -1, 0, 0], [0, 0, 2, 0, 0], [-1, 2, 4, 2, -1], [0, 0, 2, 0, 0], [0, 0, -1, 0, 0]], 1 / 8)
    row = _grid([[0, 0, 0.5, 0, 0], [0, -1, 0, -1, 0], [-1, 4, 5, 4, -1], [0, -1, 0, -1, 0], [0, 0, 0.5, 0, 0]], 1 / 8)
    col = {(dx, dy): v for (dy, dx), v in row.items()}
    opp = _grid([[0, 0, -1.5, 0, 0], [0, 2, 0, 2, 0], [-1.5, 0, 6, 0, -1.5], [0, 2, 0, 2, 0], [0, 0, -1.5, 0, 0]], 1 / 8)
    return linear_program(
        "bayer_malvar",
        CFA.BAYER,
        green={(0, 0): g_at_rb, (1, 1): g_at_rb},
        red={(0, 1): row, (1, 0): col, (1, 1): opp},
        blue={(1, 0): row, (0, 1): col, (0, 0): opp},
        meta={"family": "classical", "description": "Malvar-He-Cutler 2004 linear filters"},
    )


def xtrans_linear() -> Program:
    """Inverse-distance weighted average of the nearest same-colour samples (X-Trans canonical).

    For each missing colour at each of the 36 tile positions: the samples of that colour in the 3x3
    neighbourhood (the 5x5 one if the 3x3 holds none), weighted by inverse Euclidean distance.
    """
    pat = CFA.XTRANS.canonical
    p = 6
    filters: list[dict[tuple[int, int], Filter]] = [{}, {}, {}]
    for j in range(p):
        for i in range(p):
            for colour in range(3):
                if pat[j, i] == colour:
                    continue
                for r in (1, 2):
                    sites = [
                        (dy, dx)
                        for dy in range(-r, r + 1)
                        for dx in range(-r, r + 1)
                        if (dy, dx) != (0, 0) and pat[(j + dy) % p, (i + dx) % p] == colour
                    ]
                    if sites:
                        break
                wts = np.array([1.0 / np.hypot(dy, dx) for dy, dx in sites])
                wts /= wts.sum()
                filters[colour][(j, i)] = {s: float(v) for s, v in zip(sites, wts)}
    return linear_program(
        "xtrans_linear",
        CFA.XTRANS,
        green=filters[1],
        red=filters[0],
        blue=filters[2],
        meta={"family": "classical", "description": "inverse-distance weighted nearest same-colour samples"},
    )


CLASSICAL = {"bayer_bilinear": bayer_bilinear, "bayer_malvar": bayer_malvar, "xtrans_linear": xtrans_linear}

# The domain each runs in as a registry entry. Malvar-He-Cutler's filters were designed on gamma-encoded
# (Kodak) images and their gradient correction overshoots on linear light (Kodak24 35.73 -> 31.52 dB,
# McMaster18 34.42 -> 30.23 when fed linear data): the converter encodes for them. The interpolators
# stay linear (the cheapest path; their loss on linear light is 0.4 to 0.7 dB).
REGISTRY_DOMAIN = {"bayer_malvar": "srgb"}


def write_classical(directory, sets=("kodak24", "mcmaster18")) -> None:
    """Measure the classical programs on the test sets (sRGB and linear-light protocols) and add them to the
    registry in ``directory``."""
    from ..evaluate import TEST_SETS, evaluate, load_images
    from ..registry import add_entry
    from .compiler import Kernel

    images = {s: load_images(TEST_SETS[s]) for s in sets}
    for name, make in CLASSICAL.items():
        prog = make().with_domain(REGISTRY_DOMAIN.get(name, "linear"))
        k, k_lin = Kernel(prog, quiet=True), Kernel(prog, quiet=True, linear_io=True)
        quality = {s: evaluate(k, imgs, prog.cfa.value) for s, imgs in images.items()}
        quality.update({f"{s}_linear": evaluate(k_lin, imgs, prog.cfa.value, linear=True) for s, imgs in images.items()})
        add_entry(prog, directory, quality, provenance={"source": "rawdemosaic.program.classical", "builder": name, "domain": prog.domain})
        print(f"{name}: cost {prog.cost():g}, " + ", ".join(f"{s} {q:.2f} dB" for s, q in quality.items()))


if __name__ == "__main__":
    import sys

    write_classical(sys.argv[1] if len(sys.argv) > 1 else "models")
