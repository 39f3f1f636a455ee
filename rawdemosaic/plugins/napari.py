"""napari reader contribution (npe2): open camera raws as developed RGB image layers.

Declared in ``napari.yaml`` and registered through the ``napari.manifest`` entry point, so napari
finds it once rawdemosaic is installed; nothing here imports napari. The reader uses the settings of
:data:`rawdemosaic.plugins.pillow.options` (budget, kernel, white balance, colour space).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional, Union

from ..batch import RAW_EXTENSIONS

__all__ = ["get_reader", "read_raw"]

PathOrPaths = Union[str, os.PathLike, list]


def get_reader(path: PathOrPaths) -> Optional[Callable[[PathOrPaths], list]]:
    """napari's hook: a reader function for raw files, ``None`` for anything else."""
    paths = path if isinstance(path, list) else [path]
    if not paths or any(os.path.splitext(str(p))[1].lower() not in RAW_EXTENSIONS for p in paths):
        return None
    return read_raw


def read_raw(path: PathOrPaths) -> list[tuple[Any, dict, str]]:
    """Develop each raw into ``(data, layer kwargs, "image")`` (float32 RGB in [0, 1]); errors raise."""
    from ..develop import develop
    from ..raw import read
    from .pillow import options

    layers = []
    for p in path if isinstance(path, list) else [path]:
        frame = read(p)
        img = develop(frame, budget=options.budget, kernel=options.kernel, wb=options.wb, colorspace=options.colorspace, linear=options.linear, orient=options.orient, models=options.models)
        meta = {"camera": frame.camera, "cfa": frame.cfa.name, "iso": frame.iso, "exposure_time": frame.exposure_time}
        layers.append((img, {"name": os.path.basename(str(p)), "rgb": True, "contrast_limits": (0.0, 1.0), "metadata": meta}, "image"))
    return layers
