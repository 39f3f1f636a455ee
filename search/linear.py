"""Sparse least-squares linear demosaickers: the best linear filters of a given cost on the training corpus.

A linear demosaicker is, for each position of the CFA tile and each colour missing there, one filter over
the mosaic neighbourhood of radius ``r`` (:func:`rawdemosaic.program.classical.linear_program`). Its cost is
the number of taps per tile over the tile's pixels (one multiply-add each, as the runtime counts Conv2D
weights), so at a given cost the question is which taps and which weights.

The fit accumulates, for every filter, the normal equations ``A^T A``, ``A^T y``, ``y^T y`` of the least-squares
problem over every pixel of that tile position in the corpus (training split only). Taps are then chosen by
forward stepwise regression across all filters at once (each step adds the tap, anywhere, that lowers the total
squared error most), improved by single swaps (drop one tap, add another, while the error falls), and the
weights are the least-squares solution on the chosen support. Everything after the accumulation is exact
arithmetic on the small normal equations, so the fit takes seconds and reproduces exactly.

Fitted in the sRGB-encoded domain by default, like the searched programs (``domain = "srgb"``: the converter
encodes linear input for them), the loss the squared error the CPSNR protocol measures; or in ``"gamma2"``
(the square root of linear light), a perceptual encoding as close to what the protocol scores whose transfer
costs the converter one square root per input pixel and one product per output value instead of a table
look-up and a polynomial: for filters of 10 to 20 ops/pixel the sRGB transfer took longer than the filters.

References
----------
.. [1] H. S. Malvar, L.-W. He, R. Cutler, "High-quality linear interpolation for demosaicing of
   Bayer-patterned color images", ICASSP 2004 (a hand-designed 20 ops/pixel point of the same family).
.. [2] A. Miller, "Subset Selection in Regression", 2nd ed., Chapman & Hall 2002 (forward selection, swaps).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from rawdemosaic.cfa import CFA, CFAPattern, mosaic
from rawdemosaic.evaluate import encode, srgb_to_linear
from rawdemosaic.program.classical import linear_program
from rawdemosaic.program.graph import Program

__all__ = ["DOMAINS", "NormalEquations", "normal_equations", "training_equations", "select_taps", "fit_program", "fit_linear"]

Target = tuple[int, int, int]  # (colour, tile row j, tile column i) of a missing colour


# Encodings a fit can work in, from sRGB images: the perceptual ones the CPSNR protocol rewards (the
# converter encodes linear light for them, :class:`rawdemosaic.program.compiler.Kernel` ``linear_io``)
DOMAINS = ("srgb", "gamma2")
_SUFFIX = {"srgb": "", "gamma2": "g"}  # of default entry names, one per domain


@dataclass
class NormalEquations:
    """Per-filter normal equations of the linear demosaicking problem on a set of images."""

    cfa: CFA
    radius: int
    offsets: list[tuple[int, int]]  # (dy, dx) of each candidate tap, row-major over the window
    gram: dict[Target, np.ndarray] = field(default_factory=dict)  # A^T A
    cross: dict[Target, np.ndarray] = field(default_factory=dict)  # A^T y
    energy: dict[Target, float] = field(default_factory=dict)  # y^T y
    samples: int = 0  # pixels per tile position (phase (0, 0)) summed over, augmented copies not counted
    images: int = 0
    domain: str = "srgb"  # the encoding the filters work in (:data:`DOMAINS`)
    color: float = 0.0  # weight of the colour-augmented copies, and the seed that drew them
    seed: int = 0

    @property
    def targets(self) -> list[Target]:
        return list(self.gram)

    def error(self, t: Target, support: Sequence[int]) -> float:
        """Squared error of filter ``t`` restricted to the taps ``support`` (least-squares weights)."""
        return _solve(self.gram[t], self.cross[t], self.energy[t], list(support))[1]

    def weights(self, t: Target, support: Sequence[int]) -> np.ndarray:
        return _solve(self.gram[t], self.cross[t], self.energy[t], list(support))[0]


def _solve(G: np.ndarray, b: np.ndarray, yy: float, sel: list[int]) -> tuple[np.ndarray, float]:
    if not sel:
        return np.zeros(0), float(yy)
    Gs, bs = G[np.ix_(sel, sel)], b[sel]
    w = np.linalg.solve(Gs + 1e-9 * np.trace(Gs) / len(sel) * np.eye(len(sel)), bs)
    return w, float(yy - 2 * w @ bs + w @ Gs @ w)


def _colour_augmented(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The training data's colour augmentation (:func:`rawdemosaic.search.data.recolour`): a random channel
    permutation and a saturation gain in [1, 2]."""
    from .data import recolour

    return recolour(img, rng.permutation(3), rng.uniform(1.0, 2.0))


