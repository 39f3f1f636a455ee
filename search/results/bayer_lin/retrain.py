"""Retrain a classical kernel from its own weights with the export recipe, and measure it (SUMMARY.md).

    python search/results/bayer_lin/retrain.py PROGRAM.json {bayer,xtrans} STEPS OUT.json [--keep-zeros]

PROGRAM is a program file, e.g. ``rawdemosaic.program.classical.bayer_malvar().save("malvar.json")``.
Training: 16384 sRGB patches of 48 px (colour augmentation 0.25), L1, lr 3e-3 with cosine decay, batch 32,
the best of 10 validation checks kept. ``--keep-zeros``: zero taps stay zero (the kernel keeps its cost).
"""

from __future__ import annotations

import sys
import time

from rawdemosaic.program.graph import Program
from rawdemosaic.search.data import PatchDataset
from rawdemosaic.search.export import measure_quality
from rawdemosaic.search.train import full_train


def main(argv: list[str]) -> None:
    src, cfa, steps, out = argv[0], argv[1], int(argv[2]), argv[3]
    keep_zeros = "--keep-zeros" in argv[4:]
    prog = Program.load(src)
    tr = PatchDataset(cfa=cfa, patch=48, linear=False, seed=1, count=16384, color=0.25)
    va = PatchDataset(cfa=cfa, patch=48, linear=False, seed=1, split="val", count=512)
    t0 = time.time()
    res = full_train(prog, tr, va, steps=steps, lr=3e-3, batch=32, loss="l1", keep_zeros=keep_zeros)
    print(f"trained in {time.time() - t0:.0f} s; validation patches {res.init_psnr:.3f} -> {res.val_psnr:.3f} dB", flush=True)
    trained = res.program.with_domain("srgb")
    trained.save(out)
    q = measure_quality(trained, validation=True)
    print(f"{out}: {trained.cost():g} ops/pixel,", ", ".join(f"{k} {v:.2f}" for k, v in q.items()), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
