"""The Pillow plugin: ``Image.open`` develops raws and leaves every other format alone."""

from __future__ import annotations

import io
import warnings
from dataclasses import fields

import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError

import rawdemosaic
from rawdemosaic.develop import develop
import rawdemosaic.plugins.pillow as rpil
from rawdemosaic.develop import DevelopWarning
from rawdemosaic.errors import RawReadError
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


@pytest.fixture(autouse=True)
def fresh_options():
    saved = {f.name: getattr(rpil.options, f.name) for f in fields(rpil.options)}
    yield rpil.options
    for k, v in saved.items():
        setattr(rpil.options, k, v)


@pytest.mark.parametrize("kind", ["bayer", "xtrans"])
def test_open_sample_dng(sample_dngs, kind):
    path = sample_dngs[kind]
    h, w = raw_visible_shape(path)
    with Image.open(path) as im:
        assert im.format == rpil.FORMAT
        assert im.mode == "RGB"
        assert im.size == (w, h)
        assert im.info["raw_format"] == "DNG"
        a = np.asarray(im)
    assert a.shape == (h, w, 3) and a.dtype == np.uint8
    assert 10 < a.mean() < 245  # a developed picture, not black or white
    np.testing.assert_array_equal(a, quantize8(develop(path)))


def test_metadata_and_icc(sample_dngs):
    with Image.open(sample_dngs["bayer"]) as im:
        frame = rawdemosaic.read(sample_dngs["bayer"])
        assert im.info["make"] == frame.make and im.info["model"] == frame.model
        assert im.info["cfa"] == frame.cfa.name
        icc = im.info.get("icc_profile")
    assert icc  # the profile of the output space travels with the image
    from PIL import ImageCms

    ImageCms.ImageCmsProfile(io.BytesIO(icc))


def test_camera_space_profile_uses_the_files_matrix(sample_dngs):
    """``colorspace="raw"``: the profile describes this camera's colours (its matrix), as the CLI writes it."""
    from rawdemosaic.color import icc_profile

    frame = rawdemosaic.read(sample_dngs["bayer"])
    assert frame.xyz_to_cam is not None
    rpil.options.colorspace = "raw"
    with Image.open(sample_dngs["bayer"]) as im:
        assert im.info["icc_profile"] == icc_profile("raw", xyz_to_cam=frame.xyz_to_cam) != icc_profile("raw")


def test_orientation_applied(rotated_dng):
    h, w = raw_visible_shape(rotated_dng)
    with Image.open(rotated_dng) as im:
        assert im.size == (h, w)  # turned upright: width and height swap
        assert np.asarray(im).shape == (w, h, 3)
    rpil.options.orient = False
    with Image.open(rotated_dng) as im:
        assert im.size == (w, h)
        assert im.info["orientation"] == 6
        assert np.asarray(im).shape == (h, w, 3)


@pytest.mark.parametrize("path", shared_raw_files(), ids=lambda p: p.name)
def test_open_shared_raws(path):
    h, w = raw_visible_shape(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DevelopWarning)  # some old cameras lack a matrix or as-shot WB
        with Image.open(path) as im:
            assert im.format == rpil.FORMAT and im.mode == "RGB"
            expected = (w, h) if rawdemosaic.read(path).orientation in (1, 2, 3, 4) else (h, w)
            assert im.size == expected
            a = np.asarray(im)
    assert a.shape == (im.size[1], im.size[0], 3) and a.dtype == np.uint8
    assert a.std() > 1


def test_shared_raws_present_or_skipped():
    if not shared_raw_files():
        pytest.skip("../shared/data/raw is absent")


def test_stream(sample_dngs):
    data = sample_dngs["bayer"].read_bytes()
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == rpil.FORMAT
        a = np.asarray(im)
    with Image.open(sample_dngs["bayer"]) as im2:
        np.testing.assert_array_equal(a, np.asarray(im2))


def test_options_are_used(sample_dngs):
    path = sample_dngs["bayer"]
    rpil.options.kernel = "bayer_bilinear"
    rpil.options.wb = "daylight"
    rpil.options.colorspace = "adobe"
    with Image.open(path) as im:
        rpil.options.kernel = None  # options are captured at open time
        a = np.asarray(im)
    expected = quantize8(develop(path, kernel="bayer_bilinear", wb="daylight", colorspace="adobe"))
    np.testing.assert_array_equal(a, expected)


def test_bits_16_refused(sample_dngs):
    rpil.options.bits = 16
    with pytest.raises(ValueError, match="16-bit"):
        Image.open(sample_dngs["bayer"])


def test_develop_errors_raise_on_load(sample_dngs):
    rpil.options.kernel = "no_such_kernel"
    with Image.open(sample_dngs["bayer"]) as im:
        with pytest.raises(rawdemosaic.KernelNotFoundError):
            im.load()


def test_ordinary_tiff_and_png_untouched(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    grey16 = rng.integers(0, 65536, (20, 30), dtype=np.uint16)
    Image.fromarray(rgb).save(tmp_path / "a.tif")
    Image.fromarray(rgb).save(tmp_path / "a.png")
    import tifffile

    tifffile.imwrite(tmp_path / "b.tiff", grey16)  # the kind of TIFF LibRaw would happily "demosaic"
    for name, fmt, expected in (("a.tif", "TIFF", rgb), ("a.png", "PNG", rgb), ("b.tiff", "TIFF", grey16)):
        with Image.open(tmp_path / name) as im:
            assert im.format == fmt
            np.testing.assert_array_equal(np.asarray(im), expected)
    # a PNG with a raw extension: our accept() refuses its magic, Pillow's PNG plugin reads it
    (tmp_path / "c.nef").write_bytes((tmp_path / "a.png").read_bytes())
    with Image.open(tmp_path / "c.nef") as im:
        assert im.format == "PNG"
    # saving to a raw extension keeps failing the way it always did
    with pytest.raises(ValueError, match="unknown file extension"):
        Image.fromarray(rgb).save(tmp_path / "out.dng")
    assert not (tmp_path / "out.dng").exists()


def test_first_even_after_tiff_plugin_loaded(sample_dngs):
    Image.init()  # loads TiffImagePlugin (which would read a DNG as a plain TIFF)
    rpil.register()
    assert Image.ID[0] == rpil.FORMAT
    assert Image.ID.count(rpil.FORMAT) == 1
    with Image.open(sample_dngs["bayer"]) as im:
        assert im.format == rpil.FORMAT


def test_corrupt_raw_raises(sample_dngs, tmp_path):
    bad = truncated_copy(sample_dngs["bayer"], tmp_path / "bad.dng")
    with pytest.raises(RawReadError, match="bad.dng"):
        Image.open(bad)
    with pytest.raises(RawReadError, match="<stream>"):
        Image.open(io.BytesIO(bad.read_bytes()))
    # a TIFF with a raw extension that is not a raw: claimed by its name, so it must raise, not decode
    tif = tmp_path / "fake.nef"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tif, format="TIFF")
    with pytest.raises(RawReadError):
        Image.open(tif)


def test_garbage_is_unidentified(tmp_path):
    p = tmp_path / "junk.dng"
    p.write_bytes(b"\x00\x01garbage" * 100)
    with pytest.raises(UnidentifiedImageError):
        Image.open(p)
