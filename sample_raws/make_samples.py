"""Render the project's own sample raws (procedural scenes, no external images) as DNGs.

    python sample_raws/make_samples.py [--out sample_raws]

Writes ``bayer_rggb.dng`` (1024x768, RGGB, 14-bit, black 256) and ``xtrans.dng`` (1206x804, X-Trans,
12-bit, black 64). The scene is built in linear sRGB (colour chart, grey and hue ramps, zone plate,
dead-leaves discs, text-like strokes), converted to a made-up camera's native RGB through CIE XYZ with the
camera's ColorMatrix (written to the DNG as ColorMatrix1 for D65), scaled so that white gives the as-shot
neutral (white-balance multipliers R 2.0, G 1.0, B 1.5), then given shot and read noise with a fixed seed,
offset by the black level, quantised and sampled through the CFA with :func:`rawdemosaic.cfa.mosaic`.
Deterministic: rerunning gives byte-identical files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from rawdemosaic.cfa import CFA, CFAPattern, mosaic  # noqa: E402
from rawdemosaic.testing import write_dng  # noqa: E402

# linear sRGB (D65) -> CIE XYZ
SRGB_TO_XYZ = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
)
D65_XYZ = SRGB_TO_XYZ @ np.ones(3)

# A typical DSLR XYZ->camera matrix shape (rows R, G, B), rescaled per row so that the camera's response to
# D65 white is the as-shot neutral below: white-balance multipliers R 2.0, G 1.0, B 1.5.
_BASE_MATRIX = np.array([[0.8139, -0.2171, -0.0663], [-0.8747, 1.6541, 0.2295], [-0.1925, 0.2008, 0.8093]])
AS_SHOT_NEUTRAL = np.array([1 / 2.0, 1.0, 1 / 1.5])
XYZ_TO_CAM = np.round(_BASE_MATRIX * (AS_SHOT_NEUTRAL / (_BASE_MATRIX @ D65_XYZ))[:, None], 4)

# sRGB (gamma-encoded, 0..255) values of a classic 24-patch colour checker.
CHECKER = np.array(
    [
        [115, 82, 68], [194, 150, 130], [98, 122, 157], [87, 108, 67], [133, 128, 177], [103, 189, 170],
        [214, 126, 44], [80, 91, 166], [193, 90, 99], [94, 60, 108], [157, 188, 64], [224, 163, 46],
        [56, 61, 150], [70, 148, 73], [175, 54, 60], [231, 199, 31], [187, 86, 149], [8, 133, 161],
        [243, 243, 242], [200, 200, 200], [160, 160, 160], [122, 122, 121], [85, 85, 85], [52, 52, 52],
    ],
    dtype=np.float64,
)  # fmt: skip


def srgb_to_linear(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    h = (h % 1.0) * 6.0
    i = np.floor(h).astype(int) % 6
    f = h - np.floor(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = np.zeros(h.shape + (3,))
    for k, (r, g, b) in enumerate(choices):
        m = i == k
        out[m, 0], out[m, 1], out[m, 2] = r[m], g[m], b[m]
    return out


# ------------------------------------------------------------------------------------------ scene parts


def colour_chart(h: int, w: int) -> np.ndarray:
    img = np.full((h, w, 3), srgb_to_linear(0.2))
    ph, pw = h // 4, w // 6
    gap = max(2, min(ph, pw) // 10)
    lin = srgb_to_linear(CHECKER / 255.0)
    for k in range(24):
        r, c = divmod(k, 6)
        img[r * ph + gap : (r + 1) * ph - gap, c * pw + gap : (c + 1) * pw - gap] = lin[k]
    return img


def ramps(h: int, w: int) -> np.ndarray:
    x = np.linspace(0.0, 1.0, w)[None, :].repeat(h, 0)
    y = np.linspace(0.0, 1.0, h)[:, None].repeat(w, 1)
    third = h // 3
    img = np.empty((h, w, 3))
    img[:third] = (x[:third] ** 2.2)[..., None]  # perceptually even grey ramp, in linear light
    hue = hsv_to_rgb(x[third:], np.clip(1.2 - y[third:], 0, 1), np.full_like(x[third:], 0.9))
    img[third:] = srgb_to_linear(hue)
    return img


def zone_plate(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    r2 = (yy - h / 2) ** 2 + (xx - w / 2) ** 2
    k = np.pi / (2.0 * max(h, w))  # reaches Nyquist at the corners
    v = 0.5 + 0.5 * np.cos(k * r2)
    return srgb_to_linear(0.1 + 0.8 * v)[..., None].repeat(3, axis=2)


def dead_leaves(h: int, w: int, rng: np.random.Generator, n: int = 1500) -> np.ndarray:
    img = np.zeros((h, w, 3))
    filled = np.zeros((h, w), bool)
    rmin, rmax = 3.0, max(h, w) / 6
    for _ in range(n):  # front-to-back: each new disc only paints what is still empty
        u = rng.random()
        r = 1.0 / (u / rmin + (1 - u) / rmax)  # density ~ 1/r^3 (scale-invariant)
        cy, cx = rng.uniform(-r, h + r), rng.uniform(-r, w + r)
        y0, y1 = int(max(0, cy - r)), int(min(h, cy + r + 1))
        x0, x1 = int(max(0, cx - r)), int(min(w, cx + r + 1))
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & ~filled[y0:y1, x0:x1]
        colour = srgb_to_linear(hsv_to_rgb(np.array(rng.random()), np.array(rng.uniform(0.1, 0.9)),
                                           np.array(rng.uniform(0.15, 0.95))))  # fmt: skip
        img[y0:y1, x0:x1][disc] = colour
        filled[y0:y1, x0:x1] |= disc
        if filled.all():
            break
    img[~filled] = srgb_to_linear(0.5)
    return img


def strokes(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Dark "text-like" glyphs (short thin strokes on a baseline grid) on a light, slightly tinted paper."""
    paper = srgb_to_linear(np.array([0.93, 0.91, 0.86]))
    ink = srgb_to_linear(np.array([0.08, 0.08, 0.12]))
    cover = np.zeros((h, w))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    line_h = 14
    for row, base in enumerate(range(line_h, h - 4, line_h + 6)):
        size = 6 + (row % 3) * 2
        x = 6.0
        while x < w - size - 6:
            for _ in range(rng.integers(1, 4)):  # one glyph = 1..3 strokes inside a size x size cell
                p0 = np.array([base - rng.uniform(0, size), x + rng.uniform(0, size * 0.7)])
                p1 = np.array([base - rng.uniform(0, size), x + rng.uniform(0, size * 0.7)])
                lo = np.floor(np.minimum(p0, p1) - 2).astype(int)
                hi = np.ceil(np.maximum(p0, p1) + 2).astype(int)
                lo = np.maximum(lo, 0)
                hi = np.minimum(hi, [h, w])
                sy, sx = yy[lo[0] : hi[0], lo[1] : hi[1]], xx[lo[0] : hi[0], lo[1] : hi[1]]
                d = p1 - p0
                t = np.clip(((sy - p0[0]) * d[0] + (sx - p0[1]) * d[1]) / max(d @ d, 1e-9), 0, 1)
                dist = np.hypot(sy - (p0[0] + t * d[0]), sx - (p0[1] + t * d[1]))
                c = np.clip(1.4 - dist / 0.6, 0, 1)  # ~1.2 px wide anti-aliased stroke
                view = cover[lo[0] : hi[0], lo[1] : hi[1]]
                np.maximum(view, c, out=view)
            x += size * 0.8 + (size * 0.7 if rng.random() < 0.18 else 0)  # word gaps
    return paper * (1 - cover[..., None]) + ink * cover[..., None]


