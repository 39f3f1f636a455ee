"""The napari (npe2) reader contribution, without napari itself."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest

from rawdemosaic.errors import RawReadError
from rawdemosaic.plugins import RAW_EXTENSIONS
from rawdemosaic.plugins.napari import get_reader

ROOT = Path(__file__).resolve().parents[1]


def test_manifest_is_valid_and_declared():
    npe2 = pytest.importorskip("npe2")
    manifest = npe2.PluginManifest.from_file(ROOT / "rawdemosaic" / "plugins" / "napari.yaml")
    assert manifest.name == "rawdemosaic"
    (reader,) = manifest.contributions.readers
    assert "*.dng" in reader.filename_patterns and "*.RAF" in reader.filename_patterns
    (cmd,) = manifest.contributions.commands
    assert cmd.python_name == "rawdemosaic.plugins.napari:get_reader"
    assert any(ep.name == "rawdemosaic" for ep in entry_points(group="napari.manifest"))


def test_manifest_patterns_are_the_reader_extensions():
    """napari offers the reader for exactly the files it takes (get_reader's extension list), in either case."""
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load((ROOT / "rawdemosaic" / "plugins" / "napari.yaml").read_text())
    (reader,) = doc["contributions"]["readers"]
    assert set(reader["filename_patterns"]) == {f"*{c(e)}" for e in RAW_EXTENSIONS for c in (str.lower, str.upper)}


def test_reader_develops_raws_and_declines_others(tmp_path):
    assert get_reader(str(tmp_path / "x.png")) is None
    read = get_reader(str(ROOT / "sample_raws" / "bayer_rggb.dng"))
    (data, kwargs, kind), = read(str(ROOT / "sample_raws" / "bayer_rggb.dng"))
    assert kind == "image" and kwargs["rgb"] and data.shape == (768, 1024, 3) and data.dtype == np.float32
    assert 0 <= data.min() and data.max() <= 1
    bad = tmp_path / "bad.dng"
    bad.write_text("not a raw")
    with pytest.raises(RawReadError, match="bad.dng"):
        get_reader(str(bad))(str(bad))
