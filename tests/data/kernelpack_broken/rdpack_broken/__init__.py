"""Broken kernel-pack entry points (test fixture)."""

from pathlib import Path


def explode():
    raise RuntimeError("this kernel pack is broken on purpose")


def missing_dir() -> Path:
    return Path(__file__).resolve().parent / "no_such_registry"


def bad_registry() -> Path:
    return Path(__file__).resolve().parent / "bad_registry"  # registry.json lacks required fields
