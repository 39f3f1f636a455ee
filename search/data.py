"""Training data: CFA-aligned patches of the training corpus, hard-patch mining, synthetic images.

Corpus and split
----------------
Images come from directories (default ``data_dir()/train/urban100`` and ``data_dir()/train/wed100``; a user
can pass their own). The test sets (``data_dir()/test``) are never read: a directory inside it is refused.
The **validation split** is fixed: the files of all directories are ordered by the SHA-1 of
``"<directory name>/<file name>"`` and every 10th of that order (positions 0, 10, 20, ...) is validation,
the rest training. It depends only on the file names, so it is the same on every machine and run.

Patches
-------
A patch is cut from an image *after* augmenting the whole RGB image (a random flip and/or transpose),
then mosaicked with the family's canonical pattern, so canonical phase (0, 0) is always at the patch
origin, whatever the augmentation. With ``linear=True`` (the default: the raw converter feeds kernels
white-balanced linear data) images are decoded from sRGB to linear light before mosaicking.

Hard-patch mining (after Gharbi et al., "Deep joint demosaicking and denoising", SIGGRAPH Asia 2016):
a pool of ``pool_factor * count`` candidates is scored with a cheap demosaicker (the classical linear
program of the family, bilinear for Bayer, evaluated with its PyTorch twin) by rank of its error plus rank
of the patch's high-frequency energy; the top ``hard_fraction`` of ``count`` are kept and the rest drawn
at random from the remaining pool.

Synthetic images (dead leaves, zone plates, thin strokes like text) complement the small corpus: a
``synthetic`` fraction of the patches, generated procedurally from the seed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from rawdemosaic.cfa import CFA, CFAPattern, mosaic
from rawdemosaic.evaluate import TRAIN_SETS, VAL_EVERY, data_dir, image_files, split_files, srgb_to_linear

__all__ = [
    "PatchDataset",
    "DEFAULT_TRAIN_DIRS",
    "VAL_EVERY",
    "list_images",
    "split_files",
    "load_split",
    "augment",
    "recolour",
    "dead_leaves",
    "zone_plate",
    "strokes",
    "synthetic_image",
]

DEFAULT_TRAIN_DIRS = TRAIN_SETS
_IMAGE_CACHE: dict[str, np.ndarray] = {}  # resolved path -> uint8 RGB (decoded once per process)


# ------------------------------------------------------------------------------------------------
# Files and the validation split


def _resolve_dir(d: str | Path) -> Path:
    p = Path(d)
    if not p.is_absolute():
        p = data_dir() / p
    p = p.resolve()
    test_root = (data_dir() / "test").resolve()
    if p == test_root or test_root in p.parents:
        raise ValueError(f"{p} is inside the test sets ({test_root}): training data must not come from them")
    return p


def list_images(image_dirs: Sequence[str | Path] | None = None) -> list[Path]:
    """Image files of the directories (relative ones resolve against :func:`data_dir`), sorted."""
    files: list[Path] = []
    for d in image_dirs or DEFAULT_TRAIN_DIRS:
        p = _resolve_dir(d)
        if not p.is_dir():
            raise FileNotFoundError(f"no image directory {p}")
        files.extend(image_files(p))
    if not files:
        raise FileNotFoundError(f"no images in {list(image_dirs or DEFAULT_TRAIN_DIRS)}")
    return files


def _load(f: Path) -> np.ndarray:
    key = str(f)
    if key not in _IMAGE_CACHE:
        from PIL import Image

        with Image.open(f) as im:
            _IMAGE_CACHE[key] = np.ascontiguousarray(np.asarray(im.convert("RGB"), np.uint8))
    return _IMAGE_CACHE[key]


def load_split(split: str = "train", image_dirs: Sequence[str | Path] | None = None, limit: int | None = None) -> list[np.ndarray]:
    """Whole images of a split as float32 sRGB ``(H, W, 3)`` in [0, 1] (for full-image validation)."""
    tr, va = split_files(list_images(image_dirs))
    files = {"train": tr, "val": va}[split][:limit]
    return [_load(f).astype(np.float32) / 255.0 for f in files]


# ------------------------------------------------------------------------------------------------
# Augmentation


def augment(img: np.ndarray, code: int) -> np.ndarray:
    """One of the 8 dihedral transforms of an ``(H, W, ...)`` image: bit 0 flips rows (vertical flip),
    bit 1 flips columns, bit 2 transposes (applied last)."""
    if code & 1:
        img = img[::-1]
    if code & 2:
        img = img[:, ::-1]
    if code & 4:
        img = img.swapaxes(0, 1)
    return img


def recolour(img: np.ndarray, perm: np.ndarray, gain: float) -> np.ndarray:
    """The colour augmentation: channels permuted by ``perm``, saturation scaled by ``gain`` about each
    pixel's mean, clipped to [0, 1] (``(..., 3)`` floats)."""
    a = img[..., perm]
    mean = a.mean(axis=-1, keepdims=True)
    return np.clip(mean + (a - mean) * gain, 0.0, 1.0)


