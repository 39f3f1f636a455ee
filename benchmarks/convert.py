#!/usr/bin/env python
"""End to end: what ``rawdemosaic convert`` does to a 12 MP raw, beside LibRaw (rawpy) in the same run.

* Files: a Bayer (RGGB, 4000 x 3000, 14-bit) and an X-Trans (3996 x 3000, 12-bit) DNG rendered like
  ``sample_raws`` (``make_samples.scene`` + ``expose``: a colour chart, zone plate, dead leaves, text,
  shot and read noise) into a temporary directory.
* rawdemosaic, in process: ``read`` + ``develop(dtype="uint16")`` (camera WB, sRGB) + ``writers.write_image``
  (16-bit TIFF with ICC profile and EXIF), i.e. the work of ``rawdemosaic convert`` without the process start,
  with the kernel ``--budget`` 100 and 1000 pick, and the default (best) kernel. Its read / develop / write
  split is the median of each stage over the same runs.
* LibRaw (rawpy ``imread`` + ``postprocess``): its defaults (AHD, 8-bit, no file written); 16 bits + a TIFF
  written by tifffile; and its fastest demosaic, ``LINEAR``, 16 bits + TIFF. The TIFFs are flushed and
  fsynced as ``write_image`` does its own: without that, the next method in the round paid for writing
  back the previous one's 72 MB.
* Every method is timed in interleaved rounds (``_common.timed_rounds``), each round in a random order (the
  method run right after LibRaw lost 0.05 to 0.1 s in read and develop): median seconds of N runs, and MP/s.

    python benchmarks/convert.py            # rewrites the "convert" section of RESULTS.md and results_convert.json
    python benchmarks/convert.py --quick    # 3 MP, 2 runs; writes nothing unless --results/--json given
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

CONVERT_JSON = C.BENCH / "results_convert.json"
BUDGETS = (100.0, 1000.0, None)  # None: the default kernel (the best)


def _render(d: Path, h: int, w: int) -> dict[str, Path]:
    """The two DNGs, rendered as the sample raws are (same camera model, noise and scene parts)."""
    sys.path.insert(0, str(C.ROOT / "sample_raws"))
    import make_samples as M

    from rawdemosaic.cfa import CFA, CFAPattern
    from rawdemosaic.testing import write_dng

    rng = np.random.default_rng(7)
    common = dict(xyz_to_cam=M.XYZ_TO_CAM, as_shot_neutral=tuple(M.AS_SHOT_NEUTRAL), make="RawDemosaic", iso=200)
    bayer = write_dng(d / "bayer.dng", M.expose(M.scene(h, w, seed=1), "RGGB", 256, 16383, rng), "RGGB", 256, 16383, model="Synthetic Bayer", **common)
    wx = w - w % 6
    xt = CFAPattern(CFA.XTRANS, 0, 0)
    xtrans = write_dng(d / "xtrans.dng", M.expose(M.scene(h, wx, seed=2), xt, 64, 4095, rng), xt, 64, 4095, model="Synthetic X-Trans", **common)
    return {"bayer": bayer, "xtrans": xtrans}


def run(quick: bool = False, reps: int | None = None, log=print, size: tuple[int, int] | None = None, budgets=BUDGETS) -> dict:
    """Time every method on both files; ``size`` (h, w) overrides the 12 MP (``quick``: 3 MP) files."""
    import rawpy
    import tifffile

    import rawdemosaic
    from rawdemosaic.color import icc_profile
    from rawdemosaic.demosaic import choose
    from rawdemosaic.writers import exif_from_frame, write_image

    h, w = size or ((1500, 2000) if quick else (3000, 4000))
    reps = reps or (2 if quick else 7)
    info = C.machine_info({"rawpy": C._version("rawpy"), "halide": C._version("halide")})
    icc = icc_profile("srgb")
    rows = []
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        files = _render(d, h, w)
        for kind, path in files.items():
            frame = rawdemosaic.read(path)
            mp = frame.mosaic.shape[0] * frame.mosaic.shape[1] / 1e6
            picks = []
            for b in budgets:
                name = choose(frame.cfa, budget=b).name
                if name not in [n for _, n in picks]:
                    picks.append((b, name))
            stages: dict[str, dict[str, list]] = {}

            def ours(kern: str):
                st = stages.setdefault(kern, {"read": [], "develop": [], "write": []})

                def fn():
                    t = time.perf_counter()
                    f = rawdemosaic.read(path)
                    t1 = time.perf_counter()
                    img = rawdemosaic.develop(f, kernel=kern, dtype="uint16")
                    t2 = time.perf_counter()
                    write_image(d / "ours.tif", img, format="tiff", bits=16, icc=icc, exif=exif_from_frame(f), overwrite=True)
                    t3 = time.perf_counter()
                    st["read"].append(t1 - t)
                    st["develop"].append(t2 - t1)
                    st["write"].append(t3 - t2)

                return fn

            def libraw(**kw):
                def fn():
                    with rawpy.imread(str(path)) as r:
                        img = r.postprocess(**kw)
                    if kw.get("output_bps") == 16:  # written durably, as write_image does (flush + fsync)
                        with open(d / "libraw.tif", "wb") as fh:
                            tifffile.imwrite(fh, img)
                            fh.flush()
                            os.fsync(fh.fileno())

                return fn

            tasks = {f"rawdemosaic {k}": (ours(k), reps) for _, k in picks}
            tasks["rawpy default (AHD, 8-bit)"] = (libraw(), reps)
            tasks["rawpy AHD 16-bit + TIFF"] = (libraw(output_bps=16), reps)
            tasks["rawpy LINEAR 16-bit + TIFF"] = (libraw(output_bps=16, demosaic_algorithm=rawpy.DemosaicAlgorithm.LINEAR), reps)
            for k, (fn, _) in tasks.items():  # first use compiles kernels and finishing passes: not timed
                fn()
            for st in stages.values():
                for v in st.values():
                    v.clear()
            times = C.timed_rounds(tasks, warmup=0, shuffle=len(rows))
            for k, ts in times.items():
                med = float(np.median(ts))
                row = {"file": kind, "megapixels": round(mp, 2), "method": k, "median_s": med, "mps": mp / med, "times": [round(x, 4) for x in ts]}
                kern = k.removeprefix("rawdemosaic ") if k.startswith("rawdemosaic ") else None
                if kern:
                    info_k = next(e for e in rawdemosaic.kernels(frame.cfa.kind) if e.name == kern)
                    budget = next(b for b, n in picks if n == kern)  # the first budget that picked it (None: the default)
                    row.update(kernel=kern, cost=info_k.cost, budget=budget, stages={s: float(np.median(v)) for s, v in stages[kern].items()})
                rows.append(row)
                log(f"{kind} {k}: {med:.3f} s ({mp / med:.1f} MP/s)")
    return {"machine": info, "seconds": round(time.time() - t0, 1), "quick": quick or size is not None, "reps": reps, "rows": rows}


def render(doc: dict) -> str:
    lines = ["## End to end: converting a 12 MP raw" if not doc["quick"] else "## End to end (quick run)", ""]
    lines.append(f"{C.machine_line(doc['machine'])}.")
    lines.append("")
    lines.append(
        "`benchmarks/convert.py`: `read` + `develop(dtype=\"uint16\")` + 16-bit TIFF (ICC, EXIF), the work of `rawdemosaic convert`, "
        "for the kernels `--budget 100`, `--budget 1000` and the default pick, beside rawpy `imread` + `postprocess` in the same run "
        f"(interleaved rounds, each in a random order; median of {doc['reps']}). Synthetic DNGs rendered like `sample_raws`; "
        "LibRaw's TIFFs are fsynced like ours. The split is the median of each stage of rawdemosaic's runs."
    )
    lines.append("")
    rows = []
    for r in doc["rows"]:
        st = r.get("stages")
        split = f"{st['read']:.2f} / {st['develop']:.2f} / {st['write']:.2f}" if st else ""
        name = f"rawdemosaic `{r['kernel']}` ({r['cost']:g} ops/px)" if st else r["method"]
        rows.append([r["file"], f"{r['megapixels']:.1f}", name, f"{r['median_s']:.3f}", C.fmt_speed(r["mps"]), split])
    lines.append(C.md_table(["file", "MP", "method", "seconds", "MP/s", "read / develop / write (s)"], rows))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 MP files, 2 runs; writes nothing unless --results/--json")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--results", type=Path, default=None, help=f"markdown file to update (default {C.RESULTS_MD.name} unless --quick)")
    ap.add_argument("--json", type=Path, default=None, help=f"JSON output (default {CONVERT_JSON.name} unless --quick)")
    a = ap.parse_args(argv)
    doc = run(a.quick, a.reps, log=lambda m: print(m, file=sys.stderr, flush=True))
    md = a.results or (None if a.quick else C.RESULTS_MD)
    js = a.json or (None if a.quick else CONVERT_JSON)
    if js:
        C.write_json(js, doc)
    if md:
        C.update_results("convert", render(doc), md)
    print(render(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
