"""A rawdemosaic kernel pack (test fixture): its entry point returns the registry directory."""

from pathlib import Path


def registry_dir() -> Path:
    return Path(__file__).resolve().parent / "registry"
