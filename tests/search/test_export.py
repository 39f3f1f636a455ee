"""Exported entries land in the registry (others kept) and the runtime loads and runs them."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

import numpy as np  # noqa: E402

from rawdemosaic.cfa import CFA, mosaic  # noqa: E402
from rawdemosaic.program.classical import bayer_bilinear, linear_program  # noqa: E402
from rawdemosaic.registry import add_entry, kernels  # noqa: E402
from rawdemosaic.search.data import PatchDataset, load_split  # noqa: E402
from rawdemosaic.search.export import export_entry  # noqa: E402
from rawdemosaic.search.train import train  # noqa: E402

DIRS = ("train/a", "train/b")


def test_export_entry_runs_in_the_runtime(tiny_data, tmp_path):
    from rawdemosaic import demosaic

    reg = tmp_path / "models"
    add_entry(bayer_bilinear(), reg, {"kodak24": 30.0, "mcmaster18": 32.0})
    tr = PatchDataset(DIRS, "bayer", patch=16, count=64, seed=0)
    va = PatchDataset(DIRS, "bayer", patch=16, count=16, seed=0, split="val")
    res = train(linear_program("bayer_searched_test", CFA.BAYER, {}, {}, {}), tr, va, steps=30, lr=1e-2, batch=8, inits=1)
    test_imgs = load_split("train", DIRS, limit=2)  # stand-ins for the test sets
    info = export_entry(
        res.program,
        {"run_dir": tmp_path / "runs" / "x", "seed": 0, "config": "smoke.toml", "generation": 2},
        reg,
        images={"kodak24": test_imgs, "mcmaster18": test_imgs},
        image_dirs=DIRS,
    )
    assert info.name == "bayer_searched_test"
    assert {"kodak24", "mcmaster18", "kodak24_linear", "mcmaster18_linear", "val", "val_linear"} <= set(info.quality)
    doc = json.loads((reg / "registry.json").read_text())
    names = {e["name"] for e in doc["entries"]}
    assert names == {"bayer_bilinear", "bayer_searched_test"}
    prov = next(e for e in doc["entries"] if e["name"] == "bayer_searched_test")["provenance"]
    assert prov["seed"] == 0 and prov["generation"] == 2 and prov["run_dir"].endswith("runs/x") and prov["source"] == "rawdemosaic.search"
    assert [k.name for k in kernels("bayer", models=reg, plugins=False)]
    img = test_imgs[0][:40, :48]
    out = demosaic(mosaic(img, "RGGB"), "RGGB", kernel="bayer_searched_test", models=reg)
    assert out.shape == (40, 48, 3) and np.isfinite(out).all()
    # re-export replaces the entry, keeps the others
    export_entry(res.program, {"seed": 1}, reg, quality={"kodak24": 1.0})
    doc = json.loads((reg / "registry.json").read_text())
    assert len(doc["entries"]) == 2
