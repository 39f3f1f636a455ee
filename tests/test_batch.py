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


@pytest.mark.parametrize(
    "layer, match",
    [
        ({"budget": "20"}, "budget takes a number"),
        ({"jobs": "2"}, "jobs takes an integer"),
        ({"quality": 50.5}, "quality takes an integer"),
        ({"overwrite": "no"}, "overwrite takes true or false"),
        ({"linear": "false"}, "linear takes true or false"),
        ({"bits": True}, "bits takes an integer"),
        ({"budget": float("inf")}, "finite"),
        ({"colorspace": "lab"}, "unknown colorspace"),
        ({"wb": "1,1"}, "white balance"),
        ({"wb": [1, -1, 1]}, "white balance"),
        ({"models": "/no/such/registry"}, "not a kernel registry"),
    ],
)
def test_recipe_values_are_type_checked(layer, match):
    """A recipe (TOML) can hold any type: a wrong one is refused up front, never misread."""
    with pytest.raises(ValueError, match=match):
        Options.merged(layer)


def test_options_canonical_forms():
    o = Options.merged({"format": "TIF", "wb": "2, 1, 1.5", "colorspace": "Adobe"})
    assert (o.format, o.wb, o.colorspace) == ("tiff", (2.0, 1.0, 1.5), "adobe")
    assert Options.merged({"format": ".jpg", "bits": 8}).format == "jpeg"
    assert Options.merged({"wb": [1, 1, 1, 1]}).wb == (1.0, 1.0, 1.0, 1.0)


def test_plan_refuses_to_overwrite_any_input(tmp_path):
    """An output path may be no input of the batch: its own, another's, or one linked to it."""
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    one, two = _files(tmp_path, ["a/x.dng", "b/x.dng"])
    with pytest.raises(ValueError, match="would overwrite the input file"):
        plan([one, two], Options.merged({"output": str(tmp_path / "b"), "name": "{stem}.dng", "overwrite": True}))
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x.tif").hardlink_to(two)
    with pytest.raises(ValueError, match="would overwrite the input file"):
        plan([one, two, str(tmp_path / "c" / "x.tif")], Options.merged({"output": str(tmp_path / "c")}))
    assert Path(two).read_bytes() == BAYER.read_bytes()


def test_plan_refuses_two_inputs_with_one_output(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    files = _files(tmp_path, ["a/x.dng", "b/x.dng"])
    with pytest.raises(ValueError, match="both .* would be written there"):
        plan(files, Options.merged({"output": str(tmp_path / "out")}))
    tasks = plan(files, Options.merged({"output": str(tmp_path / "out"), "name": "{parent}_{stem}.{ext}"}))
    assert [Path(t.output).name for t in tasks] == ["a_x.tif", "b_x.tif"]


def test_plan_output_file_or_directory(tmp_path):
    """``output`` with an image suffix is one file of that format; otherwise a directory."""
    a, b = _files(tmp_path, ["a.dng", "b.dng"])
    (task,) = plan([a], Options.merged({"output": str(tmp_path / "one.png"), "format": "png"}))
    assert task.output == str(tmp_path / "one.png")
    with pytest.raises(ValueError, match="the suffix says png, the format is tiff"):
        plan([a], Options.merged({"output": str(tmp_path / "one.png")}))
    with pytest.raises(ValueError, match="names one tiff file, but there are 2 inputs"):
        plan([a, b], Options.merged({"output": str(tmp_path / "two.tif")}))
    with pytest.raises(ValueError, match="exists and is not a directory"):
        plan([a], Options.merged({"output": a}))
    (tmp_path / "dir.tif").mkdir()  # an existing directory stays a directory, whatever its name
    assert [Path(t.output).parent.name for t in plan([a, b], Options.merged({"output": str(tmp_path / "dir.tif")}))] == ["dir.tif"] * 2


def test_name_templates_read_metadata_without_decoding(tmp_path, monkeypatch):
    """{camera} and {date} come from the headers: the calling process never decodes a raw."""
    import rawdemosaic.raw as R

    monkeypatch.setattr(R, "read", lambda *a, **k: pytest.fail("decoded in the calling process"))
    (a,) = _files(tmp_path, ["a.dng"])
    (task,) = plan([a], Options.merged({"name": "{camera}_{date}_{stem}.{ext}"}))
    assert Path(task.output).name == "RawDemosaic_Synthetic_Bayer_2024-06-01_a.tif"


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
