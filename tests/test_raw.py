"""rawdemosaic.raw.read: real camera raws, generated DNGs (round trips), and error handling."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import numpy as np
import pytest

import rawdemosaic
from rawdemosaic.cfa import BAYER_NAMES, CFA, CFAPattern, detect
from rawdemosaic.errors import RawReadError, UnsupportedCFAError
from rawdemosaic.raw import FLIP_TO_EXIF, read, read_metadata
from rawdemosaic.testing import ILLUMINANT_A, ILLUMINANT_D65, write_dng

rawpy = pytest.importorskip("rawpy")
tifffile = pytest.importorskip("tifffile")

REPO = Path(__file__).resolve().parents[1]

# A made-up but plausible XYZ -> camera matrix (rows R, G, B).
M_D65 = np.array([[0.6722, -0.0635, -0.0963], [-0.4287, 1.246, 0.2028], [-0.0908, 0.2162, 0.5668]])
M_A = np.array([[0.7100, -0.1400, -0.0800], [-0.5000, 1.3000, 0.1900], [-0.1500, 0.3000, 0.4500]])


def _data(h: int, w: int, black: int, white: int, seed: int = 0) -> np.ndarray:
    """Random raw values; LibRaw refuses images under 22 pixels on a side ("not a RAW file")."""
    rng = np.random.default_rng(seed)
    d = rng.integers(black, white + 1, (h, w)).astype(np.uint16)
    d[0, 0], d[-1, -1] = black, white  # both ends of the range present
    return d


def _expected(d: np.ndarray, black, white) -> np.ndarray:
    return (d.astype(np.float64) - black) / (white - np.asarray(black, dtype=np.float64))


# ------------------------------------------------------------------------------------------- real raws

# file -> (Bayer name after mapping G2 -> G, LibRaw raw_pattern, per-channel black, white, raw (W, H))
REAL = {
    "canon_powershot_s40_CRW_0101.CRW": ("RGGB", [[0, 1], [3, 2]], [32] * 4, 1023, (2376, 1728)),
    "canon_powershot_s40_CRW_0113.CRW": ("RGGB", [[0, 1], [3, 2]], [32] * 4, 1023, (2376, 1728)),
    "kodak_dc50_DC0008L.KDC": ("GRBG", [[1, 0], [2, 3]], [0] * 4, 16383, (768, 512)),
    "pidng_640x480_GBRG_test.dng": ("GBRG", [[3, 2], [0, 1]], [0] * 4, 1023, (640, 480)),
}

_MANIFEST_RE = re.compile(
    r"CFA 2x2 Bayer (\[\[.*?\]\]); raw (\d+)x(\d+); black (\[[\d, ]+\]); white (\d+)"
)


def _manifest_raws(shared_data: Path) -> dict:
    out = {}
    manifest = shared_data / "MANIFEST.tsv"
    if not manifest.is_file():
        return out
    for line in manifest.read_text().splitlines()[1:]:
        cols = line.split("\t")
        if len(cols) < 7 or not cols[0].startswith("raw/"):
            continue
        m = _MANIFEST_RE.search(cols[6])
        if m:
            pat, w, h, black, white = m.groups()
            out[cols[0][4:]] = (eval(pat), int(w), int(h), eval(black), int(white))  # noqa: S307 - own file
    return out


def _raw_dir(shared_data: Path) -> Path:
    d = shared_data / "raw"
    if not d.is_dir():
        pytest.skip(f"no raw directory in {shared_data}")
    return d


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_raw(shared_data, name):
    path = _raw_dir(shared_data) / name
    if not path.is_file():
        pytest.skip(f"{path} absent")
    bayer, libraw_pattern, black, white, (rw, rh) = REAL[name]
    frame = read(path)

    # CFA: MANIFEST's LibRaw pattern with the second green (3) mapped to green (1).
    assert frame.cfa.kind is CFA.BAYER
    assert frame.cfa.name == bayer
    mapped = np.array(libraw_pattern)
    mapped[mapped == 3] = 1
    assert frame.cfa == detect(mapped)
    assert frame.extra["raw_pattern"] == libraw_pattern
    manifest = _manifest_raws(shared_data).get(name)
    if manifest is not None:
        assert manifest[0] == libraw_pattern
        assert (manifest[1], manifest[2]) == (rw, rh)
        assert manifest[3] == black and manifest[4] == white

    # Levels and shapes.
    assert frame.white_level == white
    assert frame.black_level == tuple(float(b) for b in black)
    assert frame.extra["raw_size"] == (rh, rw)
    assert frame.mosaic.dtype == np.float32 and frame.mosaic.ndim == 2
    h, w = frame.shape
    assert h <= rh and w <= rw and h > 0.9 * rh and w > 0.9 * rw
    assert frame.mosaic.flags.c_contiguous and frame.mosaic.flags.writeable

    # Exactly LibRaw's visible data, black-subtracted and scaled.
    with rawpy.imread(str(path)) as raw:
        vis = raw.raw_image_visible.astype(np.float64)
    np.testing.assert_allclose(frame.mosaic, (vis - black[0]) / (white - black[0]), rtol=1e-6, atol=1e-7)
    assert frame.mosaic.max() <= 1.0 + 1e-6
    assert frame.mosaic.min() >= -black[0] / (white - black[0]) - 1e-6
    assert frame.orientation == 1
    assert frame.path == str(path)


def test_real_raw_details(shared_data):
    raw_dir = _raw_dir(shared_data)
    canon = raw_dir / "canon_powershot_s40_CRW_0101.CRW"
    if canon.is_file():
        f = read(canon)
        assert (f.make, f.model) == ("Canon", "Canon PowerShot S40")
        assert f.xyz_to_cam is not None and f.xyz_to_cam.shape == (3, 3)
        np.testing.assert_allclose(f.xyz_to_cam[0], [0.8606, -0.2573, -0.0949], atol=1e-4)
        assert f.wb_as_shot is not None and f.wb_as_shot[1] == 1.0
        np.testing.assert_allclose(f.wb_as_shot, (1690 / 1043, 1.0, 1622 / 1043), rtol=1e-6)
        assert f.wb_daylight is not None and f.wb_daylight[0] > 1.5
        assert f.iso == 50 and f.aperture == pytest.approx(2.8, abs=0.01)
        assert f.exposure_time == pytest.approx(0.0099, abs=1e-4)
        assert f.focal_length == pytest.approx(7.09, abs=0.01)
        assert f.timestamp is not None
    kodak = raw_dir / "kodak_dc50_DC0008L.KDC"
    if kodak.is_file():
        f = read(kodak)
        assert f.make == "Eastman Kodak Company" and "DC50" in f.model
        assert f.xyz_to_cam is None and f.wb_daylight is None  # LibRaw knows no colour data for it
    pi = raw_dir / "pidng_640x480_GBRG_test.dng"
    if pi.is_file():
        f = read(pi)
        assert (f.make, f.model) == ("", "")
        assert f.xyz_to_cam is None and f.wb_as_shot is None and f.wb_daylight is None
        # The file's BlackLevel says 0 while the data's black is about 64: kept as the file says.
        assert f.black_level == (0.0,) * 4
        assert 0.05 < float(f.mosaic.min()) < 0.08


def test_every_shared_raw_reads(shared_data):
    raw_dir = _raw_dir(shared_data)
    files = sorted(p for p in raw_dir.iterdir() if p.is_file())
    assert files
    manifest = _manifest_raws(shared_data)
    for p in files:
        frame = read(p)
        assert frame.cfa.kind in (CFA.BAYER, CFA.XTRANS)
        assert np.isfinite(frame.mosaic).all()
        if p.name in manifest:
            pat = np.array(manifest[p.name][0])
            pat[pat == 3] = 1
            assert frame.cfa == detect(pat), p.name
        meta = read_metadata(p)  # the headers alone give the frame's metadata
        assert meta == {k: getattr(frame, k) for k in meta} and set(meta) >= {"make", "model", "timestamp", "iso"}, p.name


# ------------------------------------------------------------------------------------ generated DNGs


@pytest.mark.parametrize("name", BAYER_NAMES)
def test_dng_bayer_phases_round_trip(tmp_path, name):
    black, white = 256, 16383
    d = _data(24, 26, black, white)
    path = write_dng(tmp_path / f"{name}.dng", d, name, black, white)
    frame = read(path)
    assert frame.cfa.kind is CFA.BAYER and frame.cfa.name == name
    assert np.array_equal(frame.cfa.pattern, rawdemosaic.cfa.as_pattern(name).pattern)
    assert frame.shape == d.shape
    np.testing.assert_allclose(frame.mosaic, _expected(d, black, white), rtol=0, atol=1e-6)
    assert frame.mosaic[0, 0] == 0.0 and frame.mosaic[-1, -1] == pytest.approx(1.0, abs=1e-6)
    assert frame.black_level == (256.0,) * 4 and frame.white_level == 16383.0
    assert frame.path == str(path)


# X-Trans is invariant under a (3, 3) shift, so only 18 of the 36 phases are distinct layouts (detect()
# reports the one with dy < 3); compare layouts, and include phases with dy >= 3.
XTRANS_PHASES = [(0, 0), (1, 2), (3, 5), (5, 1), (2, 4), (4, 3)]


@pytest.mark.parametrize("phase", XTRANS_PHASES)
def test_dng_xtrans_phases_round_trip(tmp_path, phase):
    black, white = 64, 4095
    pat = CFAPattern(CFA.XTRANS, *phase)
    d = _data(30, 36, black, white, seed=phase[0] * 6 + phase[1])
    path = write_dng(tmp_path / "x.dng", d, pat, black, white)
    frame = read(path)
    assert frame.cfa.kind is CFA.XTRANS
    assert np.array_equal(frame.cfa.pattern, pat.pattern)
    assert (frame.cfa.dy, frame.cfa.dx) in {phase, ((phase[0] + 3) % 6, (phase[1] + 3) % 6)}
    np.testing.assert_allclose(frame.mosaic, _expected(d, black, white), rtol=0, atol=1e-6)
    assert len(frame.black_level) == 36 and set(frame.black_level) == {64.0}


def test_dng_xtrans_active_area_aligns_to_visible_origin(tmp_path):
    """rawpy's ``raw_pattern`` for X-Trans is taken at the raw origin, not the visible one: the reader
    must align the layout to ``mosaic[0, 0]`` (the DNG CFAPattern is relative to the ActiveArea)."""
    pat = CFAPattern(CFA.XTRANS, 2, 5)
    d = _data(40, 44, 64, 4095, seed=3)
    path = write_dng(tmp_path / "aa.dng", d, pat, 64, 4095, active_area=(1, 3, 40, 44))
    frame = read(path)
    assert frame.cfa == pat
    np.testing.assert_allclose(frame.mosaic, _expected(d[1:, 3:], 64, 4095), rtol=0, atol=1e-6)


def test_dng_bayer_active_area(tmp_path):
    d = _data(24, 30, 256, 16383, seed=4)
    path = write_dng(tmp_path / "aa.dng", d, "GBRG", 256, 16383, active_area=(2, 4, 24, 30))
    frame = read(path)
    assert frame.cfa.name == "GBRG"
    np.testing.assert_allclose(frame.mosaic, _expected(d[2:, 4:], 256, 16383), rtol=0, atol=1e-6)


def test_dng_per_position_black(tmp_path):
    blacks = [250, 260, 270, 280]  # row-major over the 2x2 tile
    d = _data(24, 24, 300, 16383, seed=5)
    frame = read(write_dng(tmp_path / "b.dng", d, "RGGB", blacks, 16383))
    assert frame.black_level == tuple(float(b) for b in blacks)
    tile = np.tile(np.array(blacks, np.float64).reshape(2, 2), (12, 12))
    np.testing.assert_allclose(frame.mosaic, (d - tile) / (16383 - tile), rtol=0, atol=1e-6)


def test_dng_white_balance_and_matrix(tmp_path):
    d = _data(24, 24, 256, 16383)
    path = write_dng(tmp_path / "c.dng", d, "RGGB", 256, 16383, xyz_to_cam=M_D65, as_shot_neutral=(0.5, 1.0, 0.8))
    frame = read(path)
    assert frame.wb_as_shot == pytest.approx((2.0, 1.0, 1.25), rel=1e-6)
    np.testing.assert_allclose(frame.xyz_to_cam, M_D65, atol=1e-4)
    assert frame.extra["matrix_source"] == "ColorMatrix1 (D65)"
    # LibRaw's daylight balance follows from the matrix: 1 / (M @ XYZ_D65), normalised to green.
    assert frame.wb_daylight is not None and frame.wb_daylight[1] == 1.0
    neutral = M_D65 @ np.array([0.95047, 1.0, 1.08883])
    np.testing.assert_allclose(frame.wb_daylight, (neutral[1] / neutral[0], 1.0, neutral[1] / neutral[2]), rtol=2e-3)


def test_dng_no_colour_data(tmp_path):
    frame = read(write_dng(tmp_path / "n.dng", _data(24, 24, 0, 4095), "BGGR", 0, 4095))
    assert frame.xyz_to_cam is None and frame.wb_as_shot is None and frame.wb_daylight is None


@pytest.mark.parametrize(
    "ill1, ill2, expect",
    [(ILLUMINANT_A, ILLUMINANT_D65, "2"), (ILLUMINANT_D65, ILLUMINANT_A, "1"), (ILLUMINANT_A, 23, "2")],
)
def test_dng_matrix_choice(tmp_path, ill1, ill2, expect):
    m1, m2 = (M_A, M_D65) if expect == "2" else (M_D65, M_A)
    if ill2 == 23:  # neither is D65: the second one is used
        m1, m2 = M_A, M_D65
    path = write_dng(
        tmp_path / "m.dng", _data(24, 24, 0, 4095), "RGGB", 0, 4095,
        xyz_to_cam=m1, illuminant=ill1, xyz_to_cam2=m2, illuminant2=ill2,
    )  # fmt: skip
    frame = read(path)
    np.testing.assert_allclose(frame.xyz_to_cam, M_D65, atol=1e-4)
    assert frame.extra["matrix_source"].startswith(f"ColorMatrix{expect}")


@pytest.mark.parametrize("orientation", range(1, 9))
def test_dng_orientation(tmp_path, orientation):
    frame = read(write_dng(tmp_path / "o.dng", _data(24, 24, 0, 4095), "RGGB", 0, 4095, orientation=orientation))
    assert frame.orientation == orientation
    assert FLIP_TO_EXIF[frame.extra["libraw_flip"]] == orientation


def test_flip_mapping_documented():
    assert FLIP_TO_EXIF[0] == 1 and FLIP_TO_EXIF[3] == 3 and FLIP_TO_EXIF[5] == 8 and FLIP_TO_EXIF[6] == 6
    assert sorted(FLIP_TO_EXIF.values()) == list(range(1, 9))


def test_dng_metadata(tmp_path):
    path = write_dng(
        tmp_path / "meta.dng", _data(24, 24, 0, 4095), "RGGB", 0, 4095, make="Acme", model="Sensor 9000",
        iso=400, exposure_time=1 / 250, aperture=4.0, focal_length=50.0, timestamp="2024:05:06 07:08:09",
    )  # fmt: skip
    f = read(path)
    assert (f.make, f.model) == ("Acme", "Sensor 9000")
    assert f.iso == 400
    assert f.exposure_time == pytest.approx(1 / 250, rel=1e-5)
    assert f.aperture == pytest.approx(4.0, rel=1e-5)
    assert f.focal_length == pytest.approx(50.0, rel=1e-5)
    assert f.timestamp == pytest.approx(dt.datetime(2024, 5, 6, 7, 8, 9).timestamp())


@pytest.mark.parametrize(
    "make, model, camera",
    [("Canon", "Canon PowerShot S40", "Canon PowerShot S40"), ("Eastman Kodak Company", "Kodak DC50", "Kodak DC50"),
     ("Acme", "Sensor 9000", "Acme Sensor 9000"), ("", "Sensor 9000", "Sensor 9000"), ("Acme", "", "Acme"), ("", "", "")],
)  # fmt: skip
def test_camera_name_does_not_repeat_the_maker(make, model, camera):
    from rawdemosaic.frame import RawFrame, camera_name

    assert camera_name(make, model) == camera
    assert RawFrame(None, np.zeros((4, 4), np.float32), CFAPattern(CFA.BAYER, 0, 0), make=make, model=model).camera == camera


def test_read_metadata_errors(tmp_path):
    with pytest.raises(RawReadError, match="no such file"):
        read_metadata(tmp_path / "nope.dng")
    (tmp_path / "t.dng").write_text("hello")
    with pytest.raises(RawReadError, match="t.dng"):
        read_metadata(tmp_path / "t.dng")


def test_dng_missing_metadata_is_none(tmp_path):
    f = read(write_dng(tmp_path / "bare.dng", _data(24, 24, 0, 4095), "RGGB", 0, 4095))
    assert f.iso is None and f.exposure_time is None and f.aperture is None
    assert f.focal_length is None and f.timestamp is None


def test_read_is_exported():
    assert rawdemosaic.read is read


@pytest.mark.parametrize("name, kind", [("bayer_rggb.dng", "RGGB"), ("xtrans.dng", "xtrans")])
def test_sample_raws(name, kind):
    path = REPO / "sample_raws" / name
    if not path.is_file():
        pytest.skip(f"{path} not generated")
    assert path.stat().st_size < 3_000_000
    f = read(path)
    assert f.cfa == rawdemosaic.cfa.as_pattern(kind)
    assert f.wb_as_shot == pytest.approx((2.0, 1.0, 1.5), rel=1e-4)
    assert f.xyz_to_cam is not None
    if kind == "xtrans":
        assert f.shape[1] >= 1200 and f.shape[0] >= 800
    else:
        assert f.shape == (768, 1024)
    assert -0.01 < f.mosaic.min() and f.mosaic.max() <= 1.0 and 0.05 < f.mosaic.mean() < 0.8


# ------------------------------------------------------------------------------------ unsupported CFA


def _assert_one_line(exc_info, path):
    msg = str(exc_info.value)
    assert str(path) in msg
    assert "\n" not in msg


def test_quad_bayer_rejected(tmp_path):
    quad = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 2, 2], [1, 1, 2, 2]])
    path = write_dng(tmp_path / "quad.dng", _data(24, 24, 0, 4095), quad, 0, 4095)
    with pytest.raises(UnsupportedCFAError) as ei:
        read(path)
    _assert_one_line(ei, path)


def test_other_period_rejected(tmp_path):
    pat = np.array([[0, 1, 0, 1], [1, 2, 1, 2], [1, 0, 1, 0], [2, 1, 2, 1]])
    path = write_dng(tmp_path / "p4.dng", _data(24, 24, 0, 4095), pat, 0, 4095)
    with pytest.raises(UnsupportedCFAError) as ei:
        read(path)
    _assert_one_line(ei, path)


def test_cmy_rejected(tmp_path):
    path = write_dng(tmp_path / "cmy.dng", _data(24, 24, 0, 4095), np.array([[3, 4], [1, 5]]), 0, 4095)
    with pytest.raises(UnsupportedCFAError) as ei:
        read(path)
    _assert_one_line(ei, path)


_DNG_TAGS = [(50706, "B", 4, (1, 4, 0, 0)), (50708, "s", 0, "Test"), (271, "s", 0, "Acme"), (272, "s", 0, "M")]


def test_monochrome_rejected(tmp_path):
    path = tmp_path / "mono.dng"
    tifffile.imwrite(path, _data(24, 24, 0, 4095), photometric="minisblack", extratags=_DNG_TAGS, subfiletype=0)
    with tifffile.TiffFile(path, mode="r+b") as tif:  # LinearRaw with one sample: a monochrome DNG
        tif.pages[0].tags[262].overwrite(34892)
    with pytest.raises(UnsupportedCFAError) as ei:
        read(path)
    _assert_one_line(ei, path)
    assert "monochrome" in str(ei.value)


def test_linear_dng_rejected(tmp_path):
    path = tmp_path / "linear.dng"
    rgb = np.random.default_rng(0).integers(0, 4096, (24, 24, 3)).astype(np.uint16)
    tifffile.imwrite(path, rgb, photometric=34892, extratags=_DNG_TAGS, subfiletype=0)
    with pytest.raises(UnsupportedCFAError) as ei:
        read(path)
    _assert_one_line(ei, path)


# ------------------------------------------------------------------------------------------ read errors


def _expect_read_error(path):
    with pytest.raises(RawReadError) as ei:
        read(path)
    _assert_one_line(ei, path)
    return str(ei.value)


def test_missing_file(tmp_path):
    assert "no such file" in _expect_read_error(tmp_path / "nope.dng")


def test_directory(tmp_path):
    _expect_read_error(tmp_path)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.dng"
    p.write_bytes(b"")
    assert "empty" in _expect_read_error(p)


def test_text_file(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("not a raw file\n" * 50)
    _expect_read_error(p)


def test_jpeg(tmp_path):
    from PIL import Image

    p = tmp_path / "photo.jpg"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(p)
    _expect_read_error(p)


def test_plain_tiff(tmp_path):
    p = tmp_path / "plain.tif"
    tifffile.imwrite(p, np.zeros((32, 32), np.uint16))
    assert "plain TIFF" in _expect_read_error(p)


@pytest.mark.parametrize("keep", [0.02, 0.5, 0.99])
def test_truncated_dng(tmp_path, keep):
    full = write_dng(tmp_path / "full.dng", _data(64, 64, 0, 4095), "RGGB", 0, 4095)
    data = full.read_bytes()
    p = tmp_path / "truncated.dng"
    p.write_bytes(data[: int(len(data) * keep)])
    _expect_read_error(p)


def test_errors_are_package_errors():
    assert issubclass(RawReadError, rawdemosaic.RawDemosaicError)
    assert issubclass(UnsupportedCFAError, rawdemosaic.RawDemosaicError)
