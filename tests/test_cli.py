"""The command line, end to end on the sample raws and bad inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from rawdemosaic.cli import main

ROOT = Path(__file__).resolve().parents[1]
BAYER = ROOT / "sample_raws" / "bayer_rggb.dng"
XTRANS = ROOT / "sample_raws" / "xtrans.dng"


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rawdemosaic.cli", *map(str, args)], capture_output=True, text=True, env={**os.environ})


def test_convert_samples_tiff16(tmp_path):
    r = run("convert", BAYER, XTRANS, "-o", tmp_path, "--budget", "100")
    assert r.returncode == 0, r.stderr
    assert "converted 2, skipped 0, failed 0" in r.stdout
    for name in ("bayer_rggb.tif", "xtrans.tif"):
        with tifffile.TiffFile(tmp_path / name) as t:
            a = t.asarray()
            assert a.dtype == np.uint16 and a.ndim == 3 and a.shape[2] == 3
            assert 34675 in t.pages[0].tags  # ICC profile
        assert a.mean() > 3000  # a real picture, not black
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bayer_rggb.tif", "xtrans.tif"]  # no temp files


@pytest.mark.parametrize("fmt, bits, mode", [("png", 8, "RGB"), ("png", 16, None), ("jpeg", None, "RGB")])
def test_convert_formats(tmp_path, fmt, bits, mode):
    args = ["convert", BAYER, "-o", tmp_path, "--format", fmt, "--kernel", "bayer_bilinear"]
    if bits:
        args += ["--bits", str(bits)]
    assert main(args) == 0
    out = next(tmp_path.iterdir())
    assert out.suffix == {"png": ".png", "jpeg": ".jpg"}[fmt]
    with Image.open(out) as im:
        assert im.size == (1024, 768)
        if mode:
            assert im.mode == mode


def test_single_output_file_and_wb_colorspace(tmp_path):
    dest = tmp_path / "x.png"
    assert main(["convert", XTRANS, "-o", dest, "--bits", "8", "--wb", "daylight", "--colorspace", "adobe", "--linear"]) == 0
    with Image.open(dest) as im:  # the suffix sets the format
        assert im.format == "PNG" and im.mode == "RGB"
    dest = tmp_path / "x.jpg"  # and JPEG's 8 bits with it
    assert main(["convert", BAYER, "-o", dest, "--kernel", "bayer_bilinear"]) == 0
    with Image.open(dest) as im:
        assert im.format == "JPEG"
    assert main(["convert", BAYER, "-o", tmp_path / "y", "--kernel", "bayer_bilinear", "--format", "JPG"]) == 0
    assert [p.name for p in (tmp_path / "y").iterdir()] == ["bayer_rggb.jpg"]


def test_plan_errors_write_nothing(tmp_path):
    """Outputs that would collide, overwrite an input or contradict the format stop the run before any file."""
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    one, two = tmp_path / "a" / "x.dng", tmp_path / "b" / "x.dng"
    one.write_bytes(BAYER.read_bytes()), two.write_bytes(XTRANS.read_bytes())
    cases = [
        ([one, two, "-o", tmp_path / "b", "--name", "{stem}.dng", "--overwrite"], "would overwrite the input file"),
        ([one, two, "-o", tmp_path / "out"], "would be written there"),
        ([one, two, "-o", tmp_path / "two.tif"], "but there are 2 inputs"),
        ([one, "-o", tmp_path / "x.jpg", "--format", "png"], "the suffix says jpeg"),
        ([one, "--budget", "inf"], "finite"),
    ]
    for args, msg in cases:
        r = run("convert", *args)
        assert r.returncode == 1 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b", "x.dng", "x.dng"]
    assert two.read_bytes() == XTRANS.read_bytes()


def test_no_orient_keeps_the_orientation_tag(tmp_path):
    from rawdemosaic.testing import write_dng

    rng = np.random.default_rng(0)
    src = write_dng(tmp_path / "o6.dng", rng.integers(0, 4095, (48, 64)).astype(np.uint16), "RGGB", 0, 4095, orientation=6)
    for flag in (None, "--no-orient"):
        out = tmp_path / f"{flag}.png"
        assert main(["convert", src, "-o", out, "--bits", "8", "--kernel", "bayer_bilinear", *([flag] if flag else [])]) == 0
        with Image.open(out) as im:
            upright = flag is None
            assert im.size == ((48, 64) if upright else (64, 48))  # (width, height): turned, or as stored
            assert im.getexif().get(0x0112) == (1 if upright else 6)


def test_report_directory_is_created(tmp_path):
    report = tmp_path / "logs" / "run.json"
    assert main(["convert", BAYER, "-o", tmp_path / "o", "--kernel", "bayer_bilinear", "--report", report]) == 0
    assert json.loads(report.read_text())["summary"]["converted"] == 1


def test_skip_existing_then_overwrite(tmp_path, capsys):
    assert main(["convert", BAYER, "-o", tmp_path, "--kernel", "bayer_bilinear"]) == 0
    out = tmp_path / "bayer_rggb.tif"
    stamp = out.stat().st_mtime_ns
    assert main(["convert", BAYER, "-o", tmp_path]) == 0
    assert "skipped" in capsys.readouterr().err
    assert out.stat().st_mtime_ns == stamp
    assert main(["convert", BAYER, "-o", tmp_path, "--overwrite"]) == 0
    assert out.stat().st_mtime_ns != stamp


def test_bad_files_one_line_nonzero_nothing_written(tmp_path):
    bad = tmp_path / "broken.dng"
    bad.write_bytes(BAYER.read_bytes()[:5000])
    cut = tmp_path / "cut.dng"  # headers whole, pixel data cut short: LibRaw prints a line of its own
    cut.write_bytes(BAYER.read_bytes()[:300000])
    text = tmp_path / "notes.dng"
    text.write_text("hello")
    outdir = tmp_path / "out"
    r = run("convert", bad, cut, text, BAYER, "-o", outdir, "--kernel", "bayer_bilinear")
    assert r.returncode == 1
    errs = r.stderr.splitlines()
    assert len(errs) == 3 and all(l.startswith("rawdemosaic: ") for l in errs), r.stderr  # one line per failure, nothing else
    assert all(any(n in l for l in errs) for n in ("broken.dng", "cut.dng", "notes.dng"))
    assert "converted 1, skipped 0, failed 3" in r.stdout
    assert sorted(p.name for p in outdir.iterdir()) == ["bayer_rggb.tif"]


def test_warnings_are_one_line_each_naming_the_file(tmp_path):
    """Files without a colour matrix or white balance convert, with one line per warning that names the
    file (each file its own, also from worker processes), no Python source lines; the report lists them."""
    from rawdemosaic.testing import write_dng

    rng = np.random.default_rng(0)
    plain = [write_dng(tmp_path / f"plain{i}.dng", (rng.random((32, 48)) * 4000).astype(np.uint16), "RGGB", 0, 4095) for i in range(2)]
    report = tmp_path / "report.json"
    for jobs in ("1", "2"):
        r = run("convert", *plain, BAYER, "-o", tmp_path / f"out{jobs}", "-j", jobs, "--kernel", "bayer_bilinear", "--report", report)
        assert r.returncode == 0, r.stderr
        assert ".py:" not in r.stderr and "DevelopWarning" not in r.stderr, r.stderr  # no Python warning format
        lines = [l for l in r.stderr.splitlines() if l.startswith("rawdemosaic: warning: ")]
        for p in plain:
            own = [l for l in lines if f"{p}: " in l]
            assert any("no colour matrix" in l for l in own) and any("white balance" in l for l in own), r.stderr
        assert not any(str(BAYER) in l for l in lines)
        doc = {Path(f["input"]).name: f for f in json.loads(report.read_text())["files"]}
        assert doc["bayer_rggb.dng"]["warnings"] == [] and any("colour matrix" in w for w in doc["plain0.dng"]["warnings"])


def test_missing_input_and_budget_error(tmp_path):
    r = run("convert", tmp_path / "nope.dng", "-o", tmp_path)
    assert r.returncode == 1 and "nope.dng" in r.stderr
    r = run("convert", BAYER, "-o", tmp_path, "--budget", "1")
    assert r.returncode == 1 and "available" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


def test_never_overwrites_an_input(tmp_path):
    src = tmp_path / "a.dng"
    src.write_bytes(BAYER.read_bytes())
    r = run("convert", src, "-o", src, "--overwrite", "--name", "a.dng")
    assert r.returncode != 0
    assert src.read_bytes() == BAYER.read_bytes()


def test_info_and_kernels(capsys):
    assert main(["info", BAYER, XTRANS]) == 0
    out = capsys.readouterr().out
    assert "RGGB" in out and "X-Trans" in out and "1024 x 768" in out
    assert main(["kernels", "--cfa", "xtrans"]) == 0
    out = capsys.readouterr().out
    assert "xtrans_linear" in out and "bayer_bilinear" not in out
    assert main(["info", __file__]) == 1


def test_kernels_build(tmp_path, monkeypatch, capsys):
    """``kernels build`` compiles every kernel of a registry (here the classical ones; the shipped registry's
    kernels are all compiled by tests/program/test_compiler.py) and develop's finishing passes into the cache, once."""
    from rawdemosaic.program.classical import CLASSICAL
    from rawdemosaic.registry import add_entry

    models, cache = tmp_path / "models", tmp_path / "cache"
    for make in CLASSICAL.values():
        add_entry(make(), models, {"kodak24": 0.0})
    monkeypatch.setenv("RAWDEMOSAIC_CACHE", str(cache))
    bayer = [n for n, make in CLASSICAL.items() if make().cfa.value == "bayer"]
    assert main(["kernels", "build", "--cfa", "bayer", "--models", models]) == 0
    out = capsys.readouterr().out
    assert out.count("built") == 2 * len(bayer) + 12 and len(bayer) >= 2 and "xtrans" not in out  # float32 and uint16 of each
    assert out.count("finish ") == 12  # the sRGB, Adobe, ROMM and linear curves, to float32, uint16 and uint8
    assert len(list(cache.rglob("*.so"))) == 2 * len(bayer) + 12
    assert main(["kernels", "build", "--cfa", "bayer", "--models", models]) == 0
    assert "built" not in capsys.readouterr().out.replace("cached", "")


