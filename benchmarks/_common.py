"""Shared helpers of the benchmark scripts: peers, the quality protocol with padding, machine info, RESULTS.md.

Not part of the package: the scripts import it from their own directory. Peers take a float32 mosaic in
[0, 1] (the protocol's mosaic) and a :class:`rawdemosaic.CFAPattern` and return ``(H, W, 3)`` float32; each
quantises the mosaic to the depth it works in (OpenCV bilinear/EA and LibRaw: 16 bits; OpenCV VNG: 8 bits).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
if str(ROOT) not in sys.path:  # running from a source tree
    sys.path.insert(0, str(ROOT))

from rawdemosaic.cfa import CFA, CFAPattern, as_pattern, mosaic  # noqa: E402
from rawdemosaic.evaluate import cpsnr, linear_to_srgb, srgb_to_linear  # noqa: E402

RESULTS_MD = BENCH / "RESULTS.md"
QUALITY_JSON = BENCH / "results_quality.json"
SPEED_JSON = BENCH / "results_speed.json"
DEMOSAICNET_CACHE = BENCH / "cache_demosaicnet.json"
DROPPED = ROOT / "search" / "results" / "dropped"  # entries the monotone front dropped after results were published on them


def registry_entries() -> dict:
    """The registry's entries by name, and those of ``search/results/dropped`` (kept so that the published
    results measured on them can be re-run)."""
    import rawdemosaic
    from rawdemosaic.registry import load_registry

    out = {k.name: k for k in load_registry(DROPPED)} if (DROPPED / "registry.json").exists() else {}
    out.update({k.name: k for k in rawdemosaic.kernels(plugins=False)})
    return out

# ----------------------------------------------------------------------------------------------- machine


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(mod: str) -> Optional[str]:
    try:
        from importlib.metadata import version

        return version(mod)
    except Exception:  # noqa: BLE001
        return None


def git_commit() -> Optional[str]:
    """The checkout's commit, ``-dirty`` appended when tracked files differ from it (the figures would not
    reproduce at that commit alone)."""
    try:
        r = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
        head = r.stdout.strip()
        if not head:
            return None
        st = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=30)
        return head + ("-dirty" if st.stdout.strip() else "")
    except Exception:  # noqa: BLE001
        return None


def machine_info(extra_versions: Optional[dict] = None) -> dict:
    """Date, machine (cores, CPU model) and the versions of everything measured."""
    v = {
        "python": platform.python_version(),
        "numpy": _version("numpy"),
        "halide": _version("halide"),
        "opencv": _version("opencv-python-headless") or _version("opencv-python"),
        "rawpy": _version("rawpy"),
        "colour-demosaicing": _version("colour-demosaicing"),
        "rawdemosaic": _version("rawdemosaic"),
    }
    try:
        import rawpy

        v["libraw"] = ".".join(str(x) for x in rawpy.libraw_version)
    except Exception:  # noqa: BLE001
        pass
    if extra_versions:
        v.update(extra_versions)
    return {
        "date": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "cores": os.cpu_count(),
        "cpu": cpu_model(),
        "platform": f"{platform.system()} {platform.machine()}",
        "commit": git_commit(),
        "loadavg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "versions": {k: x for k, x in v.items() if x},
    }


def machine_line(info: dict) -> str:
    vers = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    load = f", load average {info['loadavg_1m']} at the start (other work shares this machine)" if info.get("loadavg_1m") is not None else ""
    return f"{info['date']} on {info['cores']} cores ({info['cpu']}, {info['platform']}){load}, commit {info.get('commit') or '?'}; {vers}"


# ------------------------------------------------------------------------------------------- RESULTS.md

_HEADER = (
    "# Benchmark results\n\n"
    "Written by `benchmarks/quality.py`, `benchmarks/speed.py` and `benchmarks/convert.py` (each rewrites its own section); "
    "the front is `benchmarks/front.png` (`benchmarks/plot_front.py`).\n"
)


def md_table(headers: list[str], rows: Iterable[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for r in rows:
        lines.append("| " + " | ".join("" if c is None else str(c) for c in r) + " |")
    return "\n".join(lines) + "\n"


_SECTIONS = ("quality", "speed", "check", "convert")  # RESULTS.md's sections, in order


def update_results(section: str, body: str, path: Path = RESULTS_MD) -> None:
    """Replace (or append) the ``section`` block of the results file, keeping the others."""
    path = Path(path)
    text = path.read_text() if path.exists() else _HEADER
    begin, end = f"<!-- {section}:begin -->", f"<!-- {section}:end -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        text = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _m: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    # keep a fixed order of the sections present (each script writes its own)
    found = {s: m for s in _SECTIONS if (m := re.search(rf"<!-- {s}:begin -->.*?<!-- {s}:end -->", text, flags=re.S))}
    if found:
        head = text[: min(m.start() for m in found.values())]
        text = head.rstrip() + "\n\n" + "\n\n".join(m.group(0) for m in found.values()) + "\n"
    _write_atomic(path, text)


def _write_atomic(path: Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def write_json(path: Path, doc: dict) -> None:
    _write_atomic(path, json.dumps(doc, indent=1, sort_keys=False) + "\n")


def write_page(path: Path, title: str, script: str, machine: dict, body: str) -> None:
    """A results page of its own (``# title``, who wrote it on which machine, ``body``), written atomically."""
    _write_atomic(path, f"# {title}\n\nWritten by `benchmarks/{script}`: {machine_line(machine)}.\n\n{body}\n")


def fmt(v, nd=2) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return ""
    return f"{v:.{nd}f}"


def fmt_speed(v) -> str:
    if v is None:
        return ""
    return f"{v:.3g}" if v < 10 else f"{v:.0f}"


# ------------------------------------------------------------------------------------------- protocol


def protocol_scores(fn: Callable[[np.ndarray, CFAPattern], np.ndarray], images: Iterable[np.ndarray], cfa, linear: bool = False, pad_to: Optional[int] = None) -> list[float]:
    """Per-image CPSNR with exactly the steps of :func:`rawdemosaic.evaluate.evaluate` (which returns their mean).

    ``pad_to``: reflect-pad the (domain) image to at least this many pixels each way, by multiples of the CFA
    period so that the original area keeps its phase, demosaic the larger mosaic and crop back (for LibRaw's
    X-Trans path, which fails on small images).
    """
    pat = as_pattern(cfa)
    out_scores = []
    for img in images:
        src = srgb_to_linear(img) if linear else img
        if pad_to:
            p = pat.period
            h, w = src.shape[:2]
            py = -(-max(0, pad_to - h) // (2 * p)) * p
            px = -(-max(0, pad_to - w) // (2 * p)) * p
            big = np.pad(src, ((py, py), (px, px), (0, 0)), mode="reflect") if (py or px) else src
            out = fn(mosaic(big, pat), pat)[py : py + h, px : px + w]
        else:
            out = fn(mosaic(src, pat), pat)
        if linear:
            out = linear_to_srgb(out)
        out_scores.append(cpsnr(out, img))
    return out_scores


def to_u16(m: np.ndarray) -> np.ndarray:
    return np.round(np.clip(m, 0, 1) * 65535.0).astype(np.uint16)


def to_u8(m: np.ndarray) -> np.ndarray:
    return np.round(np.clip(m, 0, 1) * 255.0).astype(np.uint8)


# ---------------------------------------------------------------------------------------------- peers

_CV_OLD = {"RGGB": "BG", "BGGR": "RG", "GRBG": "GB", "GBRG": "GR"}  # OpenCV < 5 names the 2nd row


def opencv_code(pat: CFAPattern, suffix: str = "") -> int:
    import cv2

    name = pat.name
    code = getattr(cv2, f"COLOR_Bayer{name}2RGB{suffix}", None)
    if code is None:
        code = getattr(cv2, f"COLOR_Bayer{_CV_OLD[name]}2RGB{suffix}")
    return code


def opencv_peer(kind: str) -> Callable:
    """OpenCV ``cv2.demosaicing``: ``bilinear`` and ``ea`` on uint16, ``vng`` on uint8 (its only depth)."""
    import cv2

    def run(m: np.ndarray, pat) -> np.ndarray:
        pat = as_pattern(pat)
        if kind == "vng":
            return cv2.demosaicing(to_u8(m), opencv_code(pat, "_VNG")).astype(np.float32) / 255.0
        code = opencv_code(pat, "_EA" if kind == "ea" else "")
        return cv2.demosaicing(to_u16(m), code).astype(np.float32) / 65535.0

    return run


LIBRAW_PARAMS = dict(no_auto_bright=True, output_bps=16, gamma=(1, 1), user_wb=[1.0, 1.0, 1.0, 1.0], adjust_maximum_thr=0, user_flip=0)


def libraw_postprocess(raw, algorithm: str) -> np.ndarray:
    import rawpy

    return raw.postprocess(demosaic_algorithm=getattr(rawpy.DemosaicAlgorithm, algorithm), output_color=rawpy.ColorSpace.raw, **LIBRAW_PARAMS)


def libraw_peer(algorithm: str, tmpdir: Optional[str] = None) -> Callable:
    """LibRaw through rawpy on a 16-bit DNG written by :func:`rawdemosaic.testing.write_dng`, identity colour."""
    import rawpy

    from rawdemosaic.testing import write_dng

    def run(m: np.ndarray, pat) -> np.ndarray:
        pat = as_pattern(pat)
        with tempfile.TemporaryDirectory(dir=tmpdir) as d:
            path = Path(d) / "m.dng"
            write_dng(path, to_u16(m), pat)
            with rawpy.imread(str(path)) as r:
                out = libraw_postprocess(r, algorithm)
        if out.shape[:2] != m.shape:
            raise RuntimeError(f"LibRaw {algorithm} returned {out.shape} for a {m.shape} mosaic")
        return out.astype(np.float32) / 65535.0

    return run


def colour_peer(kind: str) -> Callable:
    """colour-demosaicing's Bayer bilinear / Malvar 2004 / Menon 2007 (float64 throughout)."""
    import colour_demosaicing as cd

    f = {"bilinear": cd.demosaicing_CFA_Bayer_bilinear, "malvar": cd.demosaicing_CFA_Bayer_Malvar2004, "menon": cd.demosaicing_CFA_Bayer_Menon2007}[kind]

    def run(m: np.ndarray, pat) -> np.ndarray:
        return np.asarray(f(m.astype(np.float64), as_pattern(pat).name), np.float32)

    return run


def registry_fn(info, in_dtype: str = "float32", out_dtype: str = "float32", linear_io: bool = False) -> Callable:
    """A registry kernel as a protocol demosaicker: in its own domain (the sRGB protocol feeds it sRGB
    mosaics), or with ``linear_io`` as the converter runs it (linear light in and out)."""
    from rawdemosaic.program.compiler import Kernel

    k = Kernel(info.program(), in_dtype, out_dtype, quiet=True, linear_io=linear_io)

    def run(m: np.ndarray, pat) -> np.ndarray:
        return k(np.ascontiguousarray(m, np.float32), pat)

    return run


# ------------------------------------------------------------------------------------------ demosaicnet


def demosaicnet_python() -> Optional[str]:
    """An interpreter that imports demosaicnet: ``$DEMOSAICNET_PYTHON``, /tmp/dmnet_venv, or this one."""
    cands = [os.environ.get("DEMOSAICNET_PYTHON"), "/tmp/dmnet_venv/bin/python", sys.executable]
    for c in cands:
        if not c or not (Path(c).exists() or shutil.which(c)):
            continue
        r = subprocess.run([c, "-c", "import warnings; warnings.simplefilter('ignore'); import demosaicnet"], capture_output=True, text=True)
        if r.returncode == 0:
            return c
    return None


def run_demosaicnet(python: str, args: list[str], timeout: float = 3600) -> dict:
    """Run ``_demosaicnet_worker.py`` in the demosaicnet interpreter; it prints one JSON document."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("PYTHONWARNINGS", "ignore")
    r = subprocess.run([python, str(BENCH / "_demosaicnet_worker.py"), *args], capture_output=True, text=True, env=env, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"demosaicnet worker failed: {r.stderr.strip()[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def timed(fn: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def timed_rounds(tasks: dict[str, tuple[Callable[[], object], int]], warmup: int = 1, shuffle: Optional[int] = None) -> dict[str, list[float]]:
    """Time every ``key: (fn, repeats)`` in rounds: round ``r`` runs each task that still needs samples
    once, in order, so a task's samples spread over the whole run. On a shared machine whose speed drifts
    (steal time, other tenants), a method timed in one block can land in a quiet or a busy minute while
    its peer lands in the other; interleaved, both see the same drift and their medians compare.
    ``shuffle`` (a seed): each round in its own random order, for tasks that leave the machine in a state
    that slows the next one (LibRaw's postprocess slowed the read and develop after it by 0.05 to 0.1 s)."""
    for fn, _ in tasks.values():
        for _ in range(warmup):
            fn()
    out: dict[str, list[float]] = {k: [] for k in tasks}
    rng = np.random.default_rng(shuffle) if shuffle is not None else None
    for r in range(max((n for _, n in tasks.values()), default=0)):
        items = list(tasks.items())
        if rng is not None:
            items = [items[i] for i in rng.permutation(len(items))]
        for k, (fn, n) in items:
            if r < n:
                t = time.perf_counter()
                fn()
                out[k].append(time.perf_counter() - t)
    return out