def normal_equations(images: Iterable[np.ndarray], cfa: CFA | str = CFA.BAYER, radius: int = 2, color: float = 0.0, seed: int = 0,
                     domain: str = "srgb") -> NormalEquations:
    """Accumulate the normal equations of every filter over sRGB ``images`` (float ``(H, W, 3)`` in [0, 1])
    encoded to ``domain`` (:data:`DOMAINS`).

    Each image is mosaicked with the family's canonical pattern at its origin; every pixel whose window of
    ``radius`` lies inside the image is one sample of the filter of its tile position and missing colour.
    With ``color`` > 0 every image also enters colour-augmented (:func:`_colour_augmented`, drawn from
    ``seed`` and the image's index), with weight ``color`` against ``1 - color`` for the image itself: the
    fit's share of augmented data, as the training data's ``color`` fraction of augmented crops. The
    augmentation acts on the sRGB image, before the encoding.
    """
    cfa = CFA(cfa)
    _check(cfa, radius, color, domain=domain)
    enc = (lambda rgb: rgb) if domain == "srgb" else (lambda rgb: encode(srgb_to_linear(rgb), domain))
    p = cfa.period
    pat = cfa.canonical
    offs = [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)]
    targets = [(c, j, i) for j in range(p) for i in range(p) for c in range(3) if pat[j, i] != c]
    k = len(offs)
    ne = NormalEquations(cfa, radius, offs, {t: np.zeros((k, k)) for t in targets}, {t: np.zeros(k) for t in targets}, {t: 0.0 for t in targets}, color=color, seed=seed, domain=domain)
    for n, img in enumerate(images):
        ne.images += 1
        rgb = np.asarray(img, np.float64)
        if color < 1.0:
            _accumulate(ne, enc(rgb), 1.0 - color)
        if color > 0.0:
            _accumulate(ne, enc(_colour_augmented(rgb, np.random.default_rng([seed, n]))), color)
        ne.samples += _window_count(rgb.shape[:2], p, radius)
    if not ne.samples:
        raise ValueError("no image is larger than the filter window")
    return ne


