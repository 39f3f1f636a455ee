"""Smoke tests of the benchmark scripts (benchmarks/*.py) on tiny sizes; the real runs are in benchmarks/RESULTS.md."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    try:
        yield {name: importlib.import_module(name) for name in ("_common", "quality", "speed", "plot_front", "convert")}
    finally:
        sys.path.remove(str(BENCH))


def test_protocol_matches_evaluate(bench, shared_data):
    import rawdemosaic
    from rawdemosaic.evaluate import evaluate, load_images

    C = bench["_common"]
    info = rawdemosaic.kernels("bayer")[0]
    imgs = load_images("test/kodak24", limit=1)
    fn = C.registry_fn(info)
    for linear in (False, True):
        assert np.mean(C.protocol_scores(fn, imgs, "RGGB", linear=linear)) == pytest.approx(evaluate(fn, imgs, "RGGB", linear=linear), abs=1e-9)


def test_padding_keeps_phase(bench, shared_data):
    """Padding by multiples of the period leaves a translation-invariant method's score unchanged in the middle."""
    from rawdemosaic.cfa import CFA, CFAPattern
    from rawdemosaic.evaluate import load_images

    C = bench["_common"]
    import rawdemosaic

    info = rawdemosaic.kernels("xtrans")[0]
    img = load_images("test/mcmaster18", limit=1)[0]
    pat = CFAPattern(CFA.XTRANS, 0, 0)
    a = C.protocol_scores(C.registry_fn(info), [img], pat)[0]
    b = C.protocol_scores(C.registry_fn(info), [img], pat, pad_to=600)[0]
    assert abs(a - b) < 0.05


def test_opencv_peer_matches_bilinear_kernel(bench, shared_data):
    pytest.importorskip("cv2")
    import rawdemosaic
    from rawdemosaic.evaluate import load_images

    C = bench["_common"]
    imgs = load_images("test/kodak24", limit=1)
    info = next(k for k in rawdemosaic.kernels("bayer") if k.name == "bayer_bilinear")
    ours = C.protocol_scores(C.registry_fn(info), imgs, "RGGB")[0]
    cv = C.protocol_scores(C.opencv_peer("bilinear"), imgs, "RGGB")[0]
    assert abs(ours - cv) < 0.05  # the phase mapping to OpenCV's codes is right


def test_results_sections(bench, tmp_path):
    C = bench["_common"]
    p = tmp_path / "R.md"
    C.update_results("speed", "S1", p)
    C.update_results("quality", "Q1", p)
    C.update_results("speed", "S2", p)
    t = p.read_text()
    assert "S2" in t and "S1" not in t and "Q1" in t and t.count("<!-- speed:begin -->") == 1
    C.update_results("convert", "E1", p)
    C.update_results("check", "K1", p)
    C.update_results("quality", "Q2", p)
    t = p.read_text()
    assert [t.index(x) for x in ("Q2", "S2", "K1", "E1")] == sorted(t.index(x) for x in ("Q2", "S2", "K1", "E1"))
    assert "Q1" not in t and t.count(":begin -->") == 4


def test_timed_rounds_interleave_the_methods(bench):
    calls: list[str] = []
    tasks = {k: ((lambda k=k: calls.append(k)), n) for k, n in (("fast", 3), ("peer", 3), ("slow", 1))}
    t = bench["_common"].timed_rounds(tasks, warmup=1)
    assert {k: len(v) for k, v in t.items()} == {"fast": 3, "peer": 3, "slow": 1}
    assert all(x >= 0 for v in t.values() for x in v)
    # one warm-up each, then rounds: every method once per round while it still needs samples
    assert calls == ["fast", "peer", "slow"] + ["fast", "peer", "slow"] + ["fast", "peer"] * 2


def test_timed_rounds_shuffled(bench):
    calls: list[str] = []
    tasks = {k: ((lambda k=k: calls.append(k)), 6) for k in "abcd"}
    t = bench["_common"].timed_rounds(tasks, warmup=0, shuffle=1)
    assert {k: len(v) for k, v in t.items()} == dict.fromkeys("abcd", 6)
    rounds = [calls[i : i + 4] for i in range(0, 24, 4)]
    assert all(sorted(r) == list("abcd") for r in rounds) and any(r != list("abcd") for r in rounds)


