"""Fixtures of the search tests: a tiny image corpus in a temporary data directory."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def tiny_data(tmp_path, monkeypatch):
    """``$RAWDEMOSAIC_DATA`` pointing at ``train/a`` (12 images), ``train/b`` (8) and ``test/t`` (2)."""
    from PIL import Image

    from rawdemosaic.search.data import synthetic_image

    rng = np.random.default_rng(0)
    for sub, n in (("train/a", 12), ("train/b", 8), ("test/t", 2)):
        d = tmp_path / sub
        d.mkdir(parents=True)
        for k in range(n):
            img = synthetic_image(72, rng)
            img = (np.clip(img, 0, 1) * 255).astype(np.uint8)[: 60 + k % 3 * 6, :]  # varied sizes
            Image.fromarray(img).save(d / f"img_{k:03d}.png")
    monkeypatch.setenv("RAWDEMOSAIC_DATA", str(tmp_path))
    return tmp_path