# ------------------------------------------------------------------------------------------------
# Synthetic images (sRGB, [0, 1], float32)


def dead_leaves(size: int, rng: np.random.Generator, n: int = 400, rmin: float = 1.0, rmax: float | None = None) -> np.ndarray:
    """Occluding discs with power-law radii (density ~ r^-3) and random colours."""
    rmax = rmax or size / 3
    img = np.empty((size, size, 3), np.float32)
    img[:] = rng.random(3)
    filled = np.zeros((size, size), bool)
    yy, xx = np.mgrid[:size, :size]
    for _ in range(n):
        # inverse-CDF of p(r) ~ r^-3 on [rmin, rmax]
        u = rng.random()
        r = 1.0 / np.sqrt((1 - u) / rmin**2 + u / rmax**2)
        cy, cx = rng.random(2) * size
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & ~filled
        img[disc] = rng.random(3)
        filled |= disc
        if filled.all():
            break
    return img


def zone_plate(size: int, rng: np.random.Generator) -> np.ndarray:
    """Chirped rings ``cos(k r^2)`` per channel (different phases/frequencies: colour moire material)."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    cy, cx = rng.random(2) * size
    rr = (yy - cy) ** 2 + (xx - cx) ** 2
    kmax = np.pi / max(1.0, 2 * size * rng.uniform(0.5, 1.5))  # up to about Nyquist at the far edge
    base = rng.uniform(0.2, 1.0)
    out = np.empty((size, size, 3), np.float32)
    for c in range(3):
        out[..., c] = 0.5 + 0.5 * rng.uniform(0.3, 1) * np.cos(kmax * base * rr * rng.uniform(0.9, 1.1) + rng.uniform(0, 2 * np.pi))
    return out


def strokes(size: int, rng: np.random.Generator, n: int = 40) -> np.ndarray:
    """Thin straight and axis-aligned strokes (1-3 px) in random colours on a flat background: text-like."""
    img = np.empty((size, size, 3), np.float32)
    img[:] = rng.random(3)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    for _ in range(n):
        col = rng.random(3)
        w = rng.uniform(0.6, 1.6)
        y0, x0 = rng.random(2) * size
        ang = rng.choice([0.0, np.pi / 2, rng.uniform(0, np.pi)])
        length = rng.uniform(size / 8, size / 2)
        dy, dx = np.sin(ang), np.cos(ang)
        t = np.clip((yy - y0) * dy + (xx - x0) * dx, 0, length)
        d = np.hypot(yy - (y0 + t * dy), xx - (x0 + t * dx))
        a = np.clip(w + 0.5 - d, 0, 1)[..., None]  # anti-aliased edge
        img = img * (1 - a) + col * a
    return img.astype(np.float32)


def synthetic_image(size: int, rng: np.random.Generator) -> np.ndarray:
    kind = rng.integers(3)
    return (dead_leaves, zone_plate, strokes)[kind](size, rng)


# ------------------------------------------------------------------------------------------------
# The dataset


def _cheap_program(cfa: CFA):
    from rawdemosaic.program.classical import bayer_bilinear, xtrans_linear

    return bayer_bilinear() if cfa is CFA.BAYER else xtrans_linear()


def _hf_energy(rgb: np.ndarray) -> np.ndarray:
    """Mean absolute Laplacian of each ``(N, 3, H, W)`` patch (high-frequency content)."""
    lap = 4 * rgb[..., 1:-1, 1:-1] - rgb[..., :-2, 1:-1] - rgb[..., 2:, 1:-1] - rgb[..., 1:-1, :-2] - rgb[..., 1:-1, 2:]
    return np.abs(lap).mean(axis=(1, 2, 3))


def _ranks(v: np.ndarray) -> np.ndarray:
    r = np.empty(len(v))
    r[np.argsort(v, kind="stable")] = np.arange(len(v))
    return r / max(1, len(v) - 1)


class PatchDataset(torch.utils.data.Dataset):
    """A fixed set of CFA-aligned training (or validation) patches.

    Parameters
    ----------
    image_dirs
        Directories of images (default :data:`DEFAULT_TRAIN_DIRS`); never the test sets.
    cfa
        ``"bayer"`` / ``"xtrans"`` (or a :class:`CFA`): patches are mosaicked with its canonical pattern.
    patch
        Patch side in pixels; a multiple of the CFA period (and, for training, of the program's
        :meth:`~Program.lcm_scale`).
    linear
        Decode sRGB to linear light (default; the converter feeds kernels linear data). ``False``: sRGB.
    augment
        Random flips/transposes of the whole image before cropping.
    seed
        Everything random (crops, augmentation, synthetic images, mining) derives from it.
    split
        ``"train"`` or ``"val"`` (the fixed validation split, see the module docstring).
    count
        Number of patches.
    synthetic
        Fraction of synthetic patches (default 0.1 for training, 0 for validation).
    hard_fraction, pool_factor
        Hard-patch mining: keep the top ``hard_fraction`` of ``count`` from a pool ``pool_factor`` times
        larger, the rest at random (default 0.5 and 4 for training; validation is not mined).
    color
        Fraction of image crops whose colours are augmented: a random channel permutation and a
        saturation gain in [1, 2] about the pixel's mean (default 0). Colour-difference priors learnt
        from mostly desaturated photographs then hold less; it is a generic augmentation, not a test set's.
    cache
        Optional ``.npz`` path: prepared patches are loaded from it when its parameters match, else
        prepared and saved there.
    limit
        Use at most this many images of the split (small runs and tests).

    Items are ``(mosaic (1, P, P), rgb (3, P, P))`` float32 tensors; :meth:`tensors` gives the whole set.
    """

    def __init__(
        self,
        image_dirs: Sequence[str | Path] | None = None,
        cfa: CFA | str = "bayer",
        patch: int = 48,
        linear: bool = True,
        augment: bool = True,
        seed: int = 0,
        *,
        split: str = "train",
        count: int = 1024,
        synthetic: float | None = None,
        hard_fraction: float | None = None,
        pool_factor: int | None = None,
        cache: str | Path | None = None,
        limit: int | None = None,
        color: float = 0.0,
    ):
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        self.cfa = CFA(cfa.value if isinstance(cfa, CFA) else str(cfa).lower().replace("-", ""))
        if patch % self.cfa.period or patch < 4 * self.cfa.period:
            raise ValueError(f"patch {patch} must be a multiple of the CFA period {self.cfa.period} (and >= 4 periods)")
        train = split == "train"
        self.image_dirs = [str(d) for d in (image_dirs or DEFAULT_TRAIN_DIRS)]
        self.patch, self.linear, self.augment, self.seed, self.split, self.count = patch, linear, augment, seed, split, count
        self.synthetic = (0.1 if train else 0.0) if synthetic is None else synthetic
        self.hard_fraction = (0.5 if train else 0.0) if hard_fraction is None else hard_fraction
        self.pool_factor = (4 if train else 1) if pool_factor is None else pool_factor
        self.limit = limit
        self.color = float(color)
        tr, va = split_files(list_images(self.image_dirs))
        self.files = (tr if train else va)[:limit]
        if not self.files:
            raise FileNotFoundError(f"the {split} split of {self.image_dirs} is empty")
        key = self._key()
        if cache is not None and Path(cache).exists():
            with np.load(cache) as z:
                if str(z["key"]) == key:
                    self.mosaic, self.rgb = z["mosaic"], z["rgb"]
                    return
        self.mosaic, self.rgb = self._prepare()
        if cache is not None:
            Path(cache).parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(cache).with_name(Path(cache).name + ".tmp.npz")
            np.savez(tmp, key=np.array(key), mosaic=self.mosaic, rgb=self.rgb)
            tmp.replace(cache)

    # --- identity -------------------------------------------------------------------------------
    def _key(self) -> str:
        d = {
            k: getattr(self, k)
            for k in ("patch", "linear", "augment", "seed", "split", "count", "synthetic", "hard_fraction", "pool_factor")
        }
        if self.color:
            d["color"] = self.color
        d.update(cfa=self.cfa.value, files=[f"{f.parent.name}/{f.name}" for f in self.files], v=1)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:20]

    # --- preparation ----------------------------------------------------------------------------
    # The candidate pool is held as uint8 crops plus the colour augmentation drawn for each, and turned
    # into float patches a chunk at a time (to score it) and again for the kept patches only. The uint8
    # pool is pool_factor / 4 of the kept set's float size, so the peak is about twice the kept set, not
    # three times the float pool (count 16384: 1.8 GB, was 6.3). The random draws are those of cropping
    # and augmenting the whole pool at once, so prepared sets are unchanged (tested).
    _chunk = 1024  # patches converted at a time: a multiple of the 256-patch scoring batches

    def _crops(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[int, tuple[np.ndarray, float]]]:
        """``n`` random crops ``(n, P, P, 3)`` uint8 (geometric augmentation before cropping) and the colour
        augmentation drawn for some of them: ``{index: (channel permutation, saturation gain)}``."""
        P = self.patch
        out = np.empty((n, P, P, 3), np.uint8)
        imgs = rng.integers(len(self.files), size=n)
        for k, i in enumerate(imgs):
            img = _load(self.files[i])
            if self.augment:
                img = augment(img, int(rng.integers(8)))
            h, w = img.shape[:2]
            if h < P or w < P:
                img = np.pad(img, ((0, max(0, P - h)), (0, max(0, P - w)), (0, 0)), mode="reflect")
                h, w = img.shape[:2]
            y, x = int(rng.integers(h - P + 1)), int(rng.integers(w - P + 1))
            out[k] = img[y : y + P, x : x + P]
        colour: dict[int, tuple[np.ndarray, float]] = {}
        if self.color > 0:
            for k in np.flatnonzero(rng.random(n) < self.color):
                colour[int(k)] = (rng.permutation(3), float(rng.uniform(1.0, 2.0)))
        return out, colour

    def _patches(self, crops: np.ndarray, colour: dict, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(mosaic (n, 1, P, P), rgb (n, 3, P, P))`` float32 of ``crops[idx]`` in the data's domain,
        converted ``_chunk`` at a time into the outputs."""
        P = self.patch
        m, rgb = np.empty((len(idx), 1, P, P), np.float32), np.empty((len(idx), 3, P, P), np.float32)
        for s in range(0, len(idx), self._chunk):
            part = idx[s : s + self._chunk]
            srgb = crops[part] / np.float32(255.0)
            for j, k in enumerate(part):
                if int(k) in colour:
                    srgb[j] = recolour(srgb[j], *colour[int(k)])
            m[s : s + self._chunk], rgb[s : s + self._chunk] = self._to_pairs(srgb)
        return m, rgb

    def _to_pairs(self, srgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rgb = srgb_to_linear(srgb) if self.linear else srgb.astype(np.float32, copy=False)
        pat = CFAPattern(self.cfa, 0, 0)
        m = np.stack([mosaic(a, pat) for a in rgb])[:, None]
        return np.ascontiguousarray(m, np.float32), np.ascontiguousarray(rgb.transpose(0, 3, 1, 2), np.float32)

    def _prepare(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, 0 if self.split == "train" else 1])
        n_syn = int(round(self.count * self.synthetic))
        n_img = self.count - n_syn
        pool = max(n_img, int(n_img * max(1, self.pool_factor)))
        crops, colour = self._crops(pool, rng)
        if self.hard_fraction > 0 and pool > n_img:
            mod, crop = self._cheap()
            chunks = (np.arange(s, min(s + self._chunk, pool)) for s in range(0, pool, self._chunk))
            parts = [self._score_parts(mod, crop, *self._patches(crops, colour, idx)) for idx in chunks]
            score = _ranks(np.concatenate([e for e, _ in parts])) + _ranks(np.concatenate([h for _, h in parts]))
            order = np.argsort(-score, kind="stable")
            n_hard = int(round(n_img * self.hard_fraction))
            rest = order[n_hard:]
            pick = np.concatenate([order[:n_hard], rng.choice(rest, n_img - n_hard, replace=False)])
        else:
            pick = np.arange(n_img)
        m, rgb = self._patches(crops, colour, pick)
        del crops
        if n_syn:
            sm, srgb = self._to_pairs(np.stack([synthetic_image(self.patch, rng) for _ in range(n_syn)]))
            m, rgb = np.concatenate([m, sm]), np.concatenate([rgb, srgb])
        perm = rng.permutation(len(m))
        return np.ascontiguousarray(m[perm]), np.ascontiguousarray(rgb[perm])

    def _cheap(self):
        from .model import ProgramModule

        prog = _cheap_program(self.cfa)
        return ProgramModule(prog), min(prog.receptive_radius(), self.patch // 4)

    @staticmethod
    def _score_parts(mod, crop: int, m: np.ndarray, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per patch: the cheap demosaicker's interior MSE and the high-frequency energy (batches of 256,
        so a patch's score does not depend on how the pool is chunked, given chunks of a multiple of 256)."""
        errs = []
        with torch.no_grad():
            for s in range(0, len(m), 256):
                out = mod(torch.from_numpy(m[s : s + 256])).numpy()
                d = (out - rgb[s : s + 256])[..., crop:-crop, crop:-crop]
                errs.append((d**2).mean(axis=(1, 2, 3)))
        return np.concatenate(errs), _hf_energy(rgb)

    def difficulty(self, m: np.ndarray, rgb: np.ndarray) -> np.ndarray:
        """Mining score: rank of the cheap demosaicker's interior MSE plus rank of high-frequency energy."""
        err, hf = self._score_parts(*self._cheap(), m, rgb)
        return _ranks(err) + _ranks(hf)

    # --- access ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.mosaic)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(self.mosaic[i]), torch.from_numpy(self.rgb[i])

    def tensors(self, device: str | torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole set: ``(mosaic (N, 1, P, P), rgb (N, 3, P, P))``."""
        return torch.from_numpy(self.mosaic).to(device), torch.from_numpy(self.rgb).to(device)

    def subset(self, n: int) -> "PatchDataset":
        """The first ``n`` patches (a fixed subset, e.g. for fast selection training)."""
        sub = object.__new__(type(self))
        sub.__dict__.update(self.__dict__)
        sub.mosaic, sub.rgb = self.mosaic[:n], self.rgb[:n]
        return sub

    def batches(self, batch: int, seed: int = 0, epochs: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Shuffled minibatches, epoch after epoch (without replacement inside an epoch)."""
        rng = np.random.default_rng(seed)
        e = 0
        while epochs is None or e < epochs:
            perm = rng.permutation(len(self))
            for s in range(0, len(perm) - batch + 1 if len(perm) >= batch else 1, batch):
                idx = np.sort(perm[s : s + batch])
                yield torch.from_numpy(self.mosaic[idx]), torch.from_numpy(self.rgb[idx])
            e += 1
