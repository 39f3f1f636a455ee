"""A PNG of the cost/quality front: registry entries, classical kernels and peers.

x: cost in operations per output pixel (log axis); y: CPSNR on Kodak24 (or another set). Peers are
the numbers measured in the registry issue (#4): those whose cost in ops/pixel is known are points,
the others horizontal lines at their quality (their speed was measured in MP/s, not ops/pixel).
Search runs (``--runs``) add their final fronts in a second panel (validation PSNR of fast training,
not comparable with the test-set numbers).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

__all__ = ["PEERS", "plot_front"]

#: (name, cfa, kodak24, mcmaster18, ops/pixel or None) from issue #4 ("Peers, measured here")
PEERS: list[tuple[str, str, float, float, float | None]] = [
    ("bilinear (OpenCV)", "bayer", 30.17, 32.28, None),
    ("LibRaw linear", "bayer", 30.17, 32.28, None),
    ("Malvar-He-Cutler", "bayer", 35.72, 34.41, None),
    ("OpenCV VNG", "bayer", 35.17, 34.82, None),
    ("LibRaw VNG", "bayer", 35.27, 35.05, None),
    ("LibRaw PPG", "bayer", 35.81, 34.91, None),
    ("LibRaw AHD", "bayer", 37.01, 35.05, None),
    ("LibRaw AAHD", "bayer", 37.69, 35.31, None),
    ("Menon 2007", "bayer", 39.24, 34.18, None),
    ("demosaicnet", "bayer", 42.16, 39.16, 130_000.0),
    ("LibRaw linear", "xtrans", 29.49, 31.38, None),
    ("LibRaw VNG", "xtrans", 34.26, 33.55, None),
    ("Markesteijn 1-pass", "xtrans", 36.01, 34.63, None),
    ("Markesteijn 3-pass", "xtrans", 36.34, 34.66, None),
    ("demosaicnet", "xtrans", 40.31, 37.80, 130_000.0),
]


def _registry_points(models: str | Path | None, quality_set: str) -> list[dict]:
    from ..registry import kernels

    pts = []
    entries = kernels(models=models, plugins=False)
    measured = sorted({k for e in entries for k in e.quality})
    if entries and quality_set not in measured:
        raise ValueError(f"no registry entry is measured on {quality_set!r} (measured: {', '.join(measured)})")
    for e in entries:
        if quality_set in e.quality:
            classical = e.provenance.get("source", "").endswith("classical")
            pts.append({"name": e.name, "cfa": e.cfa.value, "cost": e.cost, "q": e.quality[quality_set], "classical": classical})
    return pts


def _run_front(run_dir: Path) -> tuple[str, list[tuple[float, float]]]:
    from . import evolve as E

    info = E._read_json(run_dir / "run.json")
    st = E.load_state(run_dir)
    if st is None:
        return info.get("cfa", "?"), []
    return info.get("cfa", "?"), [(c.program.cost(), c.psnr) for c in E.front(st.population)]


def plot_front(out: str | Path, models: str | Path | None = None, runs: Sequence[str | Path] = (), quality_set: str = "kodak24") -> Path:
    """Write the plot to ``out`` (PNG without a suffix; another suffix matplotlib knows, such as ``.svg``,
    gives that format) atomically, and return its path."""
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"{out}: is a directory (give the plot's file name)")
    if not out.suffix:
        out = out.with_suffix(".png")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = _registry_points(models, quality_set)
    cfas = [c for c in ("bayer", "xtrans") if any(p["cfa"] == c for p in pts)] or ["bayer"]
    ncol = len(cfas) + (1 if runs else 0)
    fig, axes = plt.subplots(1, ncol, figsize=(6.5 * ncol, 5), squeeze=False)
    qi = 2 if quality_set.startswith("kodak") else 3
    for ax, cfa in zip(axes[0], cfas):
        mine = sorted((p for p in pts if p["cfa"] == cfa and not p["classical"]), key=lambda p: p["cost"])
        clas = [p for p in pts if p["cfa"] == cfa and p["classical"]]
        if mine:
            ax.plot([p["cost"] for p in mine], [p["q"] for p in mine], "o-", color="C0", label="registry (searched)")
        for p in clas:
            ax.plot(p["cost"], p["q"], "s", color="C1")
            ax.annotate(p["name"], (p["cost"], p["q"]), textcoords="offset points", xytext=(4, -10), fontsize=7)
        if clas:
            ax.plot([], [], "s", color="C1", label="registry (classical)")
        xs = [p["cost"] for p in pts if p["cfa"] == cfa] + [10.0, 1000.0]
        for name, pc, k24, m18, ops in PEERS:
            if pc != cfa:
                continue
            q = (k24, m18)[qi - 2] if quality_set in ("kodak24", "mcmaster18") else None
            if q is None:
                continue
            if ops is not None:
                ax.plot(ops, q, "^", color="C3")
                ax.annotate(name, (ops, q), textcoords="offset points", xytext=(-30, 6), fontsize=7)
                xs.append(ops)
            else:
                ax.axhline(q, color="0.6", lw=0.7, ls="--")
                ax.text(1.0, q, " " + name, transform=ax.get_yaxis_transform(), fontsize=6, va="center", color="0.35")
        ax.plot([], [], "^", color="C3", label="peers (ops/pixel known)")
        ax.plot([], [], "--", color="0.6", label="peers (quality only)")
        ax.set_xscale("log")
        ax.set_xlim(min(xs) / 1.5, max(xs) * 1.5)
        ax.set_xlabel("cost (operations per output pixel, log)")
        ax.set_ylabel(f"CPSNR on {quality_set} (dB)")
        ax.set_title(f"{cfa}: cost vs quality")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    if runs:
        ax = axes[0][-1]
        for k, r in enumerate(runs):
            cfa, fr = _run_front(Path(r))
            fr = [(c, q) for c, q in fr if math.isfinite(q)]
            if fr:
                ax.plot([c for c, _ in fr], [q for _, q in fr], "o-", color=f"C{k % 10}", label=f"{Path(r).name} ({cfa})")
        ax.set_xscale("log")
        ax.set_xlabel("cost (operations per output pixel, log)")
        ax.set_ylabel("validation PSNR of fast training (dB)")
        ax.set_title("search fronts")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")  # a whole plot or none: written, then renamed
    try:
        fig.savefig(tmp, dpi=120)
        tmp.replace(out)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return out
