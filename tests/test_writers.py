"""write_image: formats, bit depths, metadata, atomicity and path safety."""

from __future__ import annotations

import datetime as dt
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from rawdemosaic import writers
from rawdemosaic.color import icc_profile
from rawdemosaic.errors import OutputError, RawDemosaicError
from rawdemosaic.writers import check_output_path, exif_from_frame, quantize, write_image

EXIF = dict(
    make="Canon",
    model="Canon PowerShot S40",
    iso=200,
    exposure_time=1 / 250,
    aperture=2.8,
    focal_length=7.1,
    datetime=dt.datetime(2003, 5, 17, 14, 3, 9),
)


@pytest.fixture
def image():
    rng = np.random.default_rng(7)
    img = rng.random((29, 43, 3)).astype(np.float32)
    img[0, 0] = 0.0
    img[0, 1] = 1.0
    img[0, 2] = [-0.5, 1.5, np.nan]  # clipped / NaN -> 0
    return img


def _expected(img, bits):
    return quantize(img, bits).astype(np.float64)


def _read_png(path: Path) -> tuple[np.ndarray, dict]:
    """An independent minimal PNG decoder (all five filters) returning pixels and chunks."""
    b = path.read_bytes()
    assert b[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks, idat = 8, {}, b""
    while pos < len(b):
        n = struct.unpack(">I", b[pos : pos + 4])[0]
        tag, body = b[pos + 4 : pos + 8], b[pos + 8 : pos + 8 + n]
        crc = struct.unpack(">I", b[pos + 8 + n : pos + 12 + n])[0]
        assert crc == zlib.crc32(tag + body) & 0xFFFFFFFF
        if tag == b"IDAT":
            idat += body
        else:
            chunks[tag.decode()] = body
        pos += 12 + n
    w, h, depth, ctype = struct.unpack(">IIBB", chunks["IHDR"][:10])
    ch = {0: 1, 2: 3, 6: 4}[ctype]
    bpp = ch * depth // 8
    stride = w * bpp
    raw = zlib.decompress(idat)
    out = np.zeros((h, stride), np.int32)
    prev = np.zeros(stride, np.int32)
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = np.frombuffer(raw, np.uint8, stride, y * (stride + 1) + 1).astype(np.int32)
        cur = np.zeros(stride, np.int32)
        for x in range(stride):
            a = cur[x - bpp] if x >= bpp else 0
            c = prev[x - bpp] if x >= bpp else 0
            up = prev[x]
            if f == 0:
                pred = 0
            elif f == 1:
                pred = a
            elif f == 2:
                pred = up
            elif f == 3:
                pred = (a + up) // 2
            else:
                p = a + up - c
                pa, pb, pc = abs(p - a), abs(p - up), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (up if pb <= pc else c)
            cur[x] = (line[x] + pred) & 0xFF
        out[y] = cur
        prev = cur
    u8 = out.astype(np.uint8)
    pix = u8.view(">u2").astype(np.uint16) if depth == 16 else u8
    return pix.reshape(h, w, ch), chunks


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("suffix", [".tif", ".tiff"])
def test_tiff_round_trip(tmp_path, image, bits, suffix):
    tifffile = pytest.importorskip("tifffile")
    icc = icc_profile("adobe")
    p = write_image(tmp_path / f"out{suffix}", image, bits=bits, icc=icc, exif=EXIF)
    with tifffile.TiffFile(p) as t:
        data = t.asarray()
        tags = t.pages[0].tags
        assert data.dtype == (np.uint8 if bits == 8 else np.uint16)
        np.testing.assert_array_equal(data, _expected(image, bits))
        assert bytes(tags["InterColorProfile"].value) == icc
        assert tags["Make"].value == "Canon"
        assert tags["Model"].value == "Canon PowerShot S40"
        assert tags["DateTime"].value == "2003:05:17 14:03:09"
        assert tags["Orientation"].value == 1
    top = 2**bits - 1
    assert np.abs(data / top - np.nan_to_num(np.clip(image, 0, 1))).max() <= 0.5 / top + 1e-7


@pytest.mark.parametrize("bits", [8, 16])
def test_png_round_trip(tmp_path, image, bits):
    icc = icc_profile("srgb")
    p = write_image(tmp_path / "out.png", image, bits=bits, icc=icc, exif=EXIF)
    pix, chunks = _read_png(p)
    np.testing.assert_array_equal(pix, _expected(image, bits))
    name, rest = chunks["iCCP"].split(b"\0", 1)
    assert rest[0] == 0 and zlib.decompress(rest[1:]) == icc
    from PIL import Image

    with Image.open(p) as im:  # Pillow agrees on size, profile and EXIF
        assert im.size == (43, 29)
        assert im.info["icc_profile"] == icc
        ex = im.getexif()
        assert ex[0x010F] == "Canon" and ex[0x0112] == 1
        if bits == 8:
            np.testing.assert_array_equal(np.asarray(im), _expected(image, 8))
    cv2 = pytest.importorskip("cv2")
    back = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)[..., ::-1]
    np.testing.assert_array_equal(back, _expected(image, bits))


