"""Write a trained program into a registry directory, with its measured quality and provenance.

Quality is measured through the compiled Halide kernel with the protocol of
:func:`rawdemosaic.evaluate.evaluate`: per test set the sRGB-protocol CPSNR under the set's name (the number
the registry ranks by), the linear-light CPSNR as ``"<set>_linear"``, and on the fixed validation split of
the training corpus ``"val"`` / ``"val_linear"``. Other entries of the registry are kept.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from rawdemosaic.evaluate import TEST_SETS, load_images
from rawdemosaic.program.graph import Program
from rawdemosaic.registry import KernelInfo, add_entry

from .train import evaluate_program

__all__ = ["export_entry", "measure_quality"]


def _jsonable(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


def measure_quality(
    program: Program,
    sets: Sequence[str] = ("kodak24", "mcmaster18"),
    *,
    images: Mapping[str, Sequence[np.ndarray]] | None = None,
    val_images: Sequence[np.ndarray] | None = None,
    image_dirs: Sequence[str | Path] | None = None,
    validation: bool = True,
) -> dict[str, float]:
    """CPSNR of ``program`` (Halide kernel) per set, sRGB and linear-light protocols, plus the validation split.

    ``images`` overrides the loading of named sets (``{name: [sRGB images]}``); ``val_images`` the
    validation split (default: :func:`rawdemosaic.search.data.load_split` of ``image_dirs``).
    """
    q: dict[str, float] = {}
    for s in sets:
        imgs = images[s] if images is not None and s in images else load_images(TEST_SETS.get(s, s))
        q[s] = evaluate_program(program, imgs, linear=False)
        q[f"{s}_linear"] = evaluate_program(program, imgs, linear=True)
    if validation:
        if val_images is None:
            from .data import load_split

            val_images = load_split("val", image_dirs)
        q["val"] = evaluate_program(program, val_images, linear=False)
        q["val_linear"] = evaluate_program(program, val_images, linear=True)
    return q


def export_entry(
    program: Program,
    run_info: Mapping[str, Any],
    into_dir: str | Path,
    sets: Sequence[str] = ("kodak24", "mcmaster18"),
    *,
    description: str = "",
    quality: Mapping[str, float] | None = None,
    images: Mapping[str, Sequence[np.ndarray]] | None = None,
    val_images: Sequence[np.ndarray] | None = None,
    image_dirs: Sequence[str | Path] | None = None,
    validation: bool = True,
) -> KernelInfo:
    """Measure ``program`` and add it to the registry in ``into_dir`` (replacing only an entry of the same name).

    ``run_info`` goes into the entry's provenance (run dir, seed, config, generation, ...). ``quality``, if
    given, skips the measurement. The program is written as deployed: chains of affine convolutions folded
    (:func:`rawdemosaic.search.fold.deployed`; the same function, so ``quality`` still holds), the folded
    pairs recorded in the provenance as ``"folded"``.
    """
    from .fold import deployed

    program.shapes()
    folded = deployed(program)
    if folded is not program:
        program = Program(program.name, folded.cfa, folded.nodes, folded.output, folded.weights, program.meta, folded.ensemble)
        run_info = {**run_info, "folded": folded.meta["folded"]}
    q = dict(quality) if quality is not None else measure_quality(
        program, sets, images=images, val_images=val_images, image_dirs=image_dirs, validation=validation
    )
    provenance = {"source": "rawdemosaic.search", **_jsonable(dict(run_info)), "digest": program.digest()}
    json.dumps(provenance)  # fail before writing anything if it cannot be stored
    desc = description or program.meta.get("description", "") or f"searched {program.cfa.value} program, cost {program.cost():.4g} ops/pixel"
    return add_entry(program, into_dir, q, description=desc, provenance=provenance)
