"""Batch engine: isolation of crashing files, ordering, Ray."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from rawdemosaic.batch import Options, plan, run

sys.path.insert(0, str(Path(__file__).resolve().parent))
from batch_workers import crash_on_marked  # noqa: E402

BAYER = Path(__file__).resolve().parents[1] / "sample_raws" / "bayer_rggb.dng"


def _files(tmp_path, names):
    paths = []
    for n in names:
        p = tmp_path / n
        p.write_bytes(BAYER.read_bytes())
        paths.append(str(p))
    return paths


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_crashing_file_costs_only_itself(tmp_path, jobs):
    files = _files(tmp_path, ["a.dng", "crash.dng", "b.dng", "c.dng"])
    opts = Options.merged({"output": str(tmp_path / "out"), "format": "png", "bits": 8, "kernel": "bayer_bilinear", "jobs": jobs})
    results = run(plan(files, opts), opts, worker=crash_on_marked)
    status = {Path(r.input).name: r.status for r in results}
    assert status == {"a.dng": "converted", "crash.dng": "failed", "b.dng": "converted", "c.dng": "converted"}
    assert "crash" in next(r.reason for r in results if r.status == "failed")
    assert [Path(r.input).name for r in results] == ["a.dng", "crash.dng", "b.dng", "c.dng"]


def test_options_validation():
    with pytest.raises(ValueError, match="JPEG"):
        Options.merged({"format": "jpeg", "bits": 16})
    with pytest.raises(ValueError, match="unknown option"):
        Options.merged({"colour": "x"})
    assert Options.merged({"bits": 8}, {"bits": None}).bits == 8


def test_ray_local_cluster(tmp_path):
    ray = pytest.importorskip("ray")
    files = _files(tmp_path, ["r1.dng", "r2.dng"])
    opts = Options.merged({"output": str(tmp_path / "out"), "format": "png", "bits": 8, "kernel": "bayer_bilinear"})
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    try:
        results = run(plan(files, opts), opts, ray="local")
    finally:
        ray.shutdown()
    assert [r.status for r in results] == ["converted", "converted"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["r1.png", "r2.png"]


def test_writer_plugin_format_is_written_atomically(tmp_path, monkeypatch):
    import numpy as np

    import rawdemosaic.plugins.writers as wp
    from rawdemosaic.batch import convert_one

    seen = {}

    def write_npy(path, image, *, bits, quality, icc, exif):
        seen["tmp"] = Path(path)
        with open(path, "wb") as fh:
            np.save(fh, image)

    def broken(path, image, *, bits, quality, icc, exif):
        Path(path).write_bytes(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(wp, "available_writers", lambda: {".npy": write_npy, ".bad": broken})
    opts = Options.merged({"output": str(tmp_path), "format": "npy", "kernel": "bayer_bilinear"})
    (task,) = plan([str(BAYER)], opts)
    assert task.output.endswith("bayer_rggb.npy")
    r = convert_one(task, opts)
    assert r.status == "converted", r.reason
    assert np.load(task.output).shape == (768, 1024, 3)
    assert seen["tmp"] != Path(task.output) and not seen["tmp"].exists()
    opts = Options.merged({"output": str(tmp_path), "format": "bad", "kernel": "bayer_bilinear"})
    r = convert_one(plan([str(BAYER)], opts)[0], opts)
    assert r.status == "failed" and "disk full" in r.reason
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bayer_rggb.npy"]  # no half-written file
    with pytest.raises(ValueError, match="available: tiff, png, jpeg, bad, npy"):
        Options.merged({"format": "exr"})