@pytest.mark.slow
def test_convert_benchmark_smoke(bench):
    """benchmarks/convert.py on small DNGs (LibRaw's X-Trans code failed on 1008 x 480 and read 1200 x 600)."""
    E = bench["convert"]
    doc = E.run(reps=1, log=lambda m: None, size=(600, 1200), budgets=(100.0,))
    assert doc["quick"]
    methods = {(r["file"], r["method"]) for r in doc["rows"]}
    assert {f for f, _ in methods} == {"bayer", "xtrans"} and len(methods) == 8  # 1 kernel + 3 LibRaw, each file
    ours = [r for r in doc["rows"] if "kernel" in r]
    assert all(r["cost"] <= 100 and r["budget"] == 100.0 and set(r["stages"]) == {"read", "develop", "write"} for r in ours)
    assert all(r["median_s"] > 0 and r["mps"] > 0 for r in doc["rows"])
    assert "| bayer |" in E.render(doc)


@pytest.mark.slow
def test_scripts_smoke(bench, shared_data, tmp_path):
    pytest.importorskip("cv2")
    pytest.importorskip("matplotlib")
    md = tmp_path / "RESULTS.md"
    qj, sj = tmp_path / "q.json", tmp_path / "s.json"
    only = "bayer_bilinear,xtrans_linear,opencv_bilinear,opencv_vng,libraw_linear"
    q = bench["quality"].main(["--quick", "--limit", "1", "--no-demosaicnet", "--only", only, "--json", str(qj), "--results", str(md)])
    ids = {m["id"] for m in q["methods"]}
    assert {"bayer_bilinear", "opencv_bilinear", "libraw_linear"} <= ids
    lib = next(m for m in q["methods"] if m["id"] == "libraw_linear")
    assert set(lib["srgb"]) == {"bayer/kodak24", "bayer/mcmaster18", "xtrans/kodak24", "xtrans/mcmaster18"}
    assert all(20 < v < 60 for v in lib["srgb"].values())
    s = bench["speed"].main(["--quick", "--size", "96x144", "--repeats", "1", "--crop", "48", "--no-demosaicnet", "--only", "bayer_bilinear,xtrans_linear", "--json", str(sj), "--results", str(md)])
    assert any(r["kind"] == "registry" and r["dtype"].startswith("uint16") for r in s["rows"])
    assert any(r["id"] == "opencv_bilinear" for r in s["rows"]) and s["end_to_end"]
    text = md.read_text()
    assert "## Quality" in text and "## Speed" in text
    assert json.loads(qj.read_text())["quick"] and json.loads(sj.read_text())["quick"]
    png = tmp_path / "front.png"
    bench["plot_front"].main(["--quality", str(qj), "--speed", str(sj), "-o", str(png)])
    assert png.stat().st_size > 10_000


@pytest.mark.parametrize("cfa", ["bayer", "xtrans"])
def test_demosaicnet_teacher_targets(bench, shared_data, tmp_path, cfa):
    """``_demosaicnet_worker.py teach`` (distillation targets): each patch's output does not depend on the
    batch it is in, and is a good demosaic of it (demosaicnet scores 40 to 42 dB on Kodak24)."""
    import subprocess

    from rawdemosaic.evaluate import load_images

    py = bench["_common"].demosaicnet_python()
    if py is None:
        pytest.skip("demosaicnet is not importable")
    img = load_images("test/kodak24", limit=1)[0]
    rgb = np.stack([img[y : y + 48, x : x + 48] for y, x in ((0, 0), (96, 240), (300, 60))]).transpose(0, 3, 1, 2)
    outs = []
    for k, part in enumerate((rgb, rgb[1:2])):
        src, dst = tmp_path / f"in{k}.npy", tmp_path / f"out{k}.npy"
        np.save(src, np.ascontiguousarray(part, np.float32))
        subprocess.run([py, str(BENCH / "_demosaicnet_worker.py"), "teach", "--cfa", cfa, "--input", str(src), "--output", str(dst)], check=True, capture_output=True)
        outs.append(np.load(dst))
    assert outs[0].shape == rgb.shape and outs[0].dtype == np.float32
    np.testing.assert_allclose(outs[0][1:2], outs[1], atol=1e-5)
    err = (np.clip(outs[0], 0, 1) - rgb)[..., 8:-8, 8:-8]
    assert -10 * np.log10(np.mean(err**2)) > 34


