"""Run demosaicnet (Gharbi et al. 2016, pretrained Bayer / X-Trans weights shipped in the package) under the
rawdemosaic quality protocol. Runs in an interpreter that imports demosaicnet (it needs setuptools < 81, so it
may live in its own virtual environment); prints one JSON document on its last stdout line.

    python _demosaicnet_worker.py quality --set test/kodak24 --cfa bayer [--limit N] [--linear]
    python _demosaicnet_worker.py speed --cfa xtrans --size 512 --repeats 3
    python _demosaicnet_worker.py teach --cfa bayer --input rgb.npy --output teacher.npy

The networks use unpadded ("valid") convolutions, as they were trained: the test image is reflect-padded by a
margin wider than the receptive field, with the top/left pad chosen so that the padded mosaic starts with the
network's own CFA phase while the original area keeps rawdemosaic's canonical phase; the output is cropped back
to the original area, then clipped and scored like every other method (16 px border crop, CPSNR).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

warnings.simplefilter("ignore")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import demosaicnet  # noqa: E402
from rawdemosaic.cfa import CFA, CFAPattern, mosaic  # noqa: E402
from rawdemosaic.evaluate import cpsnr, data_dir, linear_to_srgb, load_images, srgb_to_linear  # noqa: E402

VALID = {CFA.BAYER: 31, CFA.XTRANS: 12}  # pixels lost per side by the valid convolutions
MARGIN = {CFA.BAYER: 32, CFA.XTRANS: 18}  # pads: >= VALID, multiples of the period


def net_pattern(kind: CFA) -> np.ndarray:
    from demosaicnet import mosaic as dm

    if kind is CFA.BAYER:
        mask = dm.bayer(np.ones((3, 2, 2), np.float32), return_mask=True)
    else:
        mask = dm.xtrans_cell(torch=False)
    return np.argmax(np.asarray(mask), axis=0).astype(np.uint8)


def phase_offset(kind: CFA) -> tuple[int, int]:
    """(oy, ox) with net_pattern[i, j] == canonical[(i - oy) % p, (j - ox) % p]."""
    canon, netp, p = kind.canonical, net_pattern(kind), kind.period
    for oy in range(p):
        for ox in range(p):
            if np.array_equal(np.roll(canon, (oy, ox), axis=(0, 1)), netp):
                return oy, ox
    raise RuntimeError(f"demosaicnet's {kind.value} pattern is not a phase of rawdemosaic's canonical one")


_MODELS: dict = {}


def model(kind: CFA):
    if kind not in _MODELS:
        m = demosaicnet.BayerDemosaick(pretrained=True) if kind is CFA.BAYER else demosaicnet.XTransDemosaick(pretrained=True)
        _MODELS[kind] = m.eval()
    return _MODELS[kind]


def weights_digest() -> str:
    d = Path(demosaicnet.__file__).parent / "data"
    h = hashlib.sha256()
    for f in sorted(d.glob("*.pth")):
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def padded_mosaic(img: np.ndarray, kind: CFA) -> tuple[np.ndarray, int, int]:
    """Reflect-pad ``img``, mosaic it so that the original area has the canonical phase and the padded array
    starts with the network's phase; returns the (3, H, W) masked mosaic and the top/left pads."""
    p = kind.period
    oy, ox = phase_offset(kind)
    h, w = img.shape[:2]
    M = MARGIN[kind]
    pt, pl = M + oy, M + ox
    pb = M + (pt + h + M) % 2  # even sizes for the Bayer net's 2x2 packing
    pr = M + (pl + w + M) % 2
    big = np.pad(img, ((pt, pb), (pl, pr), (0, 0)), mode="reflect")
    pat = CFAPattern(kind, (-pt) % p, (-pl) % p)
    assert np.array_equal(pat.pattern, net_pattern(kind)), "phase alignment"
    m = mosaic(big, pat)
    idx = np.tile(pat.pattern, (-(-big.shape[0] // p), -(-big.shape[1] // p)))[: big.shape[0], : big.shape[1]]
    x = np.zeros((3,) + m.shape, np.float32)
    for c in range(3):
        x[c][idx == c] = m[idx == c]
    return x, pt, pl


@torch.no_grad()
def run(img: np.ndarray, kind: CFA) -> np.ndarray:
    x, pt, pl = padded_mosaic(img, kind)
    y = model(kind)(torch.from_numpy(x)[None])[0].numpy().transpose(1, 2, 0)
    v = VALID[kind]
    h, w = img.shape[:2]
    out = y[pt - v : pt - v + h, pl - v : pl - v + w]
    assert out.shape == img.shape, (out.shape, img.shape)
    return out


@torch.no_grad()
def run_batch(imgs: np.ndarray, kind: CFA, chunk: int = 64) -> np.ndarray:
    """:func:`run` on equally sized images ``(N, H, W, 3)``, ``chunk`` at a time."""
    out = np.empty_like(imgs, dtype=np.float32)
    h, w, v = imgs.shape[1], imgs.shape[2], VALID[kind]
    for s in range(0, len(imgs), chunk):
        parts = [padded_mosaic(im, kind) for im in imgs[s : s + chunk]]
        pt, pl = parts[0][1], parts[0][2]
        x = torch.from_numpy(np.stack([p[0] for p in parts]))
        y = model(kind)(x).numpy().transpose(0, 2, 3, 1)
        out[s : s + chunk] = y[:, pt - v : pt - v + h, pl - v : pl - v + w]
    return out


def list_files(subdir: str) -> list[str]:
    d = Path(subdir)
    if not d.is_absolute():
        d = data_dir() / d
    return sorted(f.name for f in d.iterdir() if f.suffix.lower() in (".png", ".tif", ".tiff", ".jpg", ".bmp"))


def cmd_quality(a) -> dict:
    kind = CFA(a.cfa)
    files = list_files(a.set)[: a.limit]
    imgs = load_images(a.set, limit=a.limit)
    scores, px, t0 = [], 0, time.perf_counter()
    for img in imgs:
        src = srgb_to_linear(img) if a.linear else img
        out = run(src, kind)
        if a.linear:
            out = linear_to_srgb(out)
        scores.append(cpsnr(out, img))
        px += img.shape[0] * img.shape[1]
    dt = time.perf_counter() - t0
    return {"files": files, "scores": scores, "mean": float(np.mean(scores)), "seconds": dt, "mps": px / dt / 1e6, "weights": weights_digest(), "threads": torch.get_num_threads()}


def cmd_speed(a) -> dict:
    kind = CFA(a.cfa)
    rng = np.random.default_rng(0)
    v = VALID[kind]
    s = a.size + 2 * v
    s += s % 2
    x = torch.from_numpy(rng.random((1, 3, s, s), dtype=np.float32))
    net = model(kind)
    times = []
    with torch.no_grad():
        net(x)
        for _ in range(a.repeats):
            t = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - t)
    med = float(np.median(times))
    return {"size": a.size, "times": times, "median_s": med, "mps": a.size * a.size / med / 1e6, "threads": torch.get_num_threads(), "torch": torch.__version__}


def cmd_teach(a) -> dict:
    """The network's output for every patch of ``--input`` (``(N, 3, P, P)`` float32 sRGB, canonical phase), saved
    as ``--output`` in the same layout: teacher targets for distillation (search/results/probes/distill.py)."""
    kind = CFA(a.cfa)
    rgb = np.load(a.input).transpose(0, 2, 3, 1)
    t0 = time.perf_counter()
    out = run_batch(np.ascontiguousarray(rgb), kind).transpose(0, 3, 1, 2)
    tmp = Path(a.output).with_name(Path(a.output).name + ".tmp.npy")
    np.save(tmp, np.ascontiguousarray(out, np.float32))
    tmp.replace(a.output)
    return {"patches": len(out), "seconds": time.perf_counter() - t0, "weights": weights_digest(), "threads": torch.get_num_threads()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("quality")
    q.add_argument("--set", required=True)
    q.add_argument("--cfa", choices=["bayer", "xtrans"], required=True)
    q.add_argument("--limit", type=int, default=None)
    q.add_argument("--linear", action="store_true")
    s = sub.add_parser("speed")
    s.add_argument("--cfa", choices=["bayer", "xtrans"], required=True)
    s.add_argument("--size", type=int, default=512)
    s.add_argument("--repeats", type=int, default=3)
    t = sub.add_parser("teach")
    t.add_argument("--cfa", choices=["bayer", "xtrans"], required=True)
    t.add_argument("--input", required=True)
    t.add_argument("--output", required=True)
    a = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("DEMOSAICNET_THREADS", os.cpu_count() or 1)))
    doc = {"quality": cmd_quality, "speed": cmd_speed, "teach": cmd_teach}[a.cmd](a)
    doc["demosaicnet"] = getattr(demosaicnet, "__version__", None) or _dist_version()
    print(json.dumps(doc))


def _dist_version():
    try:
        from importlib.metadata import version

        return version("demosaicnet")
    except Exception:  # noqa: BLE001
        return None


if __name__ == "__main__":
    main()