def scene(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A 2x3 collage of the parts above, linear sRGB, roughly 0..1 (specular highlights above 1 clip)."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3))
    hs = [0, h // 2, h]
    ws = [0, w // 3, 2 * w // 3, w]
    parts = [
        lambda a, b: colour_chart(a, b),
        lambda a, b: zone_plate(a, b),
        lambda a, b: dead_leaves(a, b, rng),
        lambda a, b: ramps(a, b),
        lambda a, b: strokes(a, b, rng),
        lambda a, b: dead_leaves(a, b, rng, n=4000),
    ]
    k = 0
    for i in range(2):
        for j in range(3):
            a, b = hs[i + 1] - hs[i], ws[j + 1] - ws[j]
            img[hs[i] : hs[i + 1], ws[j] : ws[j + 1]] = parts[k](a, b)
            k += 1
    # a few specular highlights that clip in the raw
    yy, xx = np.mgrid[0:h, 0:w]
    for cy, cx, r in ((h * 0.8, w * 0.15, 6), (h * 0.25, w * 0.85, 9)):
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 3.0
    return img


# ----------------------------------------------------------------------------------------- the "camera"


def expose(
    rgb_linear: np.ndarray,
    cfa,
    black: int,
    white: int,
    rng: np.random.Generator,
    exposure: float = 0.85,
    full_well_electrons: float = 12000.0,
    read_noise_dn: float = 1.5,
) -> np.ndarray:
    """Linear sRGB scene -> camera RGB (via XYZ) -> noisy quantised raw mosaic (uint16, black included)."""
    cam = np.einsum("ij,hwj->hwi", XYZ_TO_CAM @ SRGB_TO_XYZ, rgb_linear)
    cam = np.clip(cam * exposure, 0.0, None)  # a real sensor never records negative light
    signal = mosaic(cam, cfa)  # 1.0 = clipping point
    electrons = rng.poisson(np.clip(signal, 0, 4) * full_well_electrons).astype(np.float64)
    dn = electrons / full_well_electrons * (white - black) + black + rng.normal(0.0, read_noise_dn, signal.shape)
    return np.clip(np.round(dn), 0, white).astype(np.uint16)


def make(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    common = dict(
        xyz_to_cam=XYZ_TO_CAM,
        as_shot_neutral=tuple(AS_SHOT_NEUTRAL),
        make="RawDemosaic",
        iso=200,
        exposure_time=1 / 125,
        aperture=5.6,
        focal_length=35.0,
        timestamp="2024:06:01 12:00:00",
    )
    rng = np.random.default_rng(20240601)
    h, w = 768, 1024
    raw = expose(scene(h, w, seed=1), "RGGB", 256, 16383, rng)
    written.append(write_dng(out / "bayer_rggb.dng", raw, "RGGB", 256, 16383, model="Synthetic Bayer", **common))
    h, w = 804, 1206
    xt = CFAPattern(CFA.XTRANS, 0, 0)
    raw = expose(scene(h, w, seed=2), xt, 64, 4095, rng)
    written.append(write_dng(out / "xtrans.dng", raw, xt, 64, 4095, model="Synthetic X-Trans", **common))
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = ap.parse_args(argv)
    for p in make(args.out):
        print(f"{p} ({p.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
