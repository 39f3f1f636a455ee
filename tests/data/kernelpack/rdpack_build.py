"""A minimal in-tree PEP 517 build backend for the test kernel packs.

It needs nothing but the standard library (the test environment has setuptools but not ``wheel``, so
setuptools cannot build wheels there). It builds a pure-Python wheel of the packages listed under
``[tool.rdpack] packages`` with the ``[project]`` name, version and entry points of ``pyproject.toml``.
"""

from __future__ import annotations

import base64
import hashlib
import tomllib
import zipfile
from pathlib import Path


def _config() -> dict:
    return tomllib.loads(Path("pyproject.toml").read_text())  # the frontend runs us in the source tree


def get_requires_for_build_wheel(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    cfg = _config()
    proj = cfg["project"]
    name, version = proj["name"], proj["version"]
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    files: list[tuple[str, bytes]] = []
    for pkg in cfg["tool"]["rdpack"]["packages"]:
        for f in sorted(Path(pkg).rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts:
                files.append((f.as_posix(), f.read_bytes()))
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: {proj.get('description', '')}\n"
    wheel = "Wheel-Version: 1.0\nGenerator: rdpack_build\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    eps = ""
    for group, items in proj.get("entry-points", {}).items():
        eps += f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in items.items()) + "\n"
    files += [(f"{info}/METADATA", meta.encode()), (f"{info}/WHEEL", wheel.encode()), (f"{info}/entry_points.txt", eps.encode())]
    record = []
    for arc, data in files:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{arc},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    files.append((f"{info}/RECORD", ("\n".join(record) + "\n").encode()))
    filename = f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(Path(wheel_directory) / filename, "w", zipfile.ZIP_DEFLATED) as z:
        for arc, data in files:
            z.writestr(arc, data)
    return filename
