"""Regenerate ``rdpack_demo/registry`` (run from this directory): rawdemosaic's classical bilinear Bayer
program under the name ``demo_pack_bilinear``. The quality figures are made up for the tests (between
those of the built-in ``bayer_bilinear`` and ``bayer_malvar``) so that budget selection can pick it."""

from dataclasses import replace
from pathlib import Path

from rawdemosaic.program.classical import bayer_bilinear
from rawdemosaic.registry import add_entry

prog = bayer_bilinear()
prog = replace(prog, name="demo_pack_bilinear", meta={**prog.meta, "description": "demo kernel pack (bilinear)"})
add_entry(
    prog,
    Path(__file__).resolve().parent / "rdpack_demo" / "registry",
    quality={"kodak24": 31.0, "mcmaster18": 33.0},
    description="demo kernel pack: bilinear Bayer (test fixture, quality figures not measured)",
    provenance={"source": "tests/data/kernelpack/make_registry.py", "copied_from": "bayer_bilinear"},
)