def test_validation_images_are_the_search_validation_split(bench, shared_data):
    """The benchmark's corpus-validation images are exactly the files the search holds out (never trained on)."""
    from rawdemosaic.evaluate import TRAIN_SETS, VAL_EVERY, data_dir, split_files

    files, how = bench["quality"].validation_files()
    every = sorted(f for d in TRAIN_SETS for f in (data_dir() / d).iterdir())
    train, val = split_files(every)
    assert files == val and "split_files" in how
    assert not set(files) & set(train) and len(val) == -(-len(every) // VAL_EVERY)
    pytest.importorskip("torch")
    from rawdemosaic.search import data as D

    assert D.split_files(D.list_images()) == (train, val)


@pytest.mark.parametrize("cfa", ["RGGB", "GBRG", "xtrans"])
def test_self_ensemble_transforms_keep_the_layout(bench, cfa):
    """Each transform of a mosaic is the mosaic of the transformed image in the detected phase, and each
    inverse undoes its forward; so averaging a kernel over them is averaging the same scene."""
    E = importlib.import_module("self_ensemble")  # benchmarks/ is on sys.path while `bench` is
    from rawdemosaic.cfa import as_pattern, mosaic

    pat = as_pattern(cfa)
    img = np.random.default_rng(0).random((33, 40, 3)).astype(np.float32)  # not whole periods: flips shift the phase
    for name, (f, g) in E.TRANSFORMS.items():
        tp = E.transformed_pattern(pat, img.shape[:2], name)
        np.testing.assert_array_equal(f(mosaic(img, pat)), mosaic(np.ascontiguousarray(f(img)), tp), err_msg=name)
        np.testing.assert_array_equal(g(f(img)), img, err_msg=name)


def test_self_ensemble_of_bilinear_is_bilinear_inside(bench):
    """Bilinear interpolation is symmetric, so every transformed run agrees with the plain one away from the
    border, and so does their mean; a wrong phase would not."""
    E = importlib.import_module("self_ensemble")  # benchmarks/ is on sys.path while `bench` is
    import rawdemosaic
    from rawdemosaic.cfa import as_pattern, mosaic

    C = bench["_common"]
    fn = C.registry_fn(next(k for k in rawdemosaic.kernels("bayer") if k.name == "bayer_bilinear"))
    pat = as_pattern("GRBG")
    m = mosaic(np.random.default_rng(1).random((32, 40, 3)).astype(np.float32), pat)
    plain = fn(m, pat)
    for n, names in E.ENSEMBLES.items():
        np.testing.assert_allclose(E.ensemble(fn, m, pat, names)[2:-2, 2:-2], plain[2:-2, 2:-2], atol=1e-5, err_msg=str(n))
    from rawdemosaic.program.compiler import Kernel

    k16 = Kernel(next(k for k in rawdemosaic.kernels("bayer") if k.name == "bayer_bilinear").program(), "uint16", "uint16", quiet=True)
    m16 = (m * 65535).astype(np.uint16)
    plain16 = k16(m16, pat).astype(np.int64)
    for n, names in E.ENSEMBLES.items():  # the uint16 path (timed) rounds the float32 mean back: within a step
        got = E.ensemble(k16, m16, pat, names)
        assert got.dtype == np.uint16 and np.abs(got.astype(np.int64) - plain16)[2:-2, 2:-2].max() <= 1, n


def test_self_ensemble_script_smoke(bench, shared_data, tmp_path):
    E = importlib.import_module("self_ensemble")
    out = tmp_path / "ens.md"
    doc = E.main(["--limit", "1", "--sizes", "1,2", "--kernels", "bayer_bilinear", "--time", "48x64", "--repeats", "1", "--results", str(out)])
    one, two = (r for r in doc["rows"] if r["kernel"] == "bayer_bilinear")
    assert two["cost"] == 2 * one["cost"] and abs(two["mcmaster18"] - one["mcmaster18"]) < 0.01  # symmetric filter
    assert "| `bayer_bilinear` | 2 |" in out.read_text() and all(r["mps"] > 0 for r in doc["rows"])
    with pytest.raises(SystemExit):
        E.main(["--sizes", "3", "--results", ""])


def _script(name: str):
    """A benchmark script as a module (benchmarks/ on the path while it is in use)."""
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH))


@pytest.fixture()
def simd_peak():
    yield from _script("simd_peak")


def test_simd_peak_halide_stacks_compute_the_same_layers(simd_peak):
    """The int16 A/B stack is the float32 one in fixed point (weights x 256, floored per layer): same outputs up
    to its rounding, so the benchmark compares equal work."""
    hl = pytest.importorskip("halide")
    a = np.random.default_rng(1).random((16, 4, 64)) * 1000
    outs = {}
    for kind in ("float32", "int16"):
        inp, out = simd_peak._halide_stack(kind)
        data = a.astype(kind)  # referenced while the buffer is in use
        inp.set(hl.Buffer(data))
        outs[kind] = np.asarray(out.realize([64, 4, 16])).astype(np.float64)
    f, q = outs["float32"], outs["int16"]
    assert f.max() > 10 and (f > 0).mean() > 0.2  # the stack does not collapse to zero
    assert np.abs(f - q).max() < 0.1 * f.max() and np.abs(f - q).mean() < 0.15 * np.abs(f).mean()