def test_jpeg_round_trip(tmp_path, image):
    from PIL import Image

    smooth = np.stack(np.meshgrid(np.linspace(0, 1, 64), np.linspace(0, 1, 48)), -1)
    smooth = np.concatenate([smooth, smooth[..., :1] * 0.5], axis=2)
    icc = icc_profile("prophoto")
    p = write_image(tmp_path / "out.jpg", smooth, quality=95, icc=icc, exif=EXIF)
    with Image.open(p) as im:
        assert im.format == "JPEG" and im.size == (64, 48)
        assert im.info["icc_profile"] == icc
        back = np.asarray(im.convert("RGB")).astype(float) / 255
        ex = im.getexif()
        assert ex[0x010F] == "Canon" and ex[0x0110] == "Canon PowerShot S40" and ex[0x0112] == 1
        assert ex[0x0132] == "2003:05:17 14:03:09"
        sub = ex.get_ifd(0x8769)
        assert sub[0x8827] == 200
        assert float(sub[0x829A]) == pytest.approx(1 / 250)
        assert float(sub[0x829D]) == pytest.approx(2.8)
        assert float(sub[0x920A]) == pytest.approx(7.1)
    assert np.abs(back - smooth).mean() < 0.01
    # quality matters
    q10 = write_image(tmp_path / "q10.jpeg", image, quality=10)
    q95 = write_image(tmp_path / "q95.jpeg", image, quality=95)
    assert q10.stat().st_size < q95.stat().st_size


def test_jpeg_16_bit_is_a_clear_error(tmp_path, image):
    with pytest.raises(OutputError, match="JPEG.*8 bits"):
        write_image(tmp_path / "x.jpg", image, bits=16)
    assert not list(tmp_path.iterdir())


def test_greyscale_and_format_override(tmp_path):
    grey = np.linspace(0, 1, 12 * 8).reshape(12, 8)
    p = write_image(tmp_path / "g.data", grey, format="png", bits=16)
    pix, _ = _read_png(p)
    np.testing.assert_array_equal(pix[..., 0], quantize(grey, 16))


def test_quantize_rounds_to_nearest():
    x = np.array([0.0, 0.5 / 255 - 1e-6, 0.5 / 255 + 1e-6, 1.0, 2.0, -1.0, np.nan])
    np.testing.assert_array_equal(quantize(x, 8), [0, 0, 1, 255, 255, 0, 0])
    assert quantize(np.array([1 / 3]), 16)[0] == round(65535 / 3)


def test_integer_codes_are_written_as_they_are():
    u16 = np.array([0, 1, 257, 32896, 65535], np.uint16)
    assert quantize(u16, 16) is u16
    np.testing.assert_array_equal(quantize(u16, 8), [0, 0, 1, 128, 255])
    np.testing.assert_array_equal(quantize(np.array([0, 1, 255], np.uint8), 16), [0, 257, 65535])
    with pytest.raises(ValueError, match="uint8 or uint16"):
        quantize(np.array([1, 2], np.int32), 8)


def test_uint16_image_round_trips(tmp_path):
    img = np.random.default_rng(2).integers(0, 65536, (9, 7, 3)).astype(np.uint16)
    pix, _ = _read_png(write_image(tmp_path / "c.png", img, bits=16))
    np.testing.assert_array_equal(pix, img)
    with pytest.raises(ValueError, match="uint8 or uint16"):
        write_image(tmp_path / "d.png", img.astype(np.int64), bits=16)
    assert not (tmp_path / "d.png").exists()


def test_exif_from_frame():
    from rawdemosaic.cfa import as_pattern
    from rawdemosaic.frame import RawFrame

    f = RawFrame(None, np.zeros((4, 4), np.float32), as_pattern("RGGB"), make="Canon", model="S40", iso=100.0, timestamp=1.0e9)
    e = exif_from_frame(f)
    assert e == {"make": "Canon", "model": "S40", "iso": 100.0, "datetime": 1.0e9}
    assert exif_from_frame(f, upright=False) == e  # orientation 1: nothing to record
    f6 = RawFrame(None, np.zeros((4, 4), np.float32), as_pattern("RGGB"), orientation=6)
    assert exif_from_frame(f6) == {} and exif_from_frame(f6, upright=False) == {"orientation": 6}


@pytest.mark.parametrize("suffix", [".tif", ".png", ".jpg"])
def test_orientation_is_written(tmp_path, image, suffix):
    """Pixels left as stored keep the raw's orientation code, so viewers still turn them; upright ones say 1."""
    from PIL import Image

    for code in (None, 6):
        path = tmp_path / f"o{code}{suffix}"
        write_image(path, image, bits=8, exif={} if code is None else {"orientation": code})
        with Image.open(path) as im:
            tag = im.getexif().get(0x0112) if suffix != ".tif" else im.tag_v2.get(274)
        assert tag == code if code else tag in (None, 1)  # without metadata a file may carry no EXIF block
    with pytest.raises(ValueError, match="orientation"):
        write_image(tmp_path / "bad.png", image, exif={"orientation": 9})


