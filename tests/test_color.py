"""Colour spaces, transfer curves, ICC profiles and the camera -> output matrix."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest

from rawdemosaic import color as C

RGB_SPACES = ("srgb", "adobe", "prophoto")

# Canon PowerShot S40 (LibRaw's adobe_coeff table), a real, far-from-identity camera matrix.
S40_XYZ_TO_CAM = np.array([[8606, -2573, -949], [-8237, 15489, 2974], [-2649, 3076, 9100]]) / 10000.0


# ----------------------------------------------------------------------------- matrices


def test_white_points():
    for name in RGB_SPACES:
        np.testing.assert_allclose(C.xyz_from_rgb(name) @ np.ones(3), C.D65, atol=1e-12)
    # ProPhoto's own (unadapted) white is D50
    native = C.bradford(C.D65, C.D50) @ C.xyz_from_rgb("prophoto")
    np.testing.assert_allclose(native @ np.ones(3), C.D50, atol=1e-12)
    np.testing.assert_allclose(C.D65, [0.95046, 1.0, 1.08906], atol=2e-5)
    # D50 from its chromaticity (as ROMM defines it) vs the tabulated ASTM E308 XYZ
    np.testing.assert_allclose(C.D50, [0.96422, 1.0, 0.82521], atol=1.5e-4)
    np.testing.assert_allclose(C.xyz_from_rgb("xyz"), np.eye(3))


def test_matrices_match_references():
    # sRGB (IEC 61966-2-1 / Lindbloom)
    srgb = [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
    np.testing.assert_allclose(C.xyz_from_rgb("srgb"), srgb, atol=3e-4)
    # Adobe RGB (1998) spec
    adobe = [[0.57667, 0.18556, 0.18823], [0.29734, 0.62736, 0.07529], [0.02703, 0.07069, 0.99134]]
    np.testing.assert_allclose(C.xyz_from_rgb("adobe"), adobe, atol=3e-4)
    # ProPhoto (D50, Lindbloom)
    pp = [[0.7976749, 0.1351917, 0.0313534], [0.2880402, 0.7118741, 0.0000857], [0.0, 0.0, 0.8252100]]
    np.testing.assert_allclose(C.bradford(C.D65, C.D50) @ C.xyz_from_rgb("prophoto"), pp, atol=3e-4)
    # dcraw/LibRaw's sRGB -> Adobe and sRGB -> ProPhoto (Bradford) tables
    libraw_adobe = [[0.715146, 0.284856, 0.0], [0.0, 1.0, 0.0], [0.0, 0.041166, 0.958839]]
    libraw_pp = [[0.529317, 0.330092, 0.140588], [0.098368, 0.873465, 0.028169], [0.016879, 0.117663, 0.865457]]
    np.testing.assert_allclose(C.rgb_from_xyz("adobe") @ C.xyz_from_rgb("srgb"), libraw_adobe, atol=1e-4)
    np.testing.assert_allclose(C.rgb_from_xyz("prophoto") @ C.xyz_from_rgb("srgb"), libraw_pp, atol=1e-4)


def test_bradford_reference():
    lindbloom = [[1.0478112, 0.0228866, -0.0501270], [0.0295424, 0.9904844, -0.0170491], [-0.0092345, 0.0150436, 0.7521316]]
    # (Lindbloom uses tabulated white XYZs, we use the chromaticities: ~3e-4 apart)
    np.testing.assert_allclose(C.bradford(C.D65, C.D50), lindbloom, atol=5e-4)
    np.testing.assert_allclose(C.bradford(C.D65, C.D50) @ C.D65, C.D50, atol=1e-12)


def test_get_space_aliases_and_errors():
    assert C.get_space("sRGB").name == "srgb"
    assert C.get_space("AdobeRGB").name == "adobe"
    assert C.get_space("romm").name == "prophoto"
    assert C.get_space(C.SPACES["xyz"]) is C.SPACES["xyz"]
    with pytest.raises(ValueError, match="colorspace 'rec2020'"):
        C.get_space("rec2020")
    with pytest.raises(ValueError):
        C.xyz_from_rgb("raw")


# ----------------------------------------------------------------------------- curves


@pytest.mark.parametrize("name", C.SPACE_NAMES)
def test_curves_invertible_and_monotonic(name):
    x = np.linspace(0.0, 1.0, 100001)
    y = C.encode(x, name)
    np.testing.assert_allclose(C.decode(y, name), x, atol=1e-12, rtol=1e-9)
    # (sRGB's published constants leave a 3e-8 step at the breakpoint)
    np.testing.assert_allclose(C.encode(C.decode(x, name), name), x, atol=1e-7, rtol=1e-9)
    assert np.all(np.diff(y) > 0)
    assert y[0] == 0.0 and abs(y[-1] - 1.0) < 1e-12
    # float32 in, float32 out
    assert C.encode(np.float32([0.2, 0.5]), name).dtype == np.float32


def test_curve_values():
    # sRGB: piecewise, continuous at the breakpoint
    assert C.encode(0.0031308, "srgb") == pytest.approx(0.04045, abs=1e-6)
    assert C.encode(0.18, "srgb") == pytest.approx(0.461356, abs=1e-5)
    assert C.encode(0.001, "srgb") == pytest.approx(0.01292, abs=1e-9)
    # Adobe: pure 563/256 gamma
    assert C.decode(0.5, "adobe") == pytest.approx(0.5 ** (563 / 256), rel=1e-12)
    assert C.decode(0.001, "adobe") == pytest.approx(0.001 ** (563 / 256), rel=1e-9)
    # ProPhoto: 1.8 with a linear toe of slope 16 below 1/512
    assert C.encode(1 / 1024, "prophoto") == pytest.approx(16 / 1024, rel=1e-12)
    assert C.encode(0.5, "prophoto") == pytest.approx(0.5 ** (1 / 1.8), rel=1e-12)
    e = 1 / 512
    assert C.encode(e - 1e-12, "prophoto") == pytest.approx(C.encode(e, "prophoto"), abs=2e-3)  # ~continuous
    for lin in ("xyz", "raw"):
        assert C.encode(0.3, lin) == 0.3


# ----------------------------------------------------------------------------- ICC


def _parse_tags(b: bytes) -> dict:
    n = struct.unpack(">I", b[128:132])[0]
    tags = {}
    for i in range(n):
        sig, off, size = struct.unpack(">4sII", b[132 + 12 * i : 144 + 12 * i])
        tags[sig.decode()] = b[off : off + size]
    return tags


def _s15(b: bytes) -> np.ndarray:
    return np.array(struct.unpack(">3i", b[8:20])) / 65536.0


@pytest.mark.parametrize("linear", [False, True])
@pytest.mark.parametrize("name", C.SPACE_NAMES)
def test_icc_profiles_parse_with_pillow(name, linear):
    ImageCms = pytest.importorskip("PIL.ImageCms")
    b = C.icc_profile(name, linear=linear)
    assert struct.unpack(">I", b[:4])[0] == len(b)
    assert b[36:40] == b"acsp" and b[8] == 2
    prof = ImageCms.ImageCmsProfile(io.BytesIO(b))
    desc = ImageCms.getProfileDescription(prof)
    assert desc.strip()
    if linear and name not in ("xyz", "raw"):
        assert "linear" in desc
    tags = _parse_tags(b)
    assert set(tags) >= {"desc", "cprt", "wtpt", "rXYZ", "gXYZ", "bXYZ", "rTRC", "gTRC", "bTRC"}
    cols = np.stack([_s15(tags[t]) for t in ("rXYZ", "gXYZ", "bXYZ")], axis=1)
    if name != "xyz":
        np.testing.assert_allclose(cols.sum(axis=1), [0.9642, 1.0, 0.8249], atol=1e-4)
    if linear or name in ("xyz", "raw"):
        assert tags["rTRC"] == b"curv" + b"\0" * 8  # identity curve
    assert C.icc_profile(name, linear=linear) == b  # deterministic


def _rand_image(seed=0):
    from PIL import Image

    a = (np.random.default_rng(seed).random((24, 24, 3)) * 255).astype(np.uint8)
    return Image.fromarray(a), a


def test_icc_srgb_is_equivalent_to_lcms_srgb():
    ImageCms = pytest.importorskip("PIL.ImageCms")
    im, a = _rand_image()
    mine = ImageCms.ImageCmsProfile(io.BytesIO(C.icc_profile("srgb")))
    t = ImageCms.buildTransform(mine, ImageCms.createProfile("sRGB"), "RGB", "RGB")
    out = np.asarray(ImageCms.applyTransform(im, t)).astype(int)
    assert np.abs(out - a).max() <= 1


@pytest.mark.parametrize("name", ["adobe", "prophoto"])
@pytest.mark.parametrize("linear", [False, True])
def test_icc_transforms_match_matrices(name, linear):
    """lcms converting sRGB -> our profile agrees with our own matrices and curves (within rounding)."""
    ImageCms = pytest.importorskip("PIL.ImageCms")
    im, a = _rand_image(1)
    dst = ImageCms.ImageCmsProfile(io.BytesIO(C.icc_profile(name, linear=linear)))
    t = ImageCms.buildTransform(ImageCms.createProfile("sRGB"), dst, "RGB", "RGB", renderingIntent=1)
    out = np.asarray(ImageCms.applyTransform(im, t)).astype(float)
    lin = C.decode(a / 255.0, "srgb") @ (C.rgb_from_xyz(name) @ C.xyz_from_rgb("srgb")).T
    lin = np.clip(lin, 0, 1)
    exp = (lin if linear else C.encode(lin, name)) * 255
    # linear 8-bit output is coarse near black; lcms interpolates its curves
    assert np.abs(out - exp).max() <= (1.5 if linear else 1.0)


def test_icc_raw_with_camera_matrix():
    ImageCms = pytest.importorskip("PIL.ImageCms")
    b = C.icc_profile("raw", xyz_to_cam=S40_XYZ_TO_CAM)
    ImageCms.ImageCmsProfile(io.BytesIO(b))
    cols = np.stack([_s15(_parse_tags(b)[t]) for t in ("rXYZ", "gXYZ", "bXYZ")], axis=1)
    # camera colorants = sRGB colorants @ inverse(camera_to_output)
    exp = C.bradford(C.D65, np.array([0.9642, 1, 0.8249])) @ C.xyz_from_rgb("srgb") @ C.camera_to_output(S40_XYZ_TO_CAM)
    np.testing.assert_allclose(cols, exp, atol=2e-4)


# ----------------------------------------------------------------------------- camera -> output


@pytest.mark.parametrize("name", RGB_SPACES)
def test_camera_to_output_preserves_white(name):
    m = C.camera_to_output(S40_XYZ_TO_CAM, name)
    np.testing.assert_allclose(m @ np.ones(3), np.ones(3), atol=1e-12)
    # scale of the stored matrix does not matter
    np.testing.assert_allclose(C.camera_to_output(S40_XYZ_TO_CAM * 7.0, name), m, atol=1e-12)


def test_camera_to_output_xyz_and_raw():
    m = C.camera_to_output(S40_XYZ_TO_CAM, "xyz")
    np.testing.assert_allclose(m @ np.ones(3), C.D65, atol=1e-12)  # camera white -> D65, like LibRaw
    np.testing.assert_allclose(m, C.xyz_from_rgb("srgb") @ C.camera_to_output(S40_XYZ_TO_CAM, "srgb"), atol=1e-12)
    np.testing.assert_array_equal(C.camera_to_output(S40_XYZ_TO_CAM, "raw"), np.eye(3))


def test_camera_to_output_consistent_across_spaces():
    srgb = C.camera_to_output(S40_XYZ_TO_CAM, "srgb")
    for name in ("adobe", "prophoto"):
        np.testing.assert_allclose(
            C.camera_to_output(S40_XYZ_TO_CAM, name),
            C.rgb_from_xyz(name) @ C.xyz_from_rgb("srgb") @ srgb,
            atol=1e-10,
        )


def test_camera_that_is_srgb_gives_identity():
    """A 'camera' whose native RGB is linear sRGB (any row scaling = any WB) maps by the identity."""
    xyz_to_cam = np.diag([0.5, 1.0, 2.0]) @ C.rgb_from_xyz("srgb")
    np.testing.assert_allclose(C.camera_to_output(xyz_to_cam, "srgb"), np.eye(3), atol=1e-12)


def test_camera_to_output_matches_dcraw_formula():
    """dcraw's cam_xyz_coeff: cam_rgb = cam_xyz @ xyz_rgb, rows normalised to 1, pseudo-inverse."""
    cam_rgb = S40_XYZ_TO_CAM @ C.xyz_from_rgb("srgb")
    cam_rgb /= cam_rgb.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(C.camera_to_output(S40_XYZ_TO_CAM, "srgb"), np.linalg.pinv(cam_rgb), atol=1e-12)


def test_camera_to_output_accepts_libraw_4x3_and_rejects_garbage():
    m43 = np.vstack([S40_XYZ_TO_CAM, np.zeros(3)])
    np.testing.assert_allclose(C.camera_to_output(m43), C.camera_to_output(S40_XYZ_TO_CAM))
    with pytest.raises(ValueError):
        C.camera_to_output(np.zeros((3, 3)))
    with pytest.raises(ValueError):
        C.camera_to_output(np.ones((2, 3)))
    with pytest.raises(ValueError):
        C.camera_to_output(S40_XYZ_TO_CAM, "nope")


def test_daylight_multipliers_from_matrix():
    mul = C.daylight_multipliers(S40_XYZ_TO_CAM)
    assert mul[1] == 1.0
    # LibRaw reports pre_mul (daylight) for the S40 computed exactly this way
    np.testing.assert_allclose(mul, [2.3829216, 1.0, 1.0412363], rtol=2e-4)
