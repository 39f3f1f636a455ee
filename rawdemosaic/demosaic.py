"""TEMPORARY placeholder (numpy bilinear) so develop/CLI work can proceed; replaced by the Halide path."""
from __future__ import annotations

import numpy as np

from .cfa import as_pattern

__all__ = ["demosaic"]


def demosaic(mosaic, cfa, budget=None, kernel=None, models=None):
    pat = as_pattern(cfa).pattern
    m = np.asarray(mosaic, np.float32)
    h, w = m.shape
    p = pat.shape[0]
    idx = np.tile(pat, (-(-h // p), -(-w // p)))[:h, :w]
    out = np.zeros((h, w, 3), np.float32)
    from scipy.ndimage import convolve

    k = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], np.float32)
    for c in range(3):
        mask = (idx == c).astype(np.float32)
        num = convolve(m * mask, k, mode="mirror")
        den = convolve(mask, k, mode="mirror")
        out[..., c] = np.where(mask > 0, m, num / np.maximum(den, 1e-6))
    return out
