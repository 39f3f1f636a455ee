"""Writer plugins (entry-point group ``rawdemosaic.writers``), through a monkeypatched entry point list."""

from __future__ import annotations

import importlib.metadata
import warnings

import numpy as np
import pytest

import plugins_conftest_helpers as helpers
from rawdemosaic.errors import OutputError
from rawdemosaic.plugins.writers import (
    ENTRY_POINT_GROUP,
    WriterPluginWarning,
    available_writers,
    get_writer,
    write_with_plugin,
)
from plugins_conftest_helpers import patch_entry_points

H = "plugins_conftest_helpers"


def test_group_name():
    assert ENTRY_POINT_GROUP == "rawdemosaic.writers"


def test_none_installed_is_empty(monkeypatch):
    patch_entry_points(monkeypatch, ENTRY_POINT_GROUP, [])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert available_writers() == {}
    assert get_writer("x.exr") is None


def test_good_writers(monkeypatch):
    patch_entry_points(monkeypatch, ENTRY_POINT_GROUP, [("npy", f"{H}:npy_writer"), ("kwfmt", f"{H}:kwargs_writer")])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        writers = available_writers()
    # extensions from the `extensions` attribute (normalised), else from the entry point's name
    assert writers == {".npyimg": helpers.npy_writer, ".npz2": helpers.npy_writer, ".kwfmt": helpers.kwargs_writer}
    assert get_writer("photo.NPYIMG") is helpers.npy_writer
    assert get_writer("kwfmt") is helpers.kwargs_writer


def test_write_with_plugin(monkeypatch, tmp_path):
    patch_entry_points(monkeypatch, ENTRY_POINT_GROUP, [("npy", f"{H}:npy_writer")])
    helpers.CALLS.clear()
    img = np.random.default_rng(0).random((5, 6, 3), dtype=np.float32)
    out = write_with_plugin(tmp_path / "a.npyimg", img, bits=16, quality=80, icc=b"icc", exif={"make": "X"})
    assert out == tmp_path / "a.npyimg"
    np.testing.assert_array_equal(np.load(out), img)
    assert helpers.CALLS == [{"path": out, "bits": 16, "quality": 80, "icc": b"icc", "exif": {"make": "X"}}]
    with pytest.raises(OutputError, match="no writer plugin"):
        write_with_plugin(tmp_path / "a.xyz", img)


def test_failing_writers_raise_output_error(monkeypatch, tmp_path):
    patch_entry_points(monkeypatch, ENTRY_POINT_GROUP, [("fail", f"{H}:failing_writer"), ("lazy", f"{H}:lazy_writer")])
    img = np.zeros((4, 4, 3), np.float32)
    with pytest.raises(OutputError, match="disk on fire second line") as ei:
        write_with_plugin(tmp_path / "a.fail", img)
    assert "\n" not in str(ei.value)
    with pytest.raises(OutputError, match="without writing"):
        write_with_plugin(tmp_path / "a.lazy", img)


def test_broken_plugins_warned_and_skipped(monkeypatch):
    patch_entry_points(
        monkeypatch,
        ENTRY_POINT_GROUP,
        [
            ("aaa_boom", f"{H}:explode_on_import_missing"),  # attribute missing
            ("nomod", "no_such_module_for_rawdemosaic:write"),
            ("notcallable", f"{H}:NOT_CALLABLE"),
            ("badsig", f"{H}:bad_signature_writer"),
            ("strict", f"{H}:strict_writer"),
            ("badext", f"{H}:bad_ext_writer"),
            ("npy", f"{H}:npy_writer"),
            ("zzz_dup", f"{H}:npy_writer"),  # same extensions again: second one skipped
        ],
    )
    with pytest.warns(WriterPluginWarning) as rec:
        writers = available_writers()
    assert set(writers) == {".npyimg", ".npz2"}
    msgs = [str(w.message) for w in rec]
    for name in ("aaa_boom", "nomod", "notcallable", "badsig", "strict", "badext"):
        assert any(f"writer plugin {name!r}" in m and "skipped" in m for m in msgs), (name, msgs)
    assert any("missing: quality, icc, exif" in m for m in msgs)
    assert sum("'zzz_dup' skipped" in m for m in msgs) == 2  # once per extension


def test_entry_point_listing_failure_not_fatal(monkeypatch):
    def broken(**params):
        raise RuntimeError("corrupt metadata")

    monkeypatch.setattr(importlib.metadata, "entry_points", broken)
    with pytest.warns(WriterPluginWarning, match="corrupt metadata"):
        assert available_writers() == {}
