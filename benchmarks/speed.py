#!/usr/bin/env python
"""Throughput of every registry kernel beside the peers, measured in the same run.

* A 12 MP mosaic (3000 x 4000 Bayer RGGB; X-Trans 3000 x 3996, the nearest multiple of its 6 px period) cut
  from the tiled Kodak24 images (random data if the test set is absent).
* Registry kernels (Bayer and X-Trans) with uint16 in/out and float32 in/out, ``out=`` preallocated: median of
  N runs after a warm-up, in MP/s. As the converter runs them (linear light in and out: a kernel trained on
  gamma-encoded data, sRGB or ``gamma2``, encodes and decodes inside), and those also uint16 as the quality
  protocol scores them (the sRGB-encoded mosaic in, no transfer: the input every peer gets).
* Every in-process method (OpenCV, the kernels, LibRaw, colour-demosaicing) is timed in interleaved rounds,
  each round running every method once, so a kernel and the peer it is compared with see the same drift of a
  shared machine (``_common.timed_rounds``).
* OpenCV ``cv2.demosaicing``: bilinear and edge-aware on uint16, VNG on 8 bits (its only depth), ``dst``
  preallocated. LibRaw (rawpy): opening an uncompressed 16-bit DNG of the same mosaic plus ``postprocess``
  (LINEAR, VNG, PPG, AHD, AAHD; X-Trans: its own code, PPG = 1-pass and AHD = 3-pass Markesteijn) with
  ``no_auto_bright``, 16 bits, gamma 1, unit WB, raw colour, ``adjust_maximum_thr=0``. colour-demosaicing
  bilinear / Malvar 2004 / Menon 2007 and demosaicnet on smaller crops, scaled to MP/s (they are slow).
* Ratios against OpenCV bilinear (uint16) of the same run.
* End to end: the ``rawdemosaic convert`` work through the Python API (``read`` + ``develop`` to uint16 + a 16-bit
  TIFF with ICC profile and EXIF via ``writers.write_image``) on ``sample_raws/bayer_rggb.dng`` (and the X-Trans
  sample), beside ``rawpy`` ``imread`` + ``postprocess()`` with its defaults (AHD) on the same file.

    python benchmarks/speed.py            # full run: rewrites benchmarks/RESULTS.md and results_speed.json
    python benchmarks/speed.py --quick    # 1.5 MP, fewer repeats; writes nothing unless --results/--json given
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from math import lcm
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

from rawdemosaic.cfa import CFA, CFAPattern, mosaic  # noqa: E402

BAYER = CFAPattern(CFA.BAYER, 0, 0)
XTRANS = CFAPattern(CFA.XTRANS, 0, 0)
LIBRAW_ALGOS = {"bayer": ["LINEAR", "VNG", "PPG", "AHD", "AAHD"], "xtrans": ["LINEAR", "VNG", "PPG", "AHD"]}
LIBRAW_LABEL = {"LINEAR": "LibRaw linear", "VNG": "LibRaw VNG", "PPG": "LibRaw PPG", "AHD": "LibRaw AHD", "AAHD": "LibRaw AAHD"}
LIBRAW_XT_LABEL = {"PPG": "LibRaw PPG (1-pass Markesteijn)", "AHD": "LibRaw AHD (3-pass Markesteijn)"}


def test_rgb(h: int, w: int) -> np.ndarray:
    """(h, w, 3) uint8: Kodak24 images (portraits turned) tiled row by row; random data without the test set."""
    try:
        from rawdemosaic.evaluate import load_images

        imgs = [np.round(i * 255).astype(np.uint8) for i in load_images("test/kodak24")]
    except Exception:  # noqa: BLE001
        return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    imgs = [i if i.shape[0] <= i.shape[1] else i.transpose(1, 0, 2) for i in imgs]
    th, tw = imgs[0].shape[:2]
    out = np.empty((h, w, 3), np.uint8)
    k = 0
    for y in range(0, h, th):
        for x in range(0, w, tw):
            t = imgs[k % len(imgs)]
            k += 1
            out[y : y + th, x : x + tw] = t[: h - y, : w - x]
    return out


def row(rows, log, id, label, cfa, kind, dtype, shape, times, base=None, **extra):
    med = float(np.median(times))
    mp = shape[0] * shape[1] / 1e6
    r = {"id": id, "label": label, "cfa": cfa, "kind": kind, "dtype": dtype, "shape": list(shape), "times": [round(t, 6) for t in times], "median_s": med, "mps": mp / med}
    r.update(extra)
    rows.append(r)
    log(f"{label:44s} {cfa:6s} {dtype:14s} {shape[0]}x{shape[1]}  {med * 1e3:9.2f} ms  {r['mps']:9.2f} MP/s")
    return r


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats; results files only when named")
    ap.add_argument("--size", default=None, help="mosaic HxW (default 3000x4000; 1000x1500 with --quick)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per fast method (default 9; 3 with --quick)")
    ap.add_argument("--slow-repeats", type=int, default=None, help="timed runs for LibRaw / colour-demosaicing / demosaicnet (default 3; 1 with --quick)")
    ap.add_argument("--crop", type=int, default=None, help="square crop for colour-demosaicing (default 1024; 256 with --quick)")
    ap.add_argument("--dn-crop", type=int, default=None, help="square crop for demosaicnet (default 512; 128 with --quick)")
    ap.add_argument("--only", default=None, help="comma-separated registry kernels to time (default: all; the end-to-end "
                    "rows then use the first one of each CFA)")
    ap.add_argument("--no-libraw", action="store_true")
    ap.add_argument("--no-colour", action="store_true")
    ap.add_argument("--no-demosaicnet", action="store_true")
    ap.add_argument("--no-e2e", action="store_true")
    ap.add_argument("--json", type=Path, default=None, help=f"write the results here (full run default: {C.SPEED_JSON.name}; quick and partial runs: none)")
    ap.add_argument("--results", type=Path, default=None, help=f"markdown file to update (full run default: {C.RESULTS_MD.name}; quick and partial runs: none)")
    a = ap.parse_args(argv)
    h, w = map(int, (a.size or ("1000x1500" if a.quick else "3000x4000")).lower().split("x"))
    reps = a.repeats or (3 if a.quick else 9)
    sreps = a.slow_repeats or (1 if a.quick else 3)
    crop = a.crop or (256 if a.quick else 1024)
    dn_crop = a.dn_crop or (128 if a.quick else 512)
    # a quick or partial run (--only, --no-...) never replaces the full run's files unless they are named
    partial = a.quick or a.only or a.no_libraw or a.no_colour or a.no_demosaicnet or a.no_e2e
    json_path = a.json if a.json is not None else (None if partial else C.SPEED_JSON)
    md_path = a.results if a.results is not None else (None if partial else C.RESULTS_MD)
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    t_start = time.perf_counter()

    import cv2

    import rawdemosaic
    from rawdemosaic.demosaic import get_kernel
    from rawdemosaic.program.compiler import Kernel

    infos = rawdemosaic.kernels()
    if a.only:
        keep = {x.strip() for x in a.only.split(",")}
        infos = [i for i in infos if i.name in keep]
    progs = {i.name: i.program() for i in infos}  # loaded once
    align = {c: lcm(c_.period, *[progs[i.name].lcm_scale() for i in infos if i.cfa is c_]) for c, c_ in (("bayer", CFA.BAYER), ("xtrans", CFA.XTRANS))}
    shapes = {c: (h // align[c] * align[c], w // align[c] * align[c]) for c in align}
    rgb = test_rgb(max(s[0] for s in shapes.values()), max(s[1] for s in shapes.values()))
    pats = {"bayer": BAYER, "xtrans": XTRANS}
    m16 = {c: mosaic(rgb[: shapes[c][0], : shapes[c][1]], pats[c]).astype(np.uint16) * np.uint16(257) for c in shapes}
    m32 = {c: m16[c].astype(np.float32) / np.float32(65535) for c in shapes}
    m8 = {"bayer": mosaic(rgb[: shapes["bayer"][0], : shapes["bayer"][1]], BAYER).astype(np.uint8)}
    del rgb
    rows: list[dict] = []

    # Every in-process method is timed in interleaved rounds (``C.timed_rounds``): fast ones ``reps``
    # times, LibRaw and colour-demosaicing ``sreps`` times (in the first rounds), so a peer and the kernels
    # it is compared with see the same drift of this shared machine. Each task runs once on registration
    # (the warm-up; kernels compile there), and its row is written in the order registered.
    tasks: dict[str, tuple] = {}
    pending: list[tuple[str, tuple, dict]] = []

    def task(key, fn, n, *row_args, **extra) -> None:
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - LibRaw's X-Trans code fails on small images
            log(f"{row_args[1]} {row_args[2]} {row_args[5]}: failed ({e}), skipped")
            return
        tasks[key] = (fn, n)
        pending.append((key, row_args, extra))

    # ---- OpenCV
    hb, wb = shapes["bayer"]
    dst16 = np.empty((hb, wb, 3), np.uint16)
    dst8 = np.empty((hb, wb, 3), np.uint8)
    for pid, label, src, dst, suffix in (
        ("opencv_bilinear", "OpenCV bilinear", m16["bayer"], dst16, ""),
        ("opencv_ea", "OpenCV edge-aware", m16["bayer"], dst16, "_EA"),
        ("opencv_vng", "OpenCV VNG (8-bit only)", m8["bayer"], dst8, "_VNG"),
    ):
        code = C.opencv_code(BAYER, suffix)
        task(pid, lambda src=src, code=code, dst=dst: cv2.demosaicing(src, code, dst=dst), reps,
             pid, label, "bayer", "peer", f"{src.dtype.name} -> {dst.dtype.name}", (hb, wb))

    # the same without a preallocated destination (OpenCV allocates and first-touches 72 MB per call)
    task("opencv_bilinear_alloc", lambda: cv2.demosaicing(m16["bayer"], C.opencv_code(BAYER)), reps,
         "opencv_bilinear_alloc", "OpenCV bilinear, new dst per call", "bayer", "peer", "uint16 -> uint16", (hb, wb), note="no dst=")

    # ---- registry kernels (one output array per CFA and dtype, shared by the kernels)
    cheapest = {}
    for info in infos:
        cheapest.setdefault(info.cfa.value, info)
    outs = {}
    for info in infos:
        c = info.cfa.value
        for tag, dt, src in (("u16", "uint16", m16[c]), ("f32", "float32", m32[c])):
            k = get_kernel(info, dt, dt)
            out = outs.setdefault((c, dt), np.empty(src.shape + (3,), np.dtype(dt)))
            direct = k(src, pats[c], out=out) is out  # the kernel wrote straight into `out` (no copy)
            task(f"{info.name}:{tag}", lambda k=k, src=src, c=c, out=out: k(src, pats[c], out=out), reps,
                 f"{info.name}:{tag}", info.name, c, "registry", f"{dt} -> {dt}", src.shape, cost=info.cost, kernel=info.name, direct_out=direct)
        if progs[info.name].domain != "linear":  # as the quality protocol runs it: the sRGB mosaic itself, no transfer
            k = Kernel(progs[info.name], "uint16", "uint16", quiet=True)
            out = outs[(c, "uint16")]
            task(f"{info.name}:u16_srgb", lambda k=k, c=c, out=out: k(m16[c], pats[c], out=out), reps,
                 f"{info.name}:u16_srgb", info.name, c, "registry", "uint16 -> uint16", m16[c].shape, cost=info.cost, kernel=info.name, note="sRGB in and out")
        if info is cheapest.get(c):
            k = get_kernel(info, "uint16", "uint16")
            task(f"{info.name}:u16_alloc", lambda k=k, c=c: k(m16[c], pats[c]), reps,
                 f"{info.name}:u16_alloc", info.name, c, "registry", "uint16 -> uint16", m16[c].shape, cost=info.cost, kernel=info.name, note="new output per call (no out=)")

    with tempfile.TemporaryDirectory() as d:
        # ---- LibRaw
        if not a.no_libraw:
            import rawpy

            from rawdemosaic.testing import write_dng

            for c in ("bayer", "xtrans"):
                path = Path(d) / f"{c}.dng"
                write_dng(path, m16[c], pats[c])
                for alg in LIBRAW_ALGOS[c]:
                    def run(path=path, alg=alg):
                        with rawpy.imread(str(path)) as r:
                            return C.libraw_postprocess(r, alg)

                    label = LIBRAW_XT_LABEL.get(alg, LIBRAW_LABEL[alg]) if c == "xtrans" else LIBRAW_LABEL[alg]
                    task(f"libraw_{alg.lower()}:{c}", run, sreps,
                         f"libraw_{alg.lower()}", label, c, "peer", "DNG uint16 -> uint16", m16[c].shape, note="open DNG + postprocess")

        # ---- colour-demosaicing on a crop
        if not a.no_colour:
            try:
                import colour_demosaicing as cd

                cm = m32["bayer"][:crop, :crop].astype(np.float64)
                for pid, label, f in (
                    ("colour_bilinear", "bilinear (colour-demosaicing)", cd.demosaicing_CFA_Bayer_bilinear),
                    ("colour_malvar", "Malvar-He-Cutler (colour-demosaicing)", cd.demosaicing_CFA_Bayer_Malvar2004),
                    ("colour_menon", "Menon 2007 (colour-demosaicing)", cd.demosaicing_CFA_Bayer_Menon2007),
                ):
                    task(pid, lambda f=f: f(cm, "RGGB"), sreps,
                         pid, label, "bayer", "peer", "float64 -> float64", cm.shape, note=f"{crop}x{crop} crop")
            except ImportError:
                log("colour-demosaicing not installed: skipped")

        log(f"timing {len(tasks)} methods in {reps} interleaved rounds")
        times = C.timed_rounds(tasks, warmup=0)
    for key, args, extra in pending:
        row(rows, log, *args[:6], times[key], **extra)

    # ---- demosaicnet on a crop (its own interpreter)
    if not a.no_demosaicnet:
        py = C.demosaicnet_python()
        if py is None:
            log("demosaicnet not installed: skipped")
        else:
            for c in ("bayer", "xtrans"):
                doc = C.run_demosaicnet(py, ["speed", "--cfa", c, "--size", str(dn_crop), "--repeats", str(sreps)])
                row(rows, log, "demosaicnet", "demosaicnet (pretrained, PyTorch CPU)", c, "peer", "float32 -> float32", (dn_crop, dn_crop), doc["times"], note=f"{dn_crop}x{dn_crop} crop, torch {doc['torch']}, {doc['threads']} threads")

    base = next(r["mps"] for r in rows if r["id"] == "opencv_bilinear")
    for r in rows:
        r["x_opencv_bilinear"] = r["mps"] / base

    # ---- end to end
    pick = {i.cfa.value: i.name for i in reversed(infos)} if a.only else {}
    e2e = [] if a.no_e2e else end_to_end(sreps if a.quick else max(sreps, 5), log, pick)

    doc = {
        "machine": {**C.machine_info(), "opencv_threads": cv2.getNumThreads()},
        "quick": bool(a.quick),
        "shapes": {c: list(s) for c, s in shapes.items()},
        "repeats": reps,
        "slow_repeats": sreps,
        "interleaved": True,
        "rows": rows,
        "end_to_end": e2e,
        "seconds": time.perf_counter() - t_start,
    }
    if json_path:
        C.write_json(json_path, doc)
    if md_path:
        C.update_results("speed", render(doc), md_path)
        import quality

        combined = quality.check_section(quality._load(C.QUALITY_JSON), doc)
        if combined:
            C.update_results("check", combined, md_path)
    log(f"done in {doc['seconds']:.0f} s")
    print(render(doc))
    return doc


def end_to_end(reps: int, log, pick: dict | None = None) -> list[dict]:
    """``read`` + ``develop`` + 16-bit TIFF per sample raw with the default kernel (or ``pick[cfa]``)."""
    import rawpy
    import tifffile

    import rawdemosaic
    from rawdemosaic.color import icc_profile
    from rawdemosaic.demosaic import choose
    from rawdemosaic.writers import exif_from_frame, write_image

    out = []
    icc = icc_profile("srgb")
    with tempfile.TemporaryDirectory() as d:
        for name in ("bayer_rggb.dng", "xtrans.dng"):
            path = C.ROOT / "sample_raws" / name
            if not path.exists():
                continue
            frame = rawdemosaic.read(path)
            kern = (pick or {}).get(frame.cfa.kind.value) or choose(frame.cfa).name
            mp = frame.mosaic.shape[0] * frame.mosaic.shape[1] / 1e6

            def ours():
                f = rawdemosaic.read(path)
                img = rawdemosaic.develop(f, kernel=kern, dtype="uint16")  # as convert does
                write_image(Path(d) / "ours.tif", img, format="tiff", bits=16, icc=icc, exif=exif_from_frame(f), overwrite=True)

            def libraw_default():
                with rawpy.imread(str(path)) as r:
                    return r.postprocess()

            def libraw_tiff16():
                with rawpy.imread(str(path)) as r:
                    img = r.postprocess(output_bps=16)
                tifffile.imwrite(Path(d) / "libraw.tif", img)

            res = {}
            for key, fn in (("rawdemosaic", ours), ("rawpy_default", libraw_default), ("rawpy_16bit_tiff", libraw_tiff16)):
                t = C.timed(fn, reps)
                res[key] = {"median_s": float(np.median(t)), "times": [round(x, 5) for x in t], "mps": mp / float(np.median(t))}
            r = {"file": f"sample_raws/{name}", "shape": list(frame.mosaic.shape), "cfa": frame.cfa.name if hasattr(frame.cfa, "name") else str(frame.cfa), "kernel": kern, **res}
            out.append(r)
            log(f"end-to-end {name}: rawdemosaic ({kern}) {res['rawdemosaic']['median_s'] * 1e3:.0f} ms, rawpy default {res['rawpy_default']['median_s'] * 1e3:.0f} ms, rawpy 16-bit + TIFF {res['rawpy_16bit_tiff']['median_s'] * 1e3:.0f} ms")
    return out


def render(doc: dict) -> str:
    m = doc["machine"]
    sh = doc["shapes"]
    lines = [
        "## Speed (`benchmarks/speed.py`)",
        "",
        f"Measured {C.machine_line(m)}; OpenCV threads {m.get('opencv_threads', '?')}, Halide kernels use all cores. Run time {doc['seconds'] / 60:.1f} min"
        + (" (**quick run: small sizes**)" if doc["quick"] else "")
        + ".",
        "",
        f"Mosaic cut from tiled Kodak24 images: Bayer RGGB {sh['bayer'][0]}x{sh['bayer'][1]}, X-Trans {sh['xtrans'][0]}x{sh['xtrans'][1]}. "
        f"Median of {doc['repeats']} runs after a warm-up (LibRaw, colour-demosaicing, demosaicnet: {doc['slow_repeats']}), "
        f"{'timed in interleaved rounds (each round runs every method once, so all see the same drift of the machine); ' if doc.get('interleaved') else ''}"
        "`out=`/`dst=` preallocated unless the row says otherwise. LibRaw = opening an uncompressed DNG + `postprocess` (16-bit, linear, raw colour). "
        "colour-demosaicing and demosaicnet on the crops shown, scaled to MP/s. Ratio: throughput / OpenCV bilinear (uint16) of the same run. "
        "Kernels trained on gamma-encoded data (the sRGB curve, or `gamma2`: the square root of linear light) run as the converter runs them "
        "(linear light in and out, the transfer inside the kernel) and, uint16 only, as the quality protocol scores them "
        "(the sRGB-encoded mosaic in, its output scored as sRGB, no transfer: what the peers get too).",
        "",
    ]
    head = ["kernel / peer", "CFA", "cost (ops/px)", "in -> out", "pixels", "median ms", "MP/s", "x OpenCV bilinear"]
    order = sorted(doc["rows"], key=lambda r: (r["cfa"] != "bayer", r["kind"] != "registry", -r["mps"]))
    srgb = {r["kernel"] for r in doc["rows"] if r.get("note") == "sRGB in and out"}
    rows = []
    for r in order:
        name = f"`{r['kernel']}`" if r["kind"] == "registry" else r["label"]
        if r.get("note", "").startswith("new output"):
            name += ", new output per call"
        elif r.get("note") == "sRGB in and out":
            name += ", sRGB in and out (as scored)"
        elif r["kind"] == "registry" and r["kernel"] in srgb:
            name += ", linear light (transfer inside)"
        rows.append([name, "Bayer" if r["cfa"] == "bayer" else "X-Trans", f"{r['cost']:g}" if "cost" in r else "", r["dtype"], f"{r['shape'][0]}x{r['shape'][1]}", f"{r['median_s'] * 1e3:.1f}", C.fmt_speed(r["mps"]), f"{r['x_opencv_bilinear']:.3g}"])
    lines.append(C.md_table(head, rows))
    if doc["end_to_end"]:
        lines += [
            "### End to end",
            "",
            "`rawdemosaic.read` + `rawdemosaic.develop` (default kernel, camera WB, sRGB) + `writers.write_image` (16-bit TIFF, ICC, EXIF) — "
            f"what `rawdemosaic convert` does — beside rawpy `imread` + `postprocess()` with its defaults (AHD, 8-bit, sRGB, no file written) "
            f"and with `output_bps=16` + a TIFF written by tifffile. Median of {len(doc['end_to_end'][0]['rawdemosaic']['times'])} runs, seconds (MP/s).",
            "",
        ]
        rows = []
        for e in doc["end_to_end"]:
            o, d16, dd = e["rawdemosaic"], e["rawpy_16bit_tiff"], e["rawpy_default"]
            rows.append([
                f"`{e['file']}` ({e['shape'][0]}x{e['shape'][1]})",
                f"`{e['kernel']}`",
                f"{o['median_s']:.3f} ({o['mps']:.1f})",
                f"{dd['median_s']:.3f} ({dd['mps']:.1f})",
                f"{d16['median_s']:.3f} ({d16['mps']:.1f})",
                f"{dd['median_s'] / o['median_s']:.2f}x",
            ])
        lines.append(C.md_table(["file", "kernel", "rawdemosaic convert (API)", "rawpy postprocess (AHD)", "rawpy 16-bit + TIFF", "speed-up vs rawpy default"], rows))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
