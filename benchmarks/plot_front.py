#!/usr/bin/env python
"""Plot the registry's cost/quality front with the peers as points -> ``benchmarks/front.png``.

Reads ``results_quality.json`` (Kodak24 CPSNR) and ``results_speed.json`` (MP/s). Two panels per CFA:

* left: counted cost (ops/pixel, log axis) vs Kodak24 CPSNR for the registry kernels (the front), with each
  peer placed at an *equivalent cost*: the cost at which a registry kernel would run at the peer's measured
  speed, from a log-log least-squares fit of MP/s against cost over the registry kernels of this run
  (uint16 in/out). When the registry spans too little cost for a fit (slope > -0.2), the model is
  "constant ops/s" through the most expensive kernel: cost_eq = cost_k * MPs_k / MPs_peer. Peers are hollow
  markers to say their x is derived, not counted.
* right: measured throughput (MP/s, log axis) vs Kodak24 CPSNR for everything: no model involved.

    python benchmarks/plot_front.py [--quality Q.json] [--speed S.json] [-o front.png]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402


_MARKERS = "sDv^<>phH*dP8X"


def peer_style(pid: str, order: list[str]) -> dict:
    import matplotlib

    i = order.index(pid) if pid in order else len(order)
    return {"color": matplotlib.colormaps["tab20"]((2 * i + 2) % 20 if i < 9 else (2 * (i - 9) + 3) % 20), "marker": _MARKERS[i % len(_MARKERS)], "ms": 8}


def equivalent_cost_model(reg_points: list[tuple[float, float]]):
    """Map MP/s -> ops/pixel from registry (cost, MP/s) points; returns (function, description)."""
    pts = [(c, s) for c, s in reg_points if c > 0 and s > 0]
    if not pts:
        return None, "no registry speed"
    costs = np.array([p[0] for p in pts])
    mps = np.array([p[1] for p in pts])
    if len(pts) >= 2 and np.ptp(np.log(costs)) > np.log(3):
        slope, icpt = np.polyfit(np.log(costs), np.log(mps), 1)
        if slope < -0.2:
            return (lambda s: float(np.exp((np.log(s) - icpt) / slope))), f"log-log fit MP/s = {np.exp(icpt):.3g} * cost^{slope:.2f}"
    i = int(np.argmax(costs))
    k = costs[i] * mps[i]
    return (lambda s: float(k / s)), f"constant ops/s through the costliest kernel ({costs[i]:g} ops/px at {mps[i]:.0f} MP/s)"


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quality", type=Path, default=C.QUALITY_JSON)
    ap.add_argument("--speed", type=Path, default=C.SPEED_JSON)
    ap.add_argument("-o", "--output", type=Path, default=C.BENCH / "front.png")
    ap.add_argument("--dpi", type=int, default=90)
    a = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    q = json.loads(a.quality.read_text())
    s = json.loads(a.speed.read_text()) if a.speed.exists() else {"rows": []}
    speed = {}
    for r in s["rows"]:
        if r["kind"] == "registry":
            if r["dtype"].startswith("uint16") and r["id"].endswith(":u16"):
                speed[(r["kernel"], r["cfa"])] = r["mps"]
        elif not r["id"].endswith("_alloc"):
            speed[(r["id"], r["cfa"])] = r["mps"]

    order = list(dict.fromkeys(m["id"] for m in q["methods"] if m["kind"] == "peer"))
    fig, axes = plt.subplots(2, 2, figsize=(16, 10))
    notes = []
    for row, (cfa, title) in enumerate((("bayer", "Bayer"), ("xtrans", "X-Trans"))):
        key = f"{cfa}/kodak24"
        reg = sorted((m for m in q["methods"] if m["kind"] == "registry" and key in m["srgb"]), key=lambda m: m["cost"])
        peers = [m for m in q["methods"] if m["kind"] == "peer" and key in m["srgb"]]
        f_eq, how = equivalent_cost_model([(m["cost"], speed.get((m["id"], cfa), 0)) for m in reg])
        notes.append(f"{title}: {how}")
        ax, bx = axes[row]
        # ---- cost panel
        if reg:
            ax.plot([m["cost"] for m in reg], [m["srgb"][key] for m in reg], "-o", color="C0", label="registry kernels", zorder=3)
            for m in reg:
                ax.annotate(m["id"], (m["cost"], m["srgb"][key]), textcoords="offset points", xytext=(4, -10), fontsize=7, color="C0")
        for i, p in enumerate(peers):
            sp = speed.get((p["id"], cfa))
            if f_eq is None or not sp:
                continue
            x = f_eq(sp)
            ax.plot([x], [p["srgb"][key]], mfc="none", mew=1.5, ls="none", **peer_style(p["id"], order))
        ax.set_xscale("log")
        ax.set_xlabel("cost, ops/pixel (log); peers at the equivalent cost of their measured speed")
        ax.set_ylabel("Kodak24 CPSNR (dB)")
        ax.set_title(f"{title}: cost vs quality")
        ax.grid(True, which="both", alpha=0.3)
        # ---- speed panel
        pts = [(speed.get((m["id"], cfa)), m["srgb"][key], m["id"]) for m in reg]
        pts = [p for p in pts if p[0]]
        if pts:
            bx.plot([p[0] for p in pts], [p[1] for p in pts], "o", color="C0", label="registry kernels (uint16)", zorder=3)
            for sp, db, name in pts:
                bx.annotate(name, (sp, db), textcoords="offset points", xytext=(4, -10), fontsize=7, color="C0")
        for i, p in enumerate(peers):
            sp = speed.get((p["id"], cfa))
            if sp:
                bx.plot([sp], [p["srgb"][key]], ls="none", label=f"{p['label']} ({C.fmt_speed(sp)} MP/s)", **peer_style(p["id"], order))
        bx.set_xscale("log")
        bx.set_xlabel("throughput, MP/s on a 12 MP mosaic (log; this machine)")
        bx.set_ylabel("Kodak24 CPSNR (dB)")
        bx.set_title(f"{title}: speed vs quality (up and right is better)")
        bx.grid(True, which="both", alpha=0.3)
        bx.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), title="hollow on the left: equivalent cost", title_fontsize=8)
    m = q["machine"]
    fig.suptitle(f"rawdemosaic registry front vs peers: {m['cores']} cores, {m['cpu']}, {m['date']}\n" + "; ".join(notes), fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(a.output, dpi=a.dpi)
    print(a.output)
    return a.output


if __name__ == "__main__":
    main()
