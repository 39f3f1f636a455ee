"""Distil demosaicnet into a registry entry's graph: train it towards the teacher's output instead of (or
blended with) the ground truth, and measure the Halide kernel.

A probe, not part of the search. The training patches are those of ``train_from_scratch.py`` (the search runs'
export settings: 16384 sRGB patches of 48 px, colour augmentation 0.25, 10% synthetic, mined); the teacher is
demosaicnet's pretrained network (Gharbi et al. 2016), run on each patch reflect-padded past its receptive field
(``benchmarks/_demosaicnet_worker.py teach``, in an interpreter that imports demosaicnet, see
``benchmarks/_common.demosaicnet_python``). The target is ``alpha * teacher + (1 - alpha) * ground truth``;
validation (which keeps the best state) stays on the ground truth of the validation split. Prints the
validation-patch PSNR, then the whole-image CPSNR on Kodak24, McMaster18 and the corpus validation split.

    python search/results/probes/distill.py bg_bayer_bayer_gpu_c333 --alpha 1 --steps 10000 --out c333_a1.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from rawdemosaic.search.export import measure_quality
from rawdemosaic.search.train import full_train
from train_from_scratch import probe_datasets, probe_program  # the same patches (this directory is the script's sys.path[0])

ROOT = Path(__file__).resolve().parents[3]


def teacher_targets(rgb: np.ndarray, cfa: str, path: Path) -> np.ndarray:
    """demosaicnet's output for every patch (cached at ``path``, keyed by the patches' digest)."""
    import hashlib

    key = hashlib.sha256(rgb.tobytes()).hexdigest()[:16]
    out = path.with_name(f"{path.stem}_{key}.npy")
    if not out.exists():
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from _common import demosaicnet_python

        py = demosaicnet_python()
        if py is None:
            raise SystemExit("demosaicnet is not importable (see benchmarks/_common.demosaicnet_python)")
        src = out.with_name(out.stem + "_in.npy")
        np.save(src, rgb)
        try:
            worker = ROOT / "benchmarks" / "_demosaicnet_worker.py"
            subprocess.run([py, str(worker), "teach", "--cfa", cfa, "--input", str(src), "--output", str(out)], check=True)
        finally:
            src.unlink(missing_ok=True)
    return np.load(out)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("entry", help="registry name")
    ap.add_argument("--alpha", type=float, default=1.0, help="weight of the teacher in the target (0: ground truth only)")
    ap.add_argument("--init", default="program", help="program (the entry's own weights, default) | random | xavier")
    ap.add_argument("--steps", type=int, default=10000)
    ap.add_argument("--lr", type=float, default=None, help="default 3e-3 from random weights, 1e-3 from the entry's")
    ap.add_argument("--seed", type=int, default=31)
    ap.add_argument("--out", required=True, help="where to save the trained program (.json)")
    ap.add_argument("--cache", default="/tmp/distill_cache", help="directory for the prepared patches and teacher targets")
    a = ap.parse_args(argv)
    if not 0.0 <= a.alpha <= 1.0:
        ap.error(f"--alpha must be in [0, 1], got {a.alpha}")
    prog = probe_program(a.entry)
    cfa = prog.cfa.value
    cache = Path(a.cache)
    cache.mkdir(parents=True, exist_ok=True)
    tr, va = probe_datasets(cfa, a.seed, cache=str(cache))
    teacher = teacher_targets(tr.rgb, cfa, cache / f"{cfa}_teacher.npy")
    target = tr.rgb if a.alpha == 0 else np.ascontiguousarray(a.alpha * teacher + (1 - a.alpha) * tr.rgb, np.float32)
    crop = 8
    gap = teacher[..., crop:-crop, crop:-crop] - tr.rgb[..., crop:-crop, crop:-crop]
    teacher_psnr = float(-10 * np.log10(np.mean(gap**2)))
    lr = a.lr if a.lr is not None else (1e-3 if a.init == "program" else 3e-3)
    print(f"{a.entry}: {prog.cost():g} ops/pixel; teacher vs ground truth on the training patches {teacher_psnr:.2f} dB", flush=True)
    t = time.time()
    res = full_train(prog, (tr.mosaic, target), va, steps=a.steps, lr=lr, batch=32, seed=a.seed, loss="l1", init=a.init)
    print(f"trained in {time.time() - t:.0f} s, validation patches {res.val_psnr:.2f} dB (start {res.init_psnr:.2f})", flush=True)
    res.program.save(a.out)
    q = measure_quality(res.program)
    curve = [[h["step"], round(h["val_psnr"], 3)] for h in res.history if "val_psnr" in h and h.get("event") != "selection"]
    doc = {"entry": a.entry, "alpha": a.alpha, "init": a.init, "steps": a.steps, "lr": lr, "seed": a.seed, "teacher_patch_psnr": teacher_psnr, "val_patches": res.val_psnr, "val_patches_start": res.init_psnr, "val_curve": curve, **q}
    print(json.dumps(doc), flush=True)
    return doc


if __name__ == "__main__":
    main()
