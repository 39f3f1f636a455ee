"""Train a registry entry's graph from random weights with a search run's export settings, and measure it.

A probe of where quality is limited, not part of the search: compare with the entry itself (its lineage's weights
as the start) and, with ``--stride k``, train on every k-th image of the training split only (fewer, equally
varied images; the patch count stays the same). Prints the validation-patch PSNR, then the whole-image
CPSNR of the Halide kernel on Kodak24, McMaster18 and the corpus validation split (sRGB protocol).

    python search/results/probes/train_from_scratch.py bg_bayer_bayer_gpu_c333 --stride 2 --out c333_s2.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rawdemosaic.registry import default_models_dir, load_registry
from rawdemosaic.search import data as D
from rawdemosaic.search.export import measure_quality
from rawdemosaic.search.train import full_train


def probe_datasets(cfa: str, seed: int, stride: int = 1, cache: str | None = None) -> tuple:
    """The probes' training and validation patches: the export settings of search/results/bayer_gpu (and the
    other runs), 16384 sRGB patches of 48 px, colour augmentation 0.25, 10% synthetic; with ``stride`` k, from
    every k-th training image only. ``cache``: a directory for the prepared sets."""
    path = (lambda name: f"{cache}/{name}.npz") if cache else (lambda name: None)
    split = D.split_files
    D.split_files = lambda files: (lambda tv: (tv[0][::stride], tv[1]))(split(files))
    try:
        tr = D.PatchDataset(None, cfa, 48, linear=False, augment=True, seed=seed, split="train", count=16384, color=0.25, synthetic=0.1, cache=path(f"{cfa}_train_s{stride}_{seed}"))
    finally:
        D.split_files = split
    va = D.PatchDataset(None, cfa, 48, linear=False, augment=False, seed=seed + 1, split="val", count=1024, color=0.0, cache=path(f"{cfa}_val_{seed}"))
    return tr, va


def probe_program(name: str):
    """A registry entry's program, or one the front dropped since (``search/results/dropped``: c333 among them)."""
    dropped = Path(__file__).resolve().parents[1] / "dropped"
    entries = {e.name: e for reg in (dropped, default_models_dir()) for e in load_registry(reg)}
    return entries[name].program()


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("entry", help="registry name")
    ap.add_argument("--init", default="random", help="random | xavier | program (the entry's own weights)")
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--stride", type=int, default=1, help="train on every k-th training image")
    ap.add_argument("--seed", type=int, default=31)
    ap.add_argument("--out", required=True, help="where to save the trained program (.json)")
    ap.add_argument("--cache", default=None, help="directory for the prepared patch sets")
    a = ap.parse_args(argv)
    prog = probe_program(a.entry)
    cfa = prog.cfa.value
    tr, va = probe_datasets(cfa, a.seed, a.stride, a.cache)
    print(f"{a.entry}: {prog.cost():g} ops/pixel, {len(tr.files)} training images", flush=True)
    t = time.time()
    res = full_train(prog, tr, va, steps=a.steps, lr=3e-3, batch=32, seed=a.seed, loss="l1", init=a.init)
    print(f"trained in {time.time() - t:.0f} s, validation patches {res.val_psnr:.2f} dB", flush=True)
    res.program.save(a.out)
    q = measure_quality(res.program)
    doc = {"entry": a.entry, "init": a.init, "stride": a.stride, "images": len(tr.files), "steps": a.steps, "seed": a.seed, "val_patches": res.val_psnr, **q}
    print(json.dumps(doc), flush=True)
    return doc


if __name__ == "__main__":
    main()