# ----------------------------------------------------------------------------- argument errors


def test_bad_arguments(tmp_path, image):
    with pytest.raises(OutputError, match="suffix"):
        write_image(tmp_path / "x.bmp", image)
    with pytest.raises(OutputError, match="format"):
        write_image(tmp_path / "x.png", image, format="gif")
    with pytest.raises(ValueError, match="bits"):
        write_image(tmp_path / "x.png", image, bits=12)
    with pytest.raises(ValueError, match="quality"):
        write_image(tmp_path / "x.jpg", image, quality=0)
    with pytest.raises(ValueError, match="shape"):
        write_image(tmp_path / "x.png", image[..., :2])
    with pytest.raises(ValueError, match="exif"):
        write_image(tmp_path / "x.png", image, exif={"lens": "x"})
    with pytest.raises(OutputError, match="does not exist"):
        write_image(tmp_path / "nope" / "x.png", image)
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------- atomicity


def test_existing_file_untouched_without_overwrite(tmp_path, image):
    p = tmp_path / "out.png"
    p.write_bytes(b"precious")
    with pytest.raises(OutputError, match="exists") as ei:
        write_image(p, image)
    assert str(p) in str(ei.value) and "\n" not in str(ei.value)
    assert isinstance(ei.value, RawDemosaicError)
    assert p.read_bytes() == b"precious"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["out.png"]
    write_image(p, image, overwrite=True)
    assert p.read_bytes()[:4] == b"\x89PNG"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["out.png"]


@pytest.mark.parametrize("fmt", ["tif", "png", "jpg"])
def test_failing_write_leaves_nothing(tmp_path, image, monkeypatch, fmt):
    def boom(*a, **k):
        raise RuntimeError("disk on fire\nsecond line")

    name = {"tif": "_write_tiff", "png": "_write_png", "jpg": "_write_jpeg"}[fmt]
    monkeypatch.setattr(writers, name, boom)
    p = tmp_path / f"out.{fmt}"
    with pytest.raises(OutputError) as ei:
        write_image(p, image)
    msg = str(ei.value)
    assert str(p) in msg and "disk on fire" in msg and "\n" not in msg
    assert list(tmp_path.iterdir()) == []


def test_failing_write_keeps_existing_file_with_overwrite(tmp_path, image, monkeypatch):
    p = tmp_path / "out.png"
    p.write_bytes(b"old")

    def half_then_boom(fh, *a, **k):
        fh.write(b"\x89PNG partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writers, "_write_png", half_then_boom)
    with pytest.raises(OutputError, match="No space left"):
        write_image(p, image, overwrite=True)
    assert p.read_bytes() == b"old"
    assert [x.name for x in tmp_path.iterdir()] == ["out.png"]


def test_interrupt_cleans_up_and_propagates(tmp_path, image, monkeypatch):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(writers, "_write_png", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_image(tmp_path / "out.png", image)
    assert list(tmp_path.iterdir()) == []


def test_written_file_permissions_follow_umask(tmp_path, image):
    old = os.umask(0o022)
    try:
        p = write_image(tmp_path / "out.png", image)
    finally:
        os.umask(old)
    assert p.stat().st_mode & 0o777 == 0o644


# ----------------------------------------------------------------------------- output vs input


def test_check_output_path(tmp_path):
    raw = tmp_path / "IMG_1.CR2"
    raw.write_bytes(b"raw")
    check_output_path(tmp_path / "IMG_1.tif", [raw])
    with pytest.raises(OutputError, match="input"):
        check_output_path(raw, [raw])
    with pytest.raises(OutputError):
        check_output_path(tmp_path / "sub" / ".." / "IMG_1.CR2", [str(raw)])
    link = tmp_path / "link.tif"
    link.symlink_to(raw)
    with pytest.raises(OutputError):
        check_output_path(link, [tmp_path / "other.dng", raw])
    hard = tmp_path / "hard.tif"
    os.link(raw, hard)
    with pytest.raises(OutputError):
        check_output_path(hard, [raw])
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(OutputError):
            check_output_path("IMG_1.CR2", [raw])
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize("compression, tag", [(None, 1), ("none", 1), ("zlib", 8)])
def test_tiff_compression_option(tmp_path, compression, tag):
    import tifffile

    img = np.linspace(0, 1, 16 * 20 * 3, dtype=np.float32).reshape(16, 20, 3)
    p = write_image(tmp_path / "c.tif", img, bits=16, compression=compression)
    with tifffile.TiffFile(p) as t:
        assert int(t.pages[0].compression) == tag
        np.testing.assert_array_equal(t.asarray(), np.rint(img * 65535).astype(np.uint16))
    with pytest.raises(ValueError, match="compression"):
        write_image(tmp_path / "d.tif", img, compression="lzma")
