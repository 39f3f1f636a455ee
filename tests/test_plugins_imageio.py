"""The imageio v3 plugin ``rawdemosaic``: by name, by extension, options, properties, metadata, errors."""

from __future__ import annotations

import warnings

import imageio.v3 as iio
import numpy as np
import pytest
from imageio import config as iio_config

import rawdemosaic
import rawdemosaic.plugins.imageio as rio
from rawdemosaic.develop import DevelopWarning, develop
from rawdemosaic.errors import RawReadError
from rawdemosaic.plugins import RAW_EXTENSIONS
from plugins_conftest_helpers import (  # noqa: F401 - fixtures
    kernel_cache,
    quantize8,
    raw_visible_shape,
    rotated_dng,
    sample_dngs,
    shared_raw_files,
    truncated_copy,
)

pytestmark = pytest.mark.usefixtures("kernel_cache")


def test_registered():
    assert "rawdemosaic" in iio_config.known_plugins
    assert next(iter(iio_config.known_plugins)) == "rawdemosaic"
    for ext in (".dng", ".cr2", ".nef", ".raf", ".arw", ".orf", ".rw2", ".kdc", ".crw"):
        assert ext in RAW_EXTENSIONS
        assert iio_config.known_extensions[ext][0].priority[0] == "rawdemosaic"
    rio.register()  # idempotent
    assert list(iio_config.known_plugins).count("rawdemosaic") == 1
    assert iio_config.known_extensions[".dng"][0].priority.count("rawdemosaic") == 1


@pytest.mark.parametrize("kind", ["bayer", "xtrans"])
def test_imread_by_extension_and_name(sample_dngs, kind):
    path = sample_dngs[kind]
    h, w = raw_visible_shape(path)
    a = iio.imread(path)
    b = iio.imread(path, plugin="rawdemosaic")
    assert a.shape == (h, w, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, quantize8(develop(path)))
    with iio.imopen(path, "r") as f:
        assert isinstance(f, rio.RawDemosaicPlugin)


def test_bits_and_develop_options(sample_dngs):
    path = sample_dngs["bayer"]
    ref = develop(path, kernel="bayer_bilinear", wb="daylight", colorspace="prophoto", linear=True)
    kw = dict(kernel="bayer_bilinear", wb="daylight", colorspace="prophoto", linear=True)
    f32 = iio.imread(path, bits=32, **kw)
    u16 = iio.imread(path, bits=16, **kw)
    u8 = iio.imread(path, bits=8, **kw)
    assert f32.dtype == np.float32 and u16.dtype == np.uint16 and u8.dtype == np.uint8
    np.testing.assert_array_equal(f32, ref)
    np.testing.assert_array_equal(u16, np.rint(ref * 65535).astype(np.uint16))
    np.testing.assert_array_equal(u8, quantize8(ref))
    assert not np.array_equal(u8, iio.imread(path))
    # budget picks the kernel
    assert iio.immeta(path, budget=8)["kernel"] == "bayer_bilinear"
    assert iio.immeta(path, budget=10)["kernel"] == "bayer_lsq40g"
    assert iio.immeta(path, budget=50)["kernel"] == "bayer_malvar"
    with pytest.raises(rawdemosaic.BudgetError):
        iio.imread(path, budget=1)
    with pytest.raises(ValueError, match="bits"):
        iio.imread(path, bits=12)
    with pytest.raises(TypeError, match="unknown keyword"):
        iio.imread(path, gamma=2.2)


def test_imopen_defaults(sample_dngs):
    path = sample_dngs["bayer"]
    with iio.imopen(path, "r", plugin="rawdemosaic", bits=16, kernel="bayer_bilinear") as f:
        img = f.read()
        assert img.dtype == np.uint16
        assert f.properties().dtype == np.uint16
        assert f.metadata()["kernel"] == "bayer_bilinear"
        assert f.read(bits=8).dtype == np.uint8  # per-call keywords override
        frames = list(f.iter())
    assert len(frames) == 1
    np.testing.assert_array_equal(frames[0], img)


def test_index_and_properties(sample_dngs):
    path = sample_dngs["xtrans"]
    h, w = raw_visible_shape(path)
    props = iio.improps(path)
    assert props.shape == (h, w, 3) and props.dtype == np.uint8 and not props.is_batch
    assert iio.improps(path, bits=32).dtype == np.float32
    batch = iio.improps(path, index=...)
    assert batch.shape == (1, h, w, 3) and batch.is_batch and batch.n_images == 1
    assert iio.imread(path, index=...).shape == (1, h, w, 3)
    assert iio.imread(path, index=0).shape == (h, w, 3)
    with pytest.raises(IndexError):
        iio.imread(path, index=1)
    assert [im.shape for im in iio.imiter(path)] == [(h, w, 3)]


