"""Kernel packs: third-party registries declared under the ``rawdemosaic.kernels`` entry-point group.

The packs in ``tests/data/kernelpack`` (one program, ``demo_pack_bilinear``) and
``tests/data/kernelpack_broken`` (four broken entry points) are really built and installed with pip,
into a private ``--target`` directory that is put on ``sys.path`` only while a test needs it: the
distributions are found through ``importlib.metadata`` exactly as from site-packages, but the shared
environment (and other test runs in it) never sees them. The remaining cases use a monkeypatched
``importlib.metadata.entry_points``.
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import rawdemosaic
from rawdemosaic.cfa import CFA, mosaic
from rawdemosaic.demosaic import choose, demosaic
from rawdemosaic.develop import develop
from rawdemosaic.registry import ENTRY_POINT_GROUP, kernels, select
from plugins_conftest_helpers import DATA, kernel_cache, patch_entry_points, sample_dngs  # noqa: F401

pytestmark = pytest.mark.usefixtures("kernel_cache")


def _pip_install(src: Path, target: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
           "--disable-pip-version-check", "--quiet", "--target", str(target), str(src)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if res.returncode != 0:
        pytest.fail(f"pip install {src.name} failed:\n{res.stdout}\n{res.stderr}")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``{"good": site_dir, "broken": site_dir}``: the two packs, installed with pip."""
    root = tmp_path_factory.mktemp("kernelpacks")
    sites = {}
    for key, name in (("good", "kernelpack"), ("broken", "kernelpack_broken")):
        src = root / f"src-{name}"
        shutil.copytree(DATA / name, src, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
        site = root / f"site-{key}"
        _pip_install(src, site)  # building from a copy keeps build litter out of the repository
        sites[key] = site
    yield sites


def _activate(monkeypatch, *sites: Path) -> None:
    for s in sites:
        monkeypatch.syspath_prepend(str(s))
    importlib.invalidate_caches()


@pytest.fixture
def good_pack(installed, monkeypatch):
    _activate(monkeypatch, installed["good"])
    yield installed["good"]
    importlib.invalidate_caches()


@pytest.fixture
def both_packs(installed, monkeypatch):
    _activate(monkeypatch, installed["good"], installed["broken"])
    yield installed
    importlib.invalidate_caches()


def test_pack_not_visible_without_install():
    assert "demo_pack_bilinear" not in {k.name for k in kernels()}


def test_pack_listed(good_pack):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a healthy pack produces no warning
        entries = {k.name: k for k in rawdemosaic.kernels()}
    e = entries["demo_pack_bilinear"]
    assert e.source == "plugin:demo"
    assert e.cfa is CFA.BAYER and e.cost == 6.0
    assert e.program_path.is_file() and good_pack in e.program_path.parents
    assert {"bayer_bilinear", "bayer_malvar", "xtrans_linear"} <= set(entries)  # built-ins still there
    assert "demo_pack_bilinear" in {k.name for k in kernels("bayer")}
    assert "demo_pack_bilinear" not in {k.name for k in kernels("xtrans")}
    assert "demo_pack_bilinear" not in {k.name for k in kernels(plugins=False)}


def test_pack_selected_by_name_and_budget(good_pack):
    assert choose("RGGB", kernel="demo_pack_bilinear").source == "plugin:demo"
    # quality 32.0 between bilinear (31.2) and Malvar (35.1): best within 8 ops/pixel (below bayer_lsq40g's
    # 10), not within 100
    assert choose("GRBG", budget=8).name == "demo_pack_bilinear"
    assert choose("RGGB", budget=50).name == "bayer_malvar"
    assert select(kernels(), CFA.BAYER, budget=6).name == "demo_pack_bilinear"
    with pytest.raises(rawdemosaic.KernelNotFoundError, match="demo_pack_bilinear"):
        choose("xtrans", kernel="demo_pack_bilinear")


def test_pack_runs_through_halide(good_pack, sample_dngs):
    rng = np.random.default_rng(3)
    rgb = rng.random((64, 80, 3), dtype=np.float32)
    for cfa in ("RGGB", "BGGR"):
        m = mosaic(rgb, cfa)
        out = demosaic(m, cfa, kernel="demo_pack_bilinear")
        ref = demosaic(m, cfa, kernel="bayer_bilinear")  # the pack holds a copy of this program
        assert out.shape == (64, 80, 3) and out.dtype == np.float32
        np.testing.assert_allclose(out, ref, atol=1e-6)
        assert np.abs(out - rgb)[4:-4, 4:-4].mean() < 0.5
    img = develop(sample_dngs["bayer"], kernel="demo_pack_bilinear")
    np.testing.assert_allclose(img, develop(sample_dngs["bayer"], kernel="bayer_bilinear"), atol=1e-6)


def test_broken_pack_warned_and_skipped(both_packs):
    with pytest.warns(UserWarning) as rec:
        entries = {k.name: k for k in kernels()}
    assert "demo_pack_bilinear" in entries  # the healthy pack still loads
    messages = [str(w.message) for w in rec]
    for ep in ("explodes", "no_module", "bad_registry"):
        assert any(f"kernel pack {ep!r} skipped" in m for m in messages), (ep, messages)
    assert any("broken on purpose" in m for m in messages)
    assert not any(k.source.startswith("plugin:") and k.name != "demo_pack_bilinear" for k in entries.values())
    # selection and demosaicking still work
    with pytest.warns(UserWarning):
        assert choose("RGGB", kernel="demo_pack_bilinear").name == "demo_pack_bilinear"


def test_missing_directory_warned(monkeypatch):
    patch_entry_points(monkeypatch, ENTRY_POINT_GROUP, [("gone", "plugins_conftest_helpers:DATA")])
    monkeypatch.setattr("plugins_conftest_helpers.DATA", Path("/nonexistent/rawdemosaic/registry"))
    with pytest.warns(UserWarning, match="gone"):
        kernels()


def test_missing_directory_not_fatal(monkeypatch):
    monkeypatch.setattr("plugins_conftest_helpers.DATA", Path("/nonexistent/rawdemosaic/registry"))
    patch_entry_points(monkeypatch, ENTRY_POINT_GROUP, [("gone", "plugins_conftest_helpers:DATA")])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        names = {k.name for k in kernels()}
    assert {"bayer_bilinear", "bayer_malvar", "xtrans_linear"} <= names


def test_monkeypatched_entry_points(monkeypatch, installed):
    """Entry points resolving to a path (not a callable), raising, or clashing with built-in names."""
    registry = installed["good"] / "rdpack_demo" / "registry"
    monkeypatch.setattr("plugins_conftest_helpers.DATA", registry)
    patch_entry_points(
        monkeypatch,
        ENTRY_POINT_GROUP,
        [
            ("as_path", "plugins_conftest_helpers:DATA"),
            ("boom", "plugins_conftest_helpers:explode"),
            ("clash", "plugins_conftest_helpers:builtin_registry_dir"),
            ("nomod", "no_such_module_xyz:thing"),
        ],
    )
    with pytest.warns(UserWarning) as rec:
        entries = {k.name: k for k in kernels()}
    msgs = " | ".join(str(w.message) for w in rec)
    assert entries["demo_pack_bilinear"].source == "plugin:as_path"
    assert "'boom' skipped" in msgs and "entry point exploded" in msgs
    assert "'nomod' skipped" in msgs
    assert "already taken" in msgs  # the clashing pack's kernels lose to the built-ins
    assert entries["bayer_malvar"].source == "builtin"
    assert all(k.source == "builtin" for n, k in entries.items() if n != "demo_pack_bilinear")