def _rows(j: int, n: int, p: int, r: int) -> np.ndarray:
    """Coordinates of tile phase ``j`` (period ``p``) along an axis of ``n`` whose window of ``r`` fits."""
    first = j + p * (-(-(r - j) // p)) if j < r else j
    return np.arange(first, n - r, p)


def _window_count(shape: tuple[int, int], p: int, r: int) -> int:
    return len(_rows(0, shape[0], p, r)) * len(_rows(0, shape[1], p, r))


def _accumulate(ne: NormalEquations, rgb: np.ndarray, weight: float) -> None:
    """Add ``weight`` times one image's least-squares problems to ``ne``."""
    p, pat, r = ne.cfa.period, ne.cfa.canonical, ne.radius
    m = mosaic(rgb, CFAPattern(ne.cfa, 0, 0))
    for j in range(p):
        for i in range(p):
            ys, xs = _rows(j, m.shape[0], p, r), _rows(i, m.shape[1], p, r)
            if not len(ys) or not len(xs):
                continue
            A = np.stack([m[np.ix_(ys + dy, xs + dx)].ravel() for dy, dx in ne.offsets], axis=1)
            AtA = weight * (A.T @ A)
            for c in range(3):
                if pat[j, i] == c:
                    continue
                y = rgb[np.ix_(ys, xs)][..., c].ravel()
                ne.gram[(c, j, i)] += AtA
                ne.cross[(c, j, i)] += weight * (A.T @ y)
                ne.energy[(c, j, i)] += weight * float(y @ y)


def select_taps(ne: NormalEquations, taps: int, swaps: bool = True) -> dict[Target, list[int]]:
    """The support (tap indices into ``ne.offsets``) of every filter: ``taps`` taps in all.

    Forward selection across all filters, then (``swaps``) single swaps while the total error falls.
    """
    T = ne.targets
    if not len(T) <= taps <= len(T) * len(ne.offsets):
        raise ValueError(f"taps must be {len(T)} to {len(T) * len(ne.offsets)} (one per filter at least)")
    sel: dict[Target, list[int]] = {t: [] for t in T}
    err = {t: ne.energy[t] for t in T}
    for _ in range(taps):
        best = None
        for t in T:
            for k in range(len(ne.offsets)):
                if k in sel[t]:
                    continue
                e = ne.error(t, sel[t] + [k])
                if best is None or err[t] - e > best[0]:
                    best = (err[t] - e, t, k, e)
        assert best is not None
        _, t, k, e = best
        sel[t].append(k)
        err[t] = e
    while swaps:
        swaps = _best_swap(ne, sel, err)
    return {t: sorted(v) for t, v in sel.items()}


def _best_swap(ne: NormalEquations, sel: dict, err: dict) -> bool:
    """Apply the single swap (one tap out, one in, either filter) that lowers the total error most."""
    T = ne.targets
    loss = {(t, k): ne.error(t, [u for u in sel[t] if u != k]) - err[t] for t in T for k in sel[t] if len(sel[t]) > 1}
    gain = {(t, k): err[t] - ne.error(t, sel[t] + [k]) for t in T for k in range(len(ne.offsets)) if k not in sel[t]}
    best, move = 1e-12 * max(1.0, sum(err.values())), None
    for (t, k), dl in loss.items():
        for (t2, k2), dg in gain.items():
            if t2 != t:  # independent filters: the changes add up
                g = dg - dl
            else:
                g = err[t] - ne.error(t, [u for u in sel[t] if u != k] + [k2])
            if g > best:
                best, move = g, (t, k, t2, k2)
    if move is None:
        return False
    t, k, t2, k2 = move
    sel[t].remove(k)
    sel[t2].append(k2)
    for u in {t, t2}:
        err[u] = ne.error(u, sel[u])
    return True


def fit_program(ne: NormalEquations, support: dict[Target, list[int]], name: str, meta: dict | None = None) -> Program:
    """The linear program of the least-squares weights on ``support`` (in the equations' domain)."""
    filters: list[dict] = [{}, {}, {}]
    for t, sel in support.items():
        c, j, i = t
        w = ne.weights(t, sel)
        filters[c][(j, i)] = {ne.offsets[k]: float(v) for k, v in zip(sel, w)}
    prog = linear_program(name, ne.cfa, green=filters[1], red=filters[0], blue=filters[2], meta=meta)
    return prog.with_domain(ne.domain)


def _check(cfa: CFA, radius: int, color: float, ops: float | None = None, domain: str = "srgb") -> None:
    p = cfa.period
    if domain not in DOMAINS:
        raise ValueError(f"domain must be one of {', '.join(DOMAINS)}, got {domain!r}")
    if not 0.0 <= color <= 1.0:
        raise ValueError(f"color must be in [0, 1], got {color}")
    if not 1 <= radius <= p:
        raise ValueError(f"radius must be 1 to {p} for {cfa.value} (a filter reaches at most one tile period)")
    if ops is not None:
        taps = int(round(ops * p**2))
        if not 2 * p**2 <= taps <= 2 * p**2 * (2 * radius + 1) ** 2:
            raise ValueError(f"taps must be {2 * p**2} to {2 * p**2 * (2 * radius + 1) ** 2} for {cfa.value} (one per filter at least): --ops {ops:g} gives {taps}")


def training_equations(cfa: CFA | str, radius: int = 2, color: float = 0.25, seed: int = 0, images: Sequence[np.ndarray] | None = None,
                       image_dirs: Sequence[str] | None = None, limit: int | None = None, ops: Sequence[float] = (), domain: str = "srgb") -> NormalEquations:
    """The normal equations of the training split (``images`` replaces it; ``image_dirs``, ``limit``: its
    corpus and first N images), shared by fits of several costs. ``ops`` are checked before the corpus is read."""
    cfa = CFA(cfa)
    for o in ops or [None]:
        _check(cfa, radius, color, o, domain)
    if images is None:
        from .data import load_split

        images = load_split("train", image_dirs, limit=limit)
    return normal_equations(images, cfa, radius, color=color, seed=seed, domain=domain)


def fit_linear(cfa: CFA | str, ops: float, name: str | None = None, radius: int = 2, color: float = 0.25, seed: int = 0,
               images: Sequence[np.ndarray] | None = None, image_dirs: Sequence[str] | None = None, limit: int | None = None,
               normal: NormalEquations | None = None, domain: str = "srgb") -> Program:
    """The sparse least-squares linear demosaicker of ``ops`` multiply-adds per pixel on the training split.

    ``color`` is the weight of colour-augmented copies of the images (:func:`normal_equations`; 0.25, the
    search configs' ``color``, by default), ``seed`` draws their augmentation. ``images`` replaces the
    corpus (``image_dirs``, default the training corpus; ``limit`` its first N training images). ``domain``:
    the encoding the filters work in (:data:`DOMAINS`). ``normal``: equations already accumulated
    (:func:`training_equations`), whose radius, colour weight, seed and domain then apply. The program's ``meta["fit"]`` records how it was fitted.
    """
    cfa = CFA(cfa)
    if normal is None:
        normal = training_equations(cfa, radius, color, seed, images, image_dirs, limit, ops=[ops], domain=domain)
    elif normal.cfa is not cfa:
        raise ValueError(f"normal equations of {normal.cfa.value}, not {cfa.value}")
    ne = normal
    _check(cfa, ne.radius, ne.color, ops, ne.domain)
    taps = int(round(ops * cfa.period**2))
    support = select_taps(ne, taps)
    total = sum(ne.error(t, s) for t, s in support.items())
    n = len(ne.targets) * ne.samples
    meta = {
        "description": f"sparse least-squares linear filters ({taps} taps per {cfa.period}x{cfa.period} tile)",
        "fit": {"taps": taps, "radius": ne.radius, "domain": ne.domain, "color": ne.color, "seed": ne.seed, "images": ne.images, "samples_per_filter": ne.samples, "rms": float(np.sqrt(total / max(n, 1)))},
    }
    return fit_program(ne, support, name or f"{cfa.value}_lsq{taps}{_SUFFIX[ne.domain]}", meta)