@pytest.mark.skipif(sys.platform == "win32", reason="inline x86-64 assembly, gcc syntax")
def test_simd_peak_probe_runs(simd_peak):
    import platform
    import shutil

    if platform.machine().lower() not in ("x86_64", "amd64") or not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("needs x86-64 and a C compiler")
    rates = simd_peak.peak_gmacs(iterations=100_000, runs=1)
    assert len(rates) == 4 and all(r > 0 for r in rates)


@pytest.fixture()
def quantisation():
    pytest.importorskip("torch")
    yield from _script("quantisation")


def test_quantisation_codes(quantisation):
    import torch

    assert quantisation.parse_configs("16/16@2,8/8") == [(16, 16, 2.0), (8, 8, 1.0)]
    x = torch.linspace(-0.3, 1.2, 1001)
    q = quantisation._fake_quant(x, -0.3, 1.2, 8)
    step = 1.5 / 255
    assert float((q - x).abs().max()) <= step / 2 + 1e-6 and len(torch.unique(q)) <= 256
    assert float(quantisation._fake_quant(torch.zeros(3), -0.3, 1.2, 8).abs().max()) == 0.0  # zero stays exact
    assert float(quantisation._fake_quant(torch.tensor([2.0]), -0.3, 1.2, 8)) == pytest.approx(1.2, abs=step)  # clips
    w = torch.randn(6, 4, 3, 3)
    wq = quantisation._weight_quant(w, 8)
    per_channel_step = w.abs().flatten(1).max(1).values / 127
    assert bool(((wq - w).abs().flatten(1).max(1).values <= per_channel_step / 2 + 1e-7).all())


def test_quantisation_float_path_is_the_program_and_16_bits_are_nearly_lossless(quantisation):
    """``forward`` without ranges is the registry program (numpy reference on the interior); calibrated on the
    image itself with room to spare, 16-bit codes change it by far less than 8-bit ones, and neither by much."""
    from rawdemosaic.cfa import CFAPattern, mosaic
    from rawdemosaic.program.reference import run_reference
    from rawdemosaic.registry import kernels
    from rawdemosaic.search.model import ProgramModule

    prog = {k.name: k for k in kernels(plugins=False)}["bm_bayer_bayer_lin_c67_rc"].program()
    module = ProgramModule(prog).eval()
    rng = np.random.default_rng(0)
    img = np.clip(rng.random((8, 8, 3)).repeat(6, 0).repeat(6, 1) + 0.05 * rng.standard_normal((48, 48, 3)), 0, 1).astype(np.float32)
    pat = CFAPattern(prog.cfa, 0, 0)
    ref = np.clip(run_reference(prog, mosaic(img, pat), pat), 0, 1)
    r = prog.receptive_radius()
    f = quantisation.demosaic(module, img)
    np.testing.assert_allclose(f[r:-r, r:-r], ref[r:-r, r:-r], atol=1e-4)
    ranges = quantisation.calibrate(module, [img])
    err = {b: float(np.abs(quantisation.demosaic(module, img, ranges=ranges, abits=b, wbits=b, margin=1.5) - f).max()) for b in (8, 16)}
    assert err[16] < 1e-3 and err[16] * 20 < err[8] < 0.1


def test_partial_runs_leave_the_full_results_alone(bench, monkeypatch, tmp_path):
    # `speed.py --only X` (not --quick) once replaced the published speed table with one row
    C = bench["_common"]
    md, sj, qj = tmp_path / "RESULTS.md", tmp_path / "speed.json", tmp_path / "quality.json"
    monkeypatch.setattr(C, "RESULTS_MD", md)
    monkeypatch.setattr(C, "SPEED_JSON", sj)
    monkeypatch.setattr(C, "QUALITY_JSON", qj)
    s = bench["speed"].main(["--size", "96x144", "--repeats", "1", "--slow-repeats", "1", "--crop", "48", "--no-demosaicnet", "--no-libraw",
                             "--no-colour", "--no-e2e", "--only", "bayer_bilinear"])
    assert s["rows"] and not md.exists() and not sj.exists()