def test_orientation(rotated_dng):
    h, w = raw_visible_shape(rotated_dng)
    assert iio.improps(rotated_dng).shape == (w, h, 3)
    assert iio.imread(rotated_dng).shape == (w, h, 3)
    assert iio.imread(rotated_dng, orient=False).shape == (h, w, 3)
    assert "orientation" not in iio.immeta(rotated_dng)
    assert iio.immeta(rotated_dng, exclude_applied=False)["orientation"] == 6
    assert iio.immeta(rotated_dng, orient=False)["orientation"] == 6


def test_metadata(sample_dngs):
    path = sample_dngs["bayer"]
    md = iio.immeta(path)
    frame = rawdemosaic.read(path)
    assert md["make"] == frame.make and md["model"] == frame.model
    assert md["iso"] == frame.iso and md["exposure_time"] == frame.exposure_time
    assert md["cfa"] == "RGGB" and md["cfa_family"] == "bayer"
    assert md["raw_shape"] == frame.shape
    assert md["raw_format"] == "DNG"
    assert md["kernel_source"] == "builtin"
    assert np.allclose(md["xyz_to_cam"], frame.xyz_to_cam)


def test_bytes_input(sample_dngs):
    data = sample_dngs["bayer"].read_bytes()
    np.testing.assert_array_equal(iio.imread(data), iio.imread(sample_dngs["bayer"]))
    np.testing.assert_array_equal(iio.imread(data, plugin="rawdemosaic"), iio.imread(sample_dngs["bayer"]))


@pytest.mark.parametrize("path", shared_raw_files(), ids=lambda p: p.name)
def test_shared_raws(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DevelopWarning)
        img = iio.imread(path)
        props = iio.improps(path)
        md = iio.immeta(path)
    assert img.shape == props.shape and img.dtype == np.uint8
    h, w = raw_visible_shape(path)
    assert sorted(img.shape[:2]) == sorted((h, w))
    assert md["model"]  or md["raw_format"] == "DNG"
    assert img.std() > 1


def test_other_formats_untouched(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (12, 17, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "a.png", rgb)
    iio.imwrite(tmp_path / "a.tif", rgb)
    np.testing.assert_array_equal(iio.imread(tmp_path / "a.png"), rgb)
    np.testing.assert_array_equal(iio.imread(tmp_path / "a.tif"), rgb)
    # unknown extension: imageio's try-every-plugin fallback meets our plugin first, which steps aside
    (tmp_path / "a.weird").write_bytes((tmp_path / "a.png").read_bytes())
    np.testing.assert_array_equal(iio.imread(tmp_path / "a.weird"), rgb)
    # a raw extension on a PNG: we refuse it and the next plugin reads it
    (tmp_path / "b.raw").write_bytes((tmp_path / "a.png").read_bytes())
    with iio.imopen(tmp_path / "b.raw", "r") as f:
        assert not isinstance(f, rio.RawDemosaicPlugin)
    # asking for our plugin on a non-raw is an error
    with pytest.raises(OSError, match="rawdemosaic"):
        iio.imread(tmp_path / "a.tif", plugin="rawdemosaic")
    # writing is not ours
    with pytest.raises(OSError):
        iio.imwrite(tmp_path / "x.dng", rgb, plugin="rawdemosaic")


def test_dng_content_with_unknown_extension(sample_dngs, tmp_path):
    p = tmp_path / "photo.bin"
    p.write_bytes(sample_dngs["bayer"].read_bytes())
    with iio.imopen(p, "r") as f:
        assert isinstance(f, rio.RawDemosaicPlugin)
    assert iio.imread(p).shape == iio.imread(sample_dngs["bayer"]).shape


def test_corrupt_raises(sample_dngs, tmp_path):
    bad = truncated_copy(sample_dngs["bayer"], tmp_path / "bad.dng")
    with pytest.raises(RawReadError, match="bad.dng"):
        iio.imread(bad)
    with pytest.raises(RawReadError, match="bad.dng"):
        iio.imread(bad, plugin="rawdemosaic")
    with pytest.raises(RawReadError, match="<bytes>"):
        iio.imread(bad.read_bytes())
    with pytest.raises(RawReadError):
        iio.improps(bad)
