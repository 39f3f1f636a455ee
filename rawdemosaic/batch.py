"""Batch conversion: plan outputs, convert files in isolated worker processes, account for every file.

Layout
------
* :class:`Options` holds every convert option (from defaults < recipe file < command line).
* :func:`plan` expands inputs (files, directories with ``recursive``, globs) into :class:`Task` s with
  output paths from a name template; nothing is touched.
* :func:`run` converts tasks and returns one :class:`Result` per task. Decoding never happens in the
  calling process: each file is converted in a spawned worker process (LibRaw with OpenMP deadlocks
  after ``fork``), so a file that crashes LibRaw kills only its worker. A crashed pool's unfinished files
  are retried one at a time in fresh single-worker pools, which pins the crash on the file that caused
  it; the others convert normally. With ``ray`` set, files are Ray tasks instead (local or cluster).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import datetime as _dt
import glob
import json
import math
import multiprocessing
import numbers
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

from .plugins import RAW_EXTENSIONS as _RAW_EXTENSIONS

__all__ = ["Options", "Task", "Result", "plan", "run", "load_recipe", "output_format", "parse_wb", "RAW_EXTENSIONS"]

#: What directories and globs expand to (the file names LibRaw's formats use; named files are always taken).
RAW_EXTENSIONS = frozenset(_RAW_EXTENSIONS)
_EXT = {"tiff": "tif", "png": "png", "jpeg": "jpg"}


@dataclass(frozen=True)
class Options:
    """Convert options (all keyword-compatible with a ``--recipe`` TOML file)."""

    budget: Optional[float] = None
    kernel: Optional[str] = None
    format: str = "tiff"
    bits: int = 16
    quality: int = 95
    compression: str = "none"
    wb: Any = "camera"
    colorspace: str = "srgb"
    linear: bool = False
    orient: bool = True
    overwrite: bool = False
    output: Optional[str] = None
    name: str = "{stem}.{ext}"
    jobs: int = 1
    recursive: bool = False
    models: Optional[str] = None

    @classmethod
    def merged(cls, *layers: dict) -> "Options":
        """Later layers override earlier ones; ``None`` values in a layer are ignored. Values are checked
        for type (a recipe's ``budget = "20"`` or ``overwrite = "no"`` is refused, not misread) and put in
        canonical form (``format = "TIF"`` is ``"tiff"``, ``wb = "2,1,1.5"`` the multipliers). JPEG's bits
        default to 8."""
        known = {f.name for f in dataclasses.fields(cls)}
        vals: dict[str, Any] = {}
        for layer in layers:
            for k, v in layer.items():
                if v is None:
                    continue
                if k not in known:
                    raise ValueError(f"unknown option {k!r} (known: {', '.join(sorted(known))})")
                vals[k] = _canonical(k, v)
        if vals.get("format") == "jpeg" and "bits" not in vals:
            vals["bits"] = 8  # JPEG's only depth is its default
        opts = cls(**vals)
        opts.validate()
        return opts

    def validate(self) -> None:
        for k, kinds in _TYPES.items():
            v = getattr(self, k)
            if not (v is None and k in _OPTIONAL) and (not isinstance(v, kinds) or (isinstance(v, bool) and bool not in kinds)):
                raise ValueError(f"option {k} takes {_TYPE_NAMES[kinds]}, got {v!r}")
        if self.format not in _EXT:
            from .plugins.writers import available_writers

            plugin_exts = sorted(e.lstrip(".") for e in available_writers())
            if self.format.lower().lstrip(".") not in plugin_exts:
                known = ", ".join(["tiff", "png", "jpeg", *plugin_exts])
                raise ValueError(f"unknown output format {self.format!r} (available: {known})")
        if self.bits not in (8, 16):
            raise ValueError(f"bits must be 8 or 16 (got {self.bits})")
        if self.format == "jpeg" and self.bits != 8:
            raise ValueError("JPEG holds 8 bits only: use --bits 8 (or --format tiff/png for 16-bit)")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"quality must be within 1..100 (got {self.quality})")
        if self.compression not in ("none", "zlib"):
            raise ValueError(f"compression must be none or zlib (got {self.compression!r})")
        if self.colorspace not in _COLORSPACES:
            raise ValueError(f"unknown colorspace {self.colorspace!r} (available: {', '.join(_COLORSPACES)})")
        if self.jobs < 1:
            raise ValueError(f"jobs must be >= 1 (got {self.jobs})")
        if self.budget is not None and not (math.isfinite(self.budget) and self.budget > 0):
            raise ValueError(f"budget must be a finite positive number of ops/pixel (got {self.budget})")
        parse_wb(self.wb)
        if self.models is not None and not (Path(self.models) / "registry.json").is_file():
            raise ValueError(f"{self.models}: not a kernel registry (no registry.json)")


_COLORSPACES = ("srgb", "adobe", "prophoto", "xyz", "raw")
_NUM, _STR, _BOOL, _INT = (numbers.Real,), (str,), (bool,), (numbers.Integral,)
_TYPES = {
    "budget": _NUM, "kernel": _STR, "format": _STR, "bits": _INT, "quality": _INT, "compression": _STR,
    "wb": (str, tuple), "colorspace": _STR, "linear": _BOOL, "orient": _BOOL, "overwrite": _BOOL,
    "output": _STR, "name": _STR, "jobs": _INT, "recursive": _BOOL, "models": _STR,
}  # fmt: skip
_TYPE_NAMES = {_NUM: "a number", _STR: "a string", _BOOL: "true or false", _INT: "an integer", (str, tuple): "camera, daylight or R,G,B[,G] multipliers"}
_OPTIONAL = {"budget", "kernel", "output", "models"}


def _canonical(key: str, value: Any) -> Any:
    """A value in the form :class:`Options` holds (types are checked by :meth:`Options.validate`)."""
    if key in ("output", "models") and isinstance(value, os.PathLike):
        return os.fspath(value)
    if key == "format" and isinstance(value, str):
        from .writers import _FORMAT_ALIASES

        v = value.strip().lower().lstrip(".")
        return _FORMAT_ALIASES.get(v, v)
    if key in ("colorspace", "compression") and isinstance(value, str):
        return value.strip().lower()
    if key == "wb" and not isinstance(value, bool):
        return parse_wb(value)
    return value


def parse_wb(value: Any) -> Any:
    """White balance as :func:`~rawdemosaic.develop` takes it: ``"camera"``, ``"daylight"`` or a tuple of 3 or
    4 positive multipliers, from those or from text such as ``"2,1,1.5"``.

    Raises
    ------
    ValueError
        Anything else.
    """
    bad = ValueError(f"white balance takes camera, daylight or 3 or 4 positive R,G,B[,G] multipliers, got {value!r}")
    if isinstance(value, str):
        t = value.strip().lower()
        if t in ("camera", "daylight"):
            return t
        try:
            value = [float(v) for v in t.split(",")]
        except ValueError:
            raise bad from None
    if not isinstance(value, (list, tuple)) or len(value) not in (3, 4):
        raise bad
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in value):
        raise bad
    return tuple(float(v) for v in value)


@dataclass(frozen=True)
class Task:
    input: str
    output: str


@dataclass
class Result:
    input: str
    output: str
    status: str  # "converted" | "skipped" | "failed" | "planned"
    reason: str = ""
    seconds: float = 0.0
    kernel: str = ""
    extra: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)  # what developing the file warned about, once each


def load_recipe(path: str | os.PathLike) -> dict:
    """Options from a TOML recipe (top-level keys, or a ``[convert]`` table)."""
    import tomllib

    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"{path}: cannot read recipe: {' '.join(str(e).split())}") from None
    return dict(doc.get("convert", doc))


# ------------------------------------------------------------------------------------------------
# Planning


def _expand(inputs: Sequence[str], recursive: bool) -> list[Path]:
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            it = p.rglob("*") if recursive else p.iterdir()
            files.extend(sorted(f for f in it if f.is_file() and f.suffix.lower() in RAW_EXTENSIONS))
        elif any(ch in item for ch in "*?["):
            matches = sorted(Path(m) for m in glob.glob(item, recursive=recursive))
            files.extend(m for m in matches if m.is_file() and m.suffix.lower() in RAW_EXTENSIONS)
        else:
            files.append(p)  # missing files are reported as failures, not silently dropped
    seen: set[str] = set()
    unique = []
    for f in files:
        key = os.path.abspath(f)
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def _template_fields(path: Path, ext: str, meta: Optional[dict] = None) -> dict:
    meta = meta or {}
    ts = meta.get("timestamp")
    date = _dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d") if ts else "nodate"
    from .frame import camera_name

    camera = camera_name(meta.get("make") or "", meta.get("model") or "") or "unknown"
    return {
        "stem": path.stem,
        "ext": ext,
        "suffix": path.suffix.lstrip("."),
        "parent": path.parent.name,
        "camera": camera.replace("/", "_").replace(" ", "_"),
        "make": (meta.get("make") or "unknown").replace("/", "_"),
        "model": (meta.get("model") or "unknown").replace("/", "_"),
        "date": date,
    }


def _needs_metadata(template: str) -> bool:
    return any(k in template for k in ("{camera}", "{make}", "{model}", "{date}"))


def _metadata(path: Path) -> dict:
    """Camera and date for name templates (cheap: LibRaw reads the headers, nothing is decoded here)."""
    try:
        from .raw import read_metadata

        return read_metadata(path)
    except Exception:  # noqa: BLE001 - a bad file fails later, with its reason, in the worker
        return {}


def output_format(path: str | os.PathLike) -> Optional[str]:
    """The output format a file name's suffix names (``"tiff"``, ``"png"``, ``"jpeg"`` or a writer plugin's
    extension without its dot), or ``None``: ``-o`` with such a suffix names a file, otherwise a directory."""
    from .writers import _SUFFIXES

    suffix = Path(path).suffix.lower()
    if suffix in _SUFFIXES:
        return _SUFFIXES[suffix]
    if suffix:
        from .plugins.writers import available_writers

        if suffix in available_writers():
            return suffix.lstrip(".")
    return None


def plan(inputs: Sequence[str], opts: Options) -> list[Task]:
    """Input files and their output paths (directories created at run time, not here).

    ``opts.output`` is one output file when its suffix names a format (:func:`output_format`) and it is not
    an existing directory, else the output directory (default: each input's own).

    Raises
    ------
    ValueError
        The plan would lose something, so nothing is converted: an output file for several inputs, or of
        another format than ``opts.format``; an ``output`` that exists and is neither a directory nor an
        image file; an output path that is one of the inputs (through links too); two inputs with one
        output path; a bad name template.
    """
    files = _expand(inputs, opts.recursive)
    ext = _EXT.get(opts.format, opts.format.lower().lstrip("."))
    out = Path(opts.output) if opts.output else None
    out_fmt = output_format(out) if out is not None and not out.is_dir() else None
    if out is not None and out_fmt is None and out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a directory (-o takes a directory, or an image file name for one input)")
    if out_fmt is not None:
        if len(files) > 1:
            raise ValueError(f"{out}: names one {out_fmt} file, but there are {len(files)} inputs (give a directory)")
        if out_fmt != opts.format:
            raise ValueError(f"{out}: the suffix says {out_fmt}, the format is {opts.format} (use --format {out_fmt}, or a .{ext} name)")
    tasks = []
    for f in files:
        if out_fmt is not None:
            dest = out
        else:
            fields = _template_fields(f, ext, _metadata(f) if _needs_metadata(opts.name) else None)
            try:
                name = opts.name.format(**fields)
            except (KeyError, IndexError, ValueError) as e:
                raise ValueError(f"bad name template {opts.name!r}: {e}") from None
            dest = (out if out is not None else f.parent) / name
        tasks.append(Task(str(f), str(dest)))
    _check_outputs(tasks, files)
    return tasks


def _check_outputs(tasks: Sequence[Task], files: Sequence[Path]) -> None:
    """Refuse a plan in which an output path is an input (its own or another's, also through symbolic or
    hard links) or two inputs share an output path."""
    inputs: dict[Any, Path] = {}
    for f in files:
        inputs[f.resolve()] = f
        try:
            st = f.stat()
            inputs[(st.st_dev, st.st_ino)] = f
        except OSError:
            pass  # a missing input fails later, with its reason
    seen: dict[Path, str] = {}
    for t in tasks:
        d = Path(t.output)
        key = d.resolve()
        src = inputs.get(key)
        if src is None:
            try:
                st = d.stat()
                src = inputs.get((st.st_dev, st.st_ino))
            except OSError:
                pass
        if src is not None:
            raise ValueError(f"{t.output}: the output of {t.input} would overwrite the input file {src}")
        if key in seen:
            raise ValueError(f"{t.output}: both {seen[key]} and {t.input} would be written there (give a --name template that tells them apart, e.g. {{parent}}_{{stem}}.{{ext}})")
        seen[key] = t.input


# ------------------------------------------------------------------------------------------------
# Converting one file (runs in a worker process)


def convert_one(task: Task, opts: Options) -> Result:
    """Read, develop and write one file; never raises for bad input (the result says why). Warnings
    (a file without a colour matrix, say) are collected into the result, which names the file."""
    from .develop import DevelopWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DevelopWarning)  # every file's own, not once per process
        res = _convert_one(task, opts)
    res.warnings = list(dict.fromkeys(_warning_text(w) for w in caught))
    return res


def _warning_text(w: warnings.WarningMessage) -> str:
    from .develop import DevelopWarning

    msg = " ".join(str(w.message).split())
    return msg if issubclass(w.category, DevelopWarning) else f"{w.category.__name__}: {msg}"


def _convert_one(task: Task, opts: Options) -> Result:
    t0 = time.perf_counter()
    src, dst = Path(task.input), Path(task.output)
    try:
        from . import color
        from .demosaic import choose
        from .develop import develop
        from .raw import read
        from .errors import OutputError
        from .writers import check_output_path, exif_from_frame, write_image

        check_output_path(dst, [src])
        if dst.is_dir():
            raise OutputError(f"{dst}: is a directory; the output of {src} cannot be written there")
        if dst.exists() and not opts.overwrite:
            return Result(task.input, task.output, "skipped", "output exists (use --overwrite)")
        with _decoder_stderr():
            frame = read(src)
        info = choose(frame.cfa, budget=opts.budget, kernel=opts.kernel, models=opts.models)
        # our writers take the codes develop rounds in its compiled pass; plugin writers get [0, 1] floats
        dtype = f"uint{opts.bits}" if opts.format in _EXT else "float32"
        img = develop(frame, budget=opts.budget, kernel=opts.kernel, wb=opts.wb, colorspace=opts.colorspace, linear=opts.linear, orient=opts.orient, models=opts.models, dtype=dtype)
        dst.parent.mkdir(parents=True, exist_ok=True)
        icc = color.icc_profile(opts.colorspace, linear=opts.linear, xyz_to_cam=frame.xyz_to_cam)
        if opts.format in _EXT:
            comp = opts.compression if opts.format == "tiff" else None
            write_image(dst, img, format=opts.format, bits=opts.bits, quality=opts.quality, icc=icc, exif=exif_from_frame(frame, opts.orient), overwrite=opts.overwrite, compression=comp)
        else:
            _write_plugin(dst, img, opts, icc, exif_from_frame(frame, opts.orient))
        return Result(task.input, task.output, "converted", seconds=time.perf_counter() - t0, kernel=info.name)
    except Exception as e:  # noqa: BLE001 - reported per file, the batch goes on
        msg = " ".join(str(e).split()) or type(e).__name__
        if task.input not in msg and src.name not in msg:
            msg = f"{task.input}: {msg}"
        return Result(task.input, task.output, "failed", msg, time.perf_counter() - t0)


def _write_plugin(dst: Path, img, opts: Options, icc: bytes, exif: dict) -> None:
    """Write with a ``rawdemosaic.writers`` plugin, atomically: a temporary name, then a rename."""
    import secrets

    from .plugins.writers import write_with_plugin

    tmp = dst.with_name(f".{dst.stem}.{secrets.token_hex(4)}.tmp{dst.suffix}")
    try:
        write_with_plugin(tmp, img, bits=opts.bits, quality=opts.quality, icc=icc, exif=exif)
        if dst.exists() and not opts.overwrite:
            raise FileExistsError(f"{dst}: appeared while writing; not replaced (use --overwrite)")
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def _worker_init(threads: int) -> None:
    global _QUIET_DECODER
    os.environ["HL_NUM_THREADS"] = str(threads)
    _QUIET_DECODER = True


_QUIET_DECODER = False  # True in worker processes, see _decoder_stderr


@contextlib.contextmanager
def _decoder_stderr() -> Iterator[None]:
    """In a worker process, hold back what the decoder (LibRaw: C code, file descriptor 2) prints while it
    reads a file: replayed if the read succeeds, dropped if it fails, whose one line already says why
    (``trunc.dng: Unexpected end of file`` would otherwise precede it). Elsewhere (the caller's process,
    where other threads may write) nothing is redirected."""
    if not _QUIET_DECODER:
        yield
        return
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    ok = False
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
            ok = True
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if ok:
                held.seek(0)
                data = held.read()
                if data:
                    os.write(2, data)


# ------------------------------------------------------------------------------------------------
# Running a batch


class _Progress:
    """A one-line progress bar on stderr: done/total, files/s, ETA."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled, self.done, self.t0 = total, enabled and total > 0, 0, time.perf_counter()
        self._width = 0  # of the longest line drawn

    def clear(self) -> None:
        if self.enabled and 0 < self.done < self.total:
            sys.stderr.write("\r" + " " * self._width + "\r")
            sys.stderr.flush()

    def step(self, result: Result) -> None:
        self.done += 1
        if not self.enabled:
            return
        dt = time.perf_counter() - self.t0
        rate = self.done / dt if dt > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        width = 24
        fill = int(width * self.done / self.total)
        line = f"[{'#' * fill}{'.' * (width - fill)}] {self.done}/{self.total} {rate:.2f} files/s ETA {eta:4.0f}s "
        self._width = max(self._width, len(line))
        sys.stderr.write("\r" + line)
        if self.done == self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def run(tasks: Sequence[Task], opts: Options, progress: bool = False, ray: Optional[str] = None, on_result: Optional[Callable[[Result], None]] = None, worker: Callable[[Task, Options], Result] = None) -> list[Result]:
    """Convert ``tasks``; results come back in task order.

    ``worker`` (default :func:`convert_one`) must be importable by name from a spawned process.
    """
    worker = worker or convert_one
    bar = _Progress(len(tasks), progress)

    def done(r: Result) -> None:
        if on_result:
            bar.clear()  # messages start on a line of their own, the bar is drawn again below them
            on_result(r)
        bar.step(r)

    if not tasks:
        return []
    if ray:
        results = _run_ray(tasks, opts, ray, done, worker)
    else:
        results = _run_pool(tasks, opts, done, worker)
    return [results[i] for i in range(len(tasks))]


def _pool(workers: int, cores: int) -> cf.ProcessPoolExecutor:
    return cf.ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_worker_init,
        initargs=(max(1, cores // workers),),
    )


def _run_pool(tasks: Sequence[Task], opts: Options, done: Callable[[Result], None], worker) -> dict[int, Result]:
    cores = os.cpu_count() or 1
    workers = min(opts.jobs, len(tasks))
    results: dict[int, Result] = {}
    suspects: list[int] = []
    with _pool(workers, cores) as ex:
        futs = {ex.submit(worker, t, opts): i for i, t in enumerate(tasks)}
        for fut in cf.as_completed(futs):
            i = futs[fut]
            try:
                results[i] = fut.result()
                done(results[i])
            except cf.process.BrokenProcessPool:
                suspects.append(i)
    # a worker died (crash in a decoder): retry each unfinished file alone to find the culprit(s)
    for i in sorted(suspects):
        with _pool(1, cores) as ex:
            try:
                results[i] = ex.submit(worker, tasks[i], opts).result()
            except cf.process.BrokenProcessPool:
                results[i] = Result(tasks[i].input, tasks[i].output, "failed", f"{tasks[i].input}: the decoder crashed (worker process died)")
        done(results[i])
    return results


def _run_ray(tasks: Sequence[Task], opts: Options, address: str, done: Callable[[Result], None], worker) -> dict[int, Result]:
    try:
        import ray
    except ImportError:
        raise RuntimeError("--ray needs Ray: pip install 'ray[default]'") from None
    if not ray.is_initialized():
        ray.init(address=None if address == "local" else address, ignore_reinit_error=True, log_to_driver=False)
    remote = ray.remote(max_retries=0)(worker)
    refs = {remote.remote(t, opts): i for i, t in enumerate(tasks)}
    results: dict[int, Result] = {}
    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        ref = ready[0]
        i = refs[ref]
        try:
            results[i] = ray.get(ref)
        except Exception as e:  # noqa: BLE001 - a crashed Ray worker costs only its file
            reason = " ".join(str(e).split())[:200]
            results[i] = Result(tasks[i].input, tasks[i].output, "failed", f"{tasks[i].input}: worker failed: {reason}")
        done(results[i])
    return results


def summary(results: Iterable[Result], seconds: float) -> str:
    rs = list(results)
    n = {s: sum(r.status == s for r in rs) for s in ("converted", "skipped", "failed")}
    return f"converted {n['converted']}, skipped {n['skipped']}, failed {n['failed']} in {seconds:.1f} s"


def write_report(path: str | os.PathLike, results: Iterable[Result], seconds: float) -> None:
    rs = [dataclasses.asdict(r) for r in results]
    doc = {
        "summary": {s: sum(r["status"] == s for r in rs) for s in ("converted", "skipped", "failed", "planned")},
        "seconds": round(seconds, 3),
        "files": rs,
    }
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(p)
