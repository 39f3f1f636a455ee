"""The ``rawdemosaic`` command line: convert, info, kernels, search.

Every failure a user can cause prints one line ``rawdemosaic: <file>: <reason>`` to stderr and gives a
non-zero exit status; ``convert`` exits 0 only if every file converted (or was skipped as existing).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Optional, Sequence

from . import __version__
from .errors import RawDemosaicError

__all__ = ["main"]


def _wb(text: str):
    from .batch import parse_wb

    try:
        return parse_wb(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--wb: {e}") from None


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="rawdemosaic", description="Develop camera raw files with searched, Halide-compiled demosaicking kernels.")
    ap.add_argument("--version", action="version", version=f"rawdemosaic {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    # convert: option defaults are None so a --recipe can fill them; Options holds the real defaults
    c = sub.add_parser("convert", help="convert raw files to TIFF/PNG/JPEG")
    c.add_argument("inputs", nargs="+", help="raw files, directories or globs")
    c.add_argument("-o", "--output", help="output directory, or for one input a file (its suffix sets the format)")
    c.add_argument("-r", "--recursive", action="store_true", default=None, help="recurse into directories")
    g = c.add_mutually_exclusive_group()
    g.add_argument("--budget", type=float, help="cost budget in ops/pixel: best kernel that fits")
    g.add_argument("--kernel", help="use this registry kernel")
    c.add_argument("--format", help="output format: tiff (default), png, jpeg, or one a rawdemosaic.writers plugin adds")
    c.add_argument("--bits", type=int, choices=[8, 16], help="bits per sample (default 16; JPEG 8)")
    c.add_argument("--quality", type=int, help="JPEG quality 1..100 (default 95)")
    c.add_argument("--compression", choices=["none", "zlib"], help="TIFF compression (default none: fastest)")
    c.add_argument("--wb", type=_wb, help="white balance: camera (default), daylight or R,G,B[,G]")
    c.add_argument("--colorspace", choices=["srgb", "adobe", "prophoto", "xyz", "raw"], help="output colour space (default srgb)")
    c.add_argument("--linear", action="store_true", default=None, help="linear transfer curve (no gamma)")
    c.add_argument("--no-orient", dest="orient", action="store_false", default=None, help="keep the sensor orientation")
    c.add_argument("--overwrite", action="store_true", default=None, help="replace existing outputs")
    c.add_argument("--name", help="output name template: {stem} {ext} {suffix} {camera} {make} {model} {date} {parent}")
    c.add_argument("-j", "--jobs", type=int, help="parallel worker processes (default 1)")
    c.add_argument("--dry-run", action="store_true", help="show what would be written, write nothing")
    c.add_argument("--report", help="write a JSON report of every file")
    c.add_argument("--recipe", help="TOML file of convert options (command-line options override it)")
    c.add_argument("--ray", metavar="auto|ADDRESS", help="distribute files over Ray (auto: local or RAY_ADDRESS)")
    c.add_argument("--models", help="registry directory (default: built-in or $RAWDEMOSAIC_MODELS)")
    c.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help="progress bar (default: when stderr is a terminal)")

    i = sub.add_parser("info", help="describe raw files: camera, size, CFA, levels, white balance")
    i.add_argument("files", nargs="+")

    k = sub.add_parser("kernels", help="list the kernel registry, or build it")
    k.add_argument("action", nargs="?", choices=["list", "build"], default="list")
    k.add_argument("--cfa", choices=["bayer", "xtrans"])
    k.add_argument("--bench", action="store_true", help="measure throughput on this machine (MP/s, 12 MP uint16)")
    k.add_argument("--models", help="registry directory")

    s = sub.add_parser("search", help="offline kernel search (needs the [search] extra)", add_help=False)
    s.add_argument("rest", nargs=argparse.REMAINDER)
    return ap


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    if argv and argv[0] == "search":
        try:
            from .search.cli import main as search_main  # the [search] extra: torch, ray
        except ImportError as e:
            return _fail(f"the search needs the [search] extra (pip install 'rawdemosaic[search]'): {e}")
        return int(search_main(argv[1:]) or 0)
    args = _parser().parse_args(argv)
    try:
        if args.command == "convert":
            return _convert(args)
        if args.command == "info":
            return _info(args)
        if args.command == "kernels":
            return _kernels(args)
    except (RawDemosaicError, ValueError, OSError) as e:
        return _fail(str(e))
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    return 2  # pragma: no cover


def _fail(msg: str, code: int = 1) -> int:
    print(f"rawdemosaic: {' '.join(msg.split())}", file=sys.stderr)
    return code


# ------------------------------------------------------------------------------------------------


def _convert(args) -> int:
    from .batch import Options, load_recipe, output_format, plan, run, summary, write_report

    recipe = load_recipe(args.recipe) if args.recipe else {}
    cli = {
        k: getattr(args, k)
        for k in ("output", "recursive", "budget", "kernel", "format", "bits", "quality", "compression", "wb", "colorspace", "linear", "orient", "overwrite", "name", "jobs", "models")
    }
    out = cli.get("output") or recipe.get("output")
    if cli.get("format") is None and recipe.get("format") is None and isinstance(out, str) and not os.path.isdir(out):
        cli["format"] = output_format(out)  # -o photo.png: PNG (plan() checks it is one file)
    if cli.get("budget") is not None or cli.get("kernel") is not None:  # CLI choice of kernel wins as a whole
        recipe.pop("budget", None)
        recipe.pop("kernel", None)
    opts = Options.merged(recipe, cli)
    tasks = plan(args.inputs, opts)
    if not tasks:
        return _fail("no input files found")
    t0 = time.perf_counter()
    if args.dry_run:
        from .batch import Result

        for t in tasks:
            print(f"{t.input} -> {t.output}")
        results = [Result(t.input, t.output, "planned") for t in tasks]
        print(f"dry run: {len(tasks)} file(s) planned, nothing written")
        if args.report:
            write_report(args.report, results, 0.0)
        return 0

    def report(r) -> None:
        for w in r.warnings:
            print(f"rawdemosaic: warning: {r.input}: {w}", file=sys.stderr)
        if r.status == "failed":
            print(f"rawdemosaic: {r.reason}", file=sys.stderr)
        elif r.status == "skipped":
            print(f"skipped {r.input}: {r.reason}", file=sys.stderr)

    progress = args.progress if args.progress is not None else sys.stderr.isatty()
    ray = None
    if args.ray:
        ray = os.environ.get("RAY_ADDRESS", "local") if args.ray == "auto" else args.ray
    results = run(tasks, opts, progress=progress, ray=ray, on_result=report)
    dt = time.perf_counter() - t0
    if args.report:
        write_report(args.report, results, dt)
    print(summary(results, dt))
    return 0 if all(r.status != "failed" for r in results) else 1


def _info(args) -> int:
    from .raw import read

    status = 0
    for path in args.files:
        try:
            f = read(path)
        except RawDemosaicError as e:
            status = _fail(str(e))
            continue
        h, w = f.shape
        cam = f.camera or "unknown camera"
        wb = lambda v: "n/a" if v is None else ", ".join(f"{x:.3f}" for x in v)  # noqa: E731
        rows = [
            ("file", path),
            ("camera", cam),
            ("size", f"{w} x {h}"),
            ("cfa", f"{f.cfa.name} (phase dy={f.cfa.dy}, dx={f.cfa.dx} from canonical)"),
            ("black", ", ".join(f"{b:g}" for b in sorted(set(f.black_level)))),
            ("white", f"{f.white_level:g}"),
            ("wb as shot", wb(f.wb_as_shot)),
            ("wb daylight", wb(f.wb_daylight)),
            ("colour matrix", "yes" if f.xyz_to_cam is not None else "none (camera colours)"),
            ("orientation", str(f.orientation)),
            ("iso", f"{f.iso:g}" if f.iso else "n/a"),
            ("exposure", f"{f.exposure_time:g} s" if f.exposure_time else "n/a"),
        ]
        for k, v in rows:
            print(f"{k:14s} {v}")
        print()
    return status


def _kernels(args) -> int:
    from .demosaic import get_kernel
    from .registry import kernels

    entries = kernels(args.cfa, models=args.models)
    if args.action == "build":
        for e in entries:
            for dt in ("float32", "uint16"):
                k = get_kernel(e, dt, dt)
                cached = k.is_cached()
                k.build()
                print(f"{e.name:28s} {dt:8s} {'cached' if cached else 'built'}  {k.path}")
        from .program.finish import CURVES, Finisher

        # develop's finishing passes (matrix, clip, curve, rounding): one per distinct curve and output type
        spaces: dict = {}
        for space, curve in CURVES.items():
            spaces.setdefault(curve, space)
        for curve, space in spaces.items():
            for dt in ("float32", "uint16", "uint8"):
                f = Finisher(curve, dt)
                cached = f.is_cached()
                f.build()
                print(f"{'finish ' + ('linear' if curve is None else space):28s} {dt:8s} {'cached' if cached else 'built'}  {f.path}")
        return 0
    mps = {}
    if args.bench:
        mps = _bench(entries)
    head = f"{'name':28s} {'cfa':7s} {'cost':>8s} {'kodak24':>8s} {'mcm18':>8s}" + (f" {'MP/s':>8s}" if mps else "") + "  source"
    print(head)
    print("-" * len(head))
    for e in entries:
        q = lambda s: f"{e.quality[s]:8.2f}" if s in e.quality else f"{'-':>8s}"  # noqa: E731
        line = f"{e.name:28s} {e.cfa.value:7s} {e.cost:8.1f} {q('kodak24')} {q('mcmaster18')}"
        if mps:
            line += f" {mps[e.name]:8.0f}"
        print(line + f"  {e.source}")
    return 0


def _bench(entries, size=(3000, 4000), repeats=5) -> dict:
    import numpy as np

    from .cfa import as_pattern
    from .demosaic import get_kernel

    rng = np.random.default_rng(0)
    m = (rng.random(size) * 65535).astype(np.uint16)
    out = np.empty((*size, 3), np.uint16)
    res = {}
    for e in entries:
        k = get_kernel(e, "uint16", "uint16")
        pat = as_pattern(e.cfa)
        k(m, pat, out=out)
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            k(m, pat, out=out)
            ts.append(time.perf_counter() - t)
        res[e.name] = size[0] * size[1] / sorted(ts)[len(ts) // 2] / 1e6
    return res


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
