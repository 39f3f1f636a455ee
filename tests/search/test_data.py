"""Patch dataset invariants: CFA phase after augmentation, the fixed validation split, mining, caching."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import numpy as np  # noqa: E402

from rawdemosaic.cfa import CFA, CFAPattern, mosaic  # noqa: E402
from rawdemosaic.search import data as D  # noqa: E402

DIRS = ("train/a", "train/b")


@pytest.mark.parametrize("cfa", ["bayer", "xtrans"])
def test_patch_mosaic_is_canonical_at_origin(tiny_data, cfa):
    ds = D.PatchDataset(DIRS, cfa, patch=24, linear=False, augment=True, seed=1, count=40, synthetic=0.2)
    fam = CFA(cfa)
    assert ds.mosaic.shape == (40, 1, 24, 24) and ds.rgb.shape == (40, 3, 24, 24)
    pat = np.tile(fam.canonical, (24 // fam.period, 24 // fam.period))
    for m, rgb in zip(ds.mosaic, ds.rgb):
        want = np.take_along_axis(rgb, pat[None].astype(np.intp), axis=0)[0]
        np.testing.assert_array_equal(m[0], want)
        np.testing.assert_array_equal(m[0], mosaic(rgb.transpose(1, 2, 0), CFAPattern(fam, 0, 0)))


def test_augmentations_are_applied_before_cropping(tiny_data):
    """Every patch is an exact crop of one of the 8 dihedral transforms of a source image."""
    ds = D.PatchDataset(DIRS, "bayer", patch=12, linear=False, augment=True, seed=3, count=16, synthetic=0.0, hard_fraction=0.0)
    sources = [D._load(f).astype(np.float32) / 255 for f in ds.files]
    codes_seen = set()
    for rgb in ds.rgb:
        p = rgb.transpose(1, 2, 0)
        found = None
        for s in sources:
            for code in range(8):
                a = D.augment(s, code)
                hits = np.argwhere(np.all(np.abs(a[:-11, :-11] - p[0, 0]) < 1e-6, axis=-1))
                for y, x in hits:
                    if np.array_equal(a[y : y + 12, x : x + 12], p):
                        found = code
                        break
                if found is not None:
                    break
            if found is not None:
                break
        assert found is not None
        codes_seen.add(found)
    assert len(codes_seen) > 1  # flips/transposes do happen


def test_augment_codes_are_the_dihedral_group():
    a = np.arange(12).reshape(3, 4)
    outs = {D.augment(a, c).tobytes() + bytes(D.augment(a, c).shape) for c in range(8)}
    assert len(outs) == 8


def test_validation_split_fixed_and_disjoint(tiny_data):
    files = D.list_images(DIRS)
    tr, va = D.split_files(files)
    assert set(tr).isdisjoint(va) and set(tr) | set(va) == set(files)
    assert len(va) == -(-len(files) // D.VAL_EVERY)
    tr2, va2 = D.split_files(list(reversed(files)))
    assert (tr, va) == (tr2, va2)
    # the split depends on names only: same file names elsewhere give the same split
    key = lambda fs: [(f.parent.name, f.name) for f in fs]  # noqa: E731
    assert key(va) == key(D.split_files([tiny_data / "elsewhere" / f.parent.name / f.name for f in files])[1])
    ds_tr = D.PatchDataset(DIRS, "bayer", patch=12, count=4, seed=0)
    ds_va = D.PatchDataset(DIRS, "bayer", patch=12, count=4, seed=0, split="val")
    assert set(ds_tr.files).isdisjoint(ds_va.files)
    assert set(ds_va.files) == set(va)


def test_test_sets_are_never_read(tiny_data, monkeypatch):
    from PIL import Image

    opened = []
    real = Image.open
    monkeypatch.setattr(Image, "open", lambda f, *a, **k: (opened.append(str(f)), real(f, *a, **k))[1])
    D._IMAGE_CACHE.clear()
    D.PatchDataset(DIRS, "bayer", patch=12, count=8, seed=0)
    D.load_split("val", DIRS)
    assert opened and not any("/test/" in f for f in opened)
    with pytest.raises(ValueError):
        D.PatchDataset(["test/t"], "bayer", patch=12, count=4)
    with pytest.raises(ValueError):
        D.list_images([tiny_data / "test"])


def test_default_dirs_are_the_training_sets():
    assert all(d.startswith("train/") for d in D.DEFAULT_TRAIN_DIRS)


def test_linear_decoding(tiny_data):
    a = D.PatchDataset(DIRS, "bayer", patch=12, count=8, seed=0, linear=False, hard_fraction=0.0)
    b = D.PatchDataset(DIRS, "bayer", patch=12, count=8, seed=0, linear=True, hard_fraction=0.0)
    from rawdemosaic.evaluate import srgb_to_linear

    np.testing.assert_allclose(b.rgb, srgb_to_linear(a.rgb), atol=1e-6)


def test_hard_mining_prefers_hard_patches(tiny_data):
    kw = dict(patch=24, count=32, seed=0, synthetic=0.0, linear=False)
    plain = D.PatchDataset(DIRS, "bayer", hard_fraction=0.0, pool_factor=1, **kw)
    mined = D.PatchDataset(DIRS, "bayer", hard_fraction=1.0, pool_factor=4, **kw)
    both = np.concatenate([plain.mosaic, mined.mosaic]), np.concatenate([plain.rgb, mined.rgb])
    score = plain.difficulty(*both)
    assert score[32:].mean() > score[:32].mean()


def test_synthetic_is_seeded_and_in_range():
    for fn in (D.dead_leaves, D.zone_plate, D.strokes):
        a = fn(32, np.random.default_rng(5))
        b = fn(32, np.random.default_rng(5))
        assert a.shape == (32, 32, 3) and a.dtype == np.float32
        np.testing.assert_array_equal(a, b)
        assert 0 <= a.min() and a.max() <= 1 and a.std() > 0.01


def test_deterministic_and_cached(tiny_data, tmp_path, monkeypatch):
    kw = dict(patch=12, count=16, seed=7)
    a = D.PatchDataset(DIRS, "bayer", cache=tmp_path / "run" / "patches.npz", **kw)
    b = D.PatchDataset(DIRS, "bayer", **kw)
    np.testing.assert_array_equal(a.rgb, b.rgb)
    monkeypatch.setattr(D.PatchDataset, "_prepare", lambda self: (_ for _ in ()).throw(AssertionError("not cached")))
    c = D.PatchDataset(DIRS, "bayer", cache=tmp_path / "run" / "patches.npz", **kw)
    np.testing.assert_array_equal(a.mosaic, c.mosaic)
    m, rgb = next(c.batches(4, seed=0))
    assert m.shape == (4, 1, 12, 12) and rgb.shape == (4, 3, 12, 12)


def test_patch_must_keep_alignment(tiny_data):
    with pytest.raises(ValueError):
        D.PatchDataset(DIRS, "xtrans", patch=28, count=4)


def test_colour_augmentation_permutes_and_saturates(tiny_data):
    kw = dict(patch=12, count=32, seed=5, linear=False, synthetic=0.0, hard_fraction=0.0, augment=False)
    plain = D.PatchDataset(DIRS, "bayer", **kw)
    coloured = D.PatchDataset(DIRS, "bayer", color=1.0, **kw)
    assert plain._key() != coloured._key()
    sat = lambda ds: float(np.mean(ds.rgb.max(axis=1) - ds.rgb.min(axis=1)))  # noqa: E731
    assert sat(coloured) > sat(plain) * 1.05
    assert coloured.rgb.min() >= 0 and coloured.rgb.max() <= 1
    # brightness is kept up to clipping: colours move, the overall mean does not
    assert abs(float(coloured.rgb.mean()) - float(plain.rgb.mean())) < 0.03


def _whole_pool_reference(ds: D.PatchDataset) -> tuple[np.ndarray, np.ndarray]:
    """The preparation as first written: crop, colour-augment and convert the whole pool at once, then mine."""
    rng = np.random.default_rng([ds.seed, 0 if ds.split == "train" else 1])
    n_syn = int(round(ds.count * ds.synthetic))
    n_img = ds.count - n_syn
    pool = max(n_img, int(n_img * max(1, ds.pool_factor)))
    P = ds.patch
    out = np.empty((pool, P, P, 3), np.float32)
    for k, i in enumerate(rng.integers(len(ds.files), size=pool)):
        img = D.augment(D._load(ds.files[i]), int(rng.integers(8)))
        h, w = img.shape[:2]
        y, x = int(rng.integers(h - P + 1)), int(rng.integers(w - P + 1))
        out[k] = img[y : y + P, x : x + P] / np.float32(255.0)
    for k in np.flatnonzero(rng.random(pool) < ds.color):
        a = out[k][..., rng.permutation(3)]
        mean = a.mean(axis=-1, keepdims=True)
        out[k] = np.clip(mean + (a - mean) * rng.uniform(1.0, 2.0), 0.0, 1.0)
    m, rgb = ds._to_pairs(out)
    score = ds.difficulty(m, rgb)
    order = np.argsort(-score, kind="stable")
    n_hard = int(round(n_img * ds.hard_fraction))
    pick = np.concatenate([order[:n_hard], rng.choice(order[n_hard:], n_img - n_hard, replace=False)])
    m, rgb = m[pick], rgb[pick]
    sm, srgb = ds._to_pairs(np.stack([D.synthetic_image(P, rng) for _ in range(n_syn)]))
    perm = rng.permutation(ds.count)
    return np.concatenate([m, sm])[perm], np.concatenate([rgb, srgb])[perm]


@pytest.mark.parametrize("cfa,linear,chunk", [("bayer", True, 1024), ("xtrans", False, 256)])
def test_streamed_preparation_equals_whole_pool(tiny_data, monkeypatch, cfa, linear, chunk):
    """The pool is kept as uint8 crops and converted in chunks (a third of the memory); the patches are
    exactly those of converting the whole pool at once (the pool of 1260 and the 630 kept cross chunks)."""
    monkeypatch.setattr(D.PatchDataset, "_chunk", chunk)
    ds = D.PatchDataset(DIRS, cfa, patch=12 if cfa == "bayer" else 24, count=700, seed=5, linear=linear, color=0.5, synthetic=0.1, hard_fraction=0.5, pool_factor=2)
    m, rgb = _whole_pool_reference(ds)
    np.testing.assert_array_equal(ds.mosaic, m)
    np.testing.assert_array_equal(ds.rgb, rgb)