def test_dry_run_report_recipe(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('format = "png"\nbits = 8\nkernel = "bayer_bilinear"\nname = "{stem}-{camera}.{ext}"\n')
    report = tmp_path / "rep.json"
    outdir = tmp_path / "o"
    assert main(["convert", BAYER, "-o", outdir, "--recipe", recipe, "--dry-run", "--report", report]) == 0
    assert not outdir.exists()
    doc = json.loads(report.read_text())
    assert doc["summary"]["planned"] == 1
    assert doc["files"][0]["output"].endswith("bayer_rggb-RawDemosaic_Synthetic_Bayer.png") or doc["files"][0]["output"].endswith(".png")
    # the command line overrides the recipe
    assert main(["convert", BAYER, "-o", outdir, "--recipe", recipe, "--format", "tiff", "--report", report]) == 0
    doc = json.loads(report.read_text())
    assert doc["files"][0]["status"] == "converted" and doc["files"][0]["output"].endswith(".tif")
    assert doc["files"][0]["kernel"] == "bayer_bilinear"


def test_directories_recursion_globs_and_jobs(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for p in (tmp_path / "a" / "one.dng", tmp_path / "a" / "b" / "two.dng"):
        p.write_bytes(BAYER.read_bytes())
    (tmp_path / "a" / "skip.txt").write_text("x")
    out = tmp_path / "out"
    assert main(["convert", tmp_path / "a", "-o", out, "--kernel", "bayer_bilinear", "--format", "png", "--bits", "8"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["one.png"]
    assert main(["convert", tmp_path / "a", "-r", "-o", out, "-j", "2", "--kernel", "bayer_bilinear", "--format", "png", "--bits", "8"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["one.png", "two.png"]
    assert main(["convert", str(tmp_path / "a" / "*.dng"), "-o", tmp_path / "g", "--dry-run"]) == 0
