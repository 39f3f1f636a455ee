"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def shared_data_dir() -> Path:
    """The project's shared data directory: ``$RAWDEMOSAIC_DATA`` or ``<repo>/../shared/data``."""
    env = os.environ.get("RAWDEMOSAIC_DATA")
    if env:
        return Path(env).expanduser().resolve()
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of the shared data directory (MANIFEST.tsv, raw/, test/, train/); skips when absent."""
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"shared data directory not found: {path} (set RAWDEMOSAIC_DATA)")
    return path
