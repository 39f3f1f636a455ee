"""Compiled kernels: registry programs in every phase, dtypes, borders, sizes, cache, threads."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from rawdemosaic.cfa import CFA, CFAPattern
from rawdemosaic.evaluate import decode, encode
from rawdemosaic.program import compiler
from rawdemosaic.program.compiler import Kernel
from rawdemosaic.program.reference import run_reference
from rawdemosaic.registry import kernels

ENTRIES = kernels(plugins=False)
PHASES = {CFA.BAYER: [(0, 0), (0, 1), (1, 0), (1, 1)], CFA.XTRANS: [(dy, dx) for dy in range(6) for dx in range(6)]}


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_registry_kernel_matches_reference_in_every_phase(entry):
    prog = entry.program()
    k = Kernel(prog, quiet=True)
    rng = np.random.default_rng(0)
    for dy, dx in PHASES[entry.cfa]:
        pat = CFAPattern(entry.cfa, dy, dx)
        m = rng.random((50 + dy, 63 + dx)).astype(np.float32)
        assert np.abs(k(m, pat) - run_reference(prog, m, pat)).max() <= 1e-4


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_recorded_cost_is_the_programs(entry):
    assert entry.cost == pytest.approx(entry.program().cost(), abs=1e-3)


def _bilinear():
    return next(e for e in ENTRIES if e.name == "bayer_bilinear").program()


def test_uint16_in_and_out():
    prog = _bilinear()
    rng = np.random.default_rng(0)
    m16 = (rng.random((64, 80)) * 65535).astype(np.uint16)
    ref = run_reference(prog, m16.astype(np.float32) / 65535)
    out16 = Kernel(prog, "uint16", "uint16", quiet=True)(m16)
    assert out16.dtype == np.uint16
    expect = np.round(np.clip(ref, 0, 1) * 65535)
    assert np.abs(out16.astype(np.float64) - expect).max() <= 1
    outf = Kernel(prog, "uint16", "float32", quiet=True)(m16)
    assert np.abs(outf - ref).max() < 1e-5


@pytest.mark.parametrize(("name", "linear_io"), [("bayer_malvar", False), ("bg_bayer_bayer_gpu_c112_rc", False), ("xtrans_linear", False),
                                               ("xs_xtrans_xtrans_low_c58", False), ("bayer_malvar", True), ("bayer_lsq40g", True), ("xtrans_lsq288g", True)])
def test_uint16_output_copies_the_sensors_own_samples(name, linear_io):
    """uint16 in and out: where the CFA has a colour, the output is the mosaic sample itself (copied, not
    round-tripped through float or the sRGB transfer), in every phase; the interpolated values round the
    reference."""
    entry = next(e for e in ENTRIES if e.name == name)
    prog = entry.program()
    assert compiler._passes_samples(prog)
    k = Kernel(prog, "uint16", "uint16", quiet=True, linear_io=linear_io)
    assert k.transfer == linear_io
    rng = np.random.default_rng(1)
    for dy, dx in PHASES[entry.cfa][:: 1 if entry.cfa is CFA.BAYER else 7]:
        pat = CFAPattern(entry.cfa, dy, dx)
        m16 = (rng.random((48 + dy, 60 + dx)) * 65535).astype(np.uint16)
        out = k(m16, pat)
        colours = _colour_map(pat, m16.shape)
        for ch in range(3):
            own = colours == ch
            assert np.array_equal(out[..., ch][own], m16[own]), (name, (dy, dx), ch)
        m = m16.astype(np.float32) / 65535
        ref = decode(run_reference(prog, encode(m, prog.domain), pat), prog.domain) if linear_io else run_reference(prog, m, pat)
        assert np.abs(out.astype(np.float64) - np.round(np.clip(ref, 0, 1) * 65535)).max() <= 1


def _colour_map(pat, shape):
    from rawdemosaic.cfa import mosaic

    planes = np.stack([np.full(shape, k + 1.0, np.float32) for k in range(3)], axis=-1)
    return mosaic(planes, pat).astype(int) - 1


def test_samples_are_copied_only_when_the_output_passes_them_through():
    prog = _bilinear()
    assert compiler._passes_samples(prog)
    nodes = tuple(
        n if n.id != "rgb" else type(n)(n.id, n.op, ("mosaic", "mosaic", n.inputs[2]), n.params) for n in prog.nodes
    )  # green read straight from the mosaic: not a GreenInsert, so its output is no sample copy
    other = type(prog)(prog.name, prog.cfa, nodes, prog.output, dict(prog.weights), dict(prog.meta))
    assert not compiler._passes_samples(other)


def test_flat_field_has_no_border_artefacts():
    # a grey scene: every pixel of a given phase must come out like the interior ones, edges
    # included (classical interpolators also return the grey itself exactly)
    for e in ENTRIES:
        k = Kernel(e.program(), quiet=True)
        p = e.program().lcm_scale()  # the output's period: the CFA's, or a coarser grid's (learned resampling)
        for dy, dx in PHASES[e.cfa][:3]:
            m = np.full((31 + dy, 29 + dx), 0.37, np.float32)
            out = k(m, CFAPattern(e.cfa, dy, dx))
            centre = out[12:12 + p, 12:12 + p]
            tiled = np.tile(centre, (-(-out.shape[0] // p) + 1, -(-out.shape[1] // p) + 1, 1))
            ref = tiled[(p - 12 % p) % p :][: out.shape[0], (p - 12 % p) % p :][:, : out.shape[1]]
            assert np.abs(out - ref).max() < 1e-5, e.name
            if e.program().meta.get("family") == "classical":
                assert np.abs(out - 0.37).max() < 1e-5, e.name


@pytest.mark.parametrize("shape", [(4, 4), (12, 12), (13, 7), (300, 5)])
def test_small_and_odd_sizes(shape):
    prog = _bilinear()
    if min(shape) < 4:
        pytest.skip()
    m = np.random.default_rng(0).random(shape).astype(np.float32)
    out = Kernel(prog, quiet=True)(m, CFAPattern(CFA.BAYER, 1, 1))
    assert out.shape == (*shape, 3)
    assert np.abs(out - run_reference(prog, m, CFAPattern(CFA.BAYER, 1, 1))).max() < 1e-5


def test_strided_input_and_out_argument():
    prog = _bilinear()
    big = np.random.default_rng(0).random((64, 130)).astype(np.float32)
    view = big[:, ::2]  # non-contiguous
    k = Kernel(prog, quiet=True)
    ref = run_reference(prog, np.ascontiguousarray(view))
    assert np.abs(k(view) - ref).max() < 1e-6
    out = np.empty((64, 65, 3), np.float32)
    res = k(view, out=out)
    assert res is out and np.abs(out - ref).max() < 1e-6


def test_rejects_wrong_dtype_and_family():
    k = Kernel(_bilinear(), quiet=True)
    with pytest.raises(ValueError, match="float32"):
        k(np.zeros((8, 8), np.uint16))
    with pytest.raises(ValueError, match="xtrans"):
        k(np.zeros((12, 12), np.float32), CFAPattern(CFA.XTRANS, 0, 0))


def test_cache_is_reused_and_keyed_by_target(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RAWDEMOSAIC_CACHE", str(tmp_path))
    prog = _bilinear()
    k = Kernel(prog)
    assert not k.is_cached()
    k(np.zeros((8, 8), np.float32))
    assert "compiling kernel bayer_bilinear" in capsys.readouterr().err
    assert Kernel(prog).is_cached()
    Kernel(prog)(np.zeros((8, 8), np.float32))
    assert capsys.readouterr().err == ""
    other = Kernel(prog, target="x86-64-linux-sse41")
    assert other.path != k.path and not other.is_cached()
    out = other(np.random.default_rng(0).random((16, 16)).astype(np.float32))
    assert np.abs(out - run_reference(prog, np.random.default_rng(0).random((16, 16)).astype(np.float32))).max() < 1e-5


def test_processes_building_one_kernel_compile_it_once(tmp_path):
    """Parallel workers (pytest-xdist, batch pools) sharing a cold cache: one compiles, the other waits."""
    import os
    import subprocess
    import sys

    code = (
        "import numpy as np; from rawdemosaic.registry import kernels; from rawdemosaic.program.compiler import Kernel; "
        "k = Kernel(next(e for e in kernels(plugins=False) if e.name == 'bayer_bilinear').program()); "
        "print(float(k(np.ones((8, 8), np.float32)).mean()))"
    )
    env = {**os.environ, "RAWDEMOSAIC_CACHE": str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), results
    assert [float(out) for out, _ in results] == [1.0, 1.0]
    assert sum("compiling kernel" in err for _, err in results) == 1


def _run_bilinear(cache, extra: str = "") -> "subprocess.CompletedProcess":
    """Demosaic a flat mosaic with bayer_bilinear in a fresh process (a damaged library may kill it)."""
    import os
    import subprocess
    import sys

    code = (
        "import numpy as np; from rawdemosaic.registry import kernels; from rawdemosaic.program.compiler import Kernel; "
        "k = Kernel(next(e for e in kernels(plugins=False) if e.name == 'bayer_bilinear').program()); "
        "print(float(k(np.ones((8, 8), np.float32)).mean()))" + extra
    )
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, "RAWDEMOSAIC_CACHE": str(cache)}, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("damage", ["empty", "garbage", "truncated"])
def test_a_damaged_cached_library_is_rebuilt(tmp_path, monkeypatch, damage):
    """A crash while a library was written, or a damaged disk, leaves a short or foreign file: it is rebuilt,
    not loaded (a truncated ELF file loads and then kills the process with SIGBUS)."""
    r = _run_bilinear(tmp_path)
    assert r.returncode == 0 and "compiling kernel" in r.stderr, r.stderr
    monkeypatch.setenv("RAWDEMOSAIC_CACHE", str(tmp_path))
    k = Kernel(_bilinear())
    good = k.path.read_bytes()
    k.path.write_bytes({"empty": b"", "garbage": bytes(range(256)) * 20, "truncated": good[: len(good) // 2]}[damage])
    assert not k.is_cached()
    r = _run_bilinear(tmp_path)
    assert r.returncode == 0 and float(r.stdout) == 1.0 and "compiling kernel" in r.stderr, (r.returncode, r.stderr)
    assert k.is_cached() and k.path.stat().st_size == len(good)


def test_kernels_of_one_library_share_its_error_handler(tmp_path):
    """Halide's error handler is one per library: a second kernel of the same program must not replace the
    first's (freed with it, the handler would dangle and the next error crash the process)."""
    extra = (
        "; import gc; k2 = Kernel(k.program); k2(np.ones((8, 8), np.float32)); del k2; gc.collect()\n"
        "try:\n    k(np.zeros((0, 8), np.float32))\nexcept RuntimeError as e:\n    print('error:', e)"
    )
    r = _run_bilinear(tmp_path, extra)
    assert r.returncode == 0, (r.returncode, r.stderr)
    line = r.stdout.strip().splitlines()[-1]
    assert line.startswith("error: kernel bayer_bilinear failed with Halide error") and not line.endswith(": "), line


def test_stale_build_directories_are_removed(tmp_path, monkeypatch):
    import os

    monkeypatch.setenv("RAWDEMOSAIC_CACHE", str(tmp_path))
    k = Kernel(_bilinear(), quiet=True)
    stale, fresh = k.path.parent / "tmpkilled", k.path.parent / "tmpbuilding"
    for d in (stale, fresh):
        d.mkdir(parents=True)
        (d / "k.a").write_bytes(b"x")
    os.utime(stale, (1.0e9, 1.0e9))  # left by a build killed long ago
    k(np.ones((8, 8), np.float32))
    assert not stale.exists() and fresh.exists()  # another build may be using a recent one


def test_unwritable_cache_and_missing_compiler_are_build_errors(tmp_path, monkeypatch):
    from rawdemosaic.errors import KernelBuildError

    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("RAWDEMOSAIC_CACHE", str(tmp_path / "afile" / "sub"))
    with pytest.raises(KernelBuildError, match="kernel cache .*cannot write.*RAWDEMOSAIC_CACHE"):
        Kernel(_bilinear(), quiet=True).build()
    monkeypatch.setenv("RAWDEMOSAIC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    with pytest.raises(KernelBuildError, match="cannot run the C compiler"):
        Kernel(_bilinear(), quiet=True).build()
    monkeypatch.setenv("RAWDEMOSAIC_CACHE", "~/rd-cache-test")
    assert compiler.cache_dir() == Path.home() / "rd-cache-test"


def test_concurrent_calls_from_threads():
    k = Kernel(_bilinear(), quiet=True)
    rng = np.random.default_rng(0)
    inputs = [rng.random((96, 128)).astype(np.float32) for _ in range(6)]
    expect = [k(m) for m in inputs]
    got = [None] * 6

    def work(i):
        for _ in range(5):
            got[i] = k(inputs[i])

    ts = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for g, e in zip(got, expect):
        assert np.array_equal(g, e)


def test_gil_is_released_while_a_kernel_runs():
    # while another thread is inside the Halide kernel, this thread's Python loop never stalls for
    # anything like a kernel call (it would, for the whole call, if the GIL were held)
    import sys
    import time

    from rawdemosaic.program.zoo import exercise

    k = Kernel(exercise("Conv2D", CFA.BAYER), quiet=True)
    rows = 2048
    while True:  # a mosaic big enough that one call lasts 50 ms or more, however fast the kernel got
        m = np.random.default_rng(0).random((rows, 3072)).astype(np.float32)
        out = np.empty((rows, 3072, 3), np.float32)
        k(m, out=out)  # load the library first
        k._lib.halide_set_num_threads(1)  # one core for the kernel, one for this thread: no OS contention
        t0 = time.perf_counter()
        k(m, out=out)
        call = time.perf_counter() - t0
        if call > 0.05 or rows >= 16384:
            break
        rows *= 2
    done = threading.Event()

    def work():
        for _ in range(8):
            k(m, out=out)
        done.set()

    old = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    try:
        t = threading.Thread(target=work)
        t.start()
        last, stalled = time.perf_counter(), 0.0
        while not done.is_set():
            now = time.perf_counter()
            if now - last > call / 2:  # this thread could not run for half a kernel call
                stalled += now - last
            last = now
        t.join()
    finally:
        sys.setswitchinterval(old)
    # held GIL: stalled for about all 8 calls (checked by loading the kernel with ctypes.PyDLL);
    # released: 0-20% on a machine loaded with other work
    assert call > 0.02
    assert stalled < 0.5 * 8 * call, (stalled, call)


@pytest.mark.parametrize("domain", ["srgb", "gamma2"])
@pytest.mark.parametrize("in_dtype", ["float32", "uint16"])
def test_linear_io_encodes_and_decodes_around_an_encoded_program(in_dtype, domain):
    prog = _bilinear().with_domain(domain)
    assert prog.domain == domain and prog.digest() != _bilinear().digest()
    rng = np.random.default_rng(3)
    lin = rng.random((48, 64)).astype(np.float32) ** 2
    src = lin if in_dtype == "float32" else np.round(lin * 65535).astype(np.uint16)
    lin_in = src if in_dtype == "float32" else src.astype(np.float32) / 65535
    expect = decode(run_reference(prog, encode(lin_in, domain)), domain)
    got = Kernel(prog, in_dtype, "float32", quiet=True, linear_io=True)(src)
    assert np.abs(got - expect).max() < 1e-4
    got16 = Kernel(prog, in_dtype, "uint16", quiet=True, linear_io=True)(src)  # its own (polynomial) decode
    assert np.abs(got16.astype(np.int64) - np.round(np.clip(expect, 0, 1) * 65535)).max() <= 1
    # without linear_io the kernel computes in the program's own domain; a linear program ignores linear_io
    assert np.abs(Kernel(prog, in_dtype, quiet=True)(src) - run_reference(prog, lin_in)).max() < 1e-4
    k_lin = Kernel(_bilinear(), in_dtype, quiet=True, linear_io=True)
    assert not k_lin.transfer and np.abs(k_lin(src) - run_reference(_bilinear(), lin_in)).max() < 1e-4


def test_srgb_transfer_is_within_an_eighth_of_a_uint16_step():
    """The table encoding a uint16 mosaic is the exact curve; the float encode (fast_pow) and decode
    (linear below the knee, negative values too, a polynomial up to DECODE_MAX, saturating above) are
    within 2e-6 of it (an eighth of a uint16 step)."""
    import halide as hl

    from rawdemosaic.program.compiler import _srgb_decode, _srgb_encode, _srgb_encode_table

    def encode(v):  # the exact curves, in float64
        return np.where(v <= 0.0031308, v * 12.92, 1.055 * np.maximum(v, 0) ** (1 / 2.4) - 0.055)

    def decode(v):
        return np.where(v <= 0.04045, v / 12.92, ((np.maximum(v, 0) + 0.055) / 1.055) ** 2.4)

    assert np.abs(_srgb_encode_table() - encode(np.arange(65536) / 65535.0)).max() < 6e-8  # float32 rounding
    x = hl.Var("x")
    top = compiler.DECODE_MAX
    for curve, ref, lo, hi in ((_srgb_encode, encode, 0.0, 1.0), (_srgb_decode, decode, -0.2, top + 0.5)):  # decode: overshoots too
        v = np.linspace(lo, hi, 200_001, dtype=np.float32)
        f = hl.Func("f")
        f[x] = curve(hl, hl.Buffer(v)[x])
        f.vectorize(x, 16)
        got = np.asarray(f.realize([v.size]))
        err = np.abs(got.astype(np.float64) - ref(np.minimum(v, top).astype(np.float64)))
        assert err.max() < 2e-6, (curve.__name__, err.max())
    assert decode(top) == pytest.approx(2.54, abs=0.01)  # where float output saturates


def test_srgb_decode_for_integer_output_is_within_a_fifteenth_of_a_uint16_step():
    """The polynomial decode before uint16 output: the clamped curve, within 1e-6 below, in and above [0, 1]."""
    import halide as hl

    from rawdemosaic.program.compiler import _srgb_decode_unit

    x = hl.Var("x")
    v = np.linspace(-0.2, 1.5, 300_001, dtype=np.float32)
    f = hl.Func("f")
    f[x] = _srgb_decode_unit(hl, hl.Buffer(v)[x])
    f.vectorize(x, 16)
    got = np.asarray(f.realize([v.size])).astype(np.float64)
    u = np.clip(v.astype(np.float64), 0.0, 1.0)
    ref = np.where(u <= 0.04045, u / 12.92, ((u + 0.055) / 1.055) ** 2.4)
    assert np.abs(got - ref).max() < 1e-6


def test_input_domain_is_validated():
    from rawdemosaic.errors import ProgramError

    with pytest.raises(ProgramError, match="domain"):
        _bilinear().with_domain("gamma22")


def test_phase_split_follows_the_grid():
    """A Pack by the period absorbs the CFA phase of what it packs (no p*p unrolled copies of the layer);
    up-sampling multiplies it."""
    from rawdemosaic.program.compiler import _carried_phase

    assert _carried_phase(6, 1, 6) == 1  # Pack of a green insert, X-Trans
    assert _carried_phase(2, 1, 2) == 1  # ... Bayer
    assert _carried_phase(6, 1, 2) == 3  # Pack by 2 of an X-Trans-phased expression
    assert _carried_phase(2, 12, 6) == 4  # up-sampling by 2 of a phase-2 expression
    assert _carried_phase(6, 6, 6) == 6  # same grid


def _dense_program(cfa: CFA):
    """Convolutions in every position the dense lowering meets: reading a materialised grouped layer
    (Tuple blocks; for X-Trans, 18 inputs per group, itself dense), another dense layer directly (a grouped
    one), and a full-resolution stack that carries the CFA phase; 3x3, 5x5 without bias and a 1-D layer;
    output widths 8, p^2, 6 and 2 (every register block)."""
    from rawdemosaic.program.graph import Node as N
    from rawdemosaic.program.graph import Program
    from rawdemosaic.program.zoo import random_weights

    pp = cfa.period**2
    nodes = (
        N("mosaic", "Input"),
        N("packed", "Pack", ("mosaic",)),
        N("h", "Conv1x1", ("packed",), {"out_channels": 8, "groups": 2}),
        N("g0", "Conv2D", ("h",), {"out_channels": 8}),
        N("g1", "Conv2D", ("g0",), {"out_channels": pp, "groups": 2}),
        N("green", "GreenInsert", ("mosaic", "g1")),
        N("s", "Stack", ("green", "mosaic")),
        N("f0", "Conv2D", ("s",), {"out_channels": 6, "kernel": 5, "bias": False}),
        N("f1", "Conv1D", ("f0",), {"out_channels": 2, "kernel": 7, "axis": "y"}),
        N("rgb", "ChromaInsert", ("mosaic", "green", "f1"), {"mode": "diff"}),
    )
    return Program(f"dense_{cfa.value}", cfa, nodes, "rgb", random_weights(nodes, cfa, np.random.default_rng(3)))


@pytest.mark.parametrize("cfa", [CFA.BAYER, CFA.XTRANS])
def test_dense_convolutions_match_reference_in_every_phase(cfa, monkeypatch):
    prog = _dense_program(cfa)
    for v in prog.weights.values():
        v.setflags(write=False)  # as weights loaded by np.load or taken from torch can be
    lowered = _dense_lowerings(monkeypatch, prog)
    assert sorted(lowered) == sorted(["conv1d_f1", "conv2d_f0", "conv2d_g0", "conv2d_g1"] + (["conv1x1_h"] if cfa is CFA.XTRANS else []))
    _matches_reference_in_phases(prog, (45, 70), seed=1)


def _dense_lowerings(monkeypatch, prog) -> dict[str, int]:
    """``{Func name: stride}`` of the layers :func:`build_pipeline` lowers as dense reductions (direct or Winograd)."""
    from rawdemosaic.program import compiler

    seen: dict[str, int] = {}
    real, wino = compiler._dense_conv, compiler._winograd_conv
    monkeypatch.setattr(compiler, "_dense_conv", lambda hl, name, *a, **kw: seen.__setitem__(name, kw.get("stride", 1)) or real(hl, name, *a, **kw))
    monkeypatch.setattr(compiler, "_winograd_conv", lambda hl, name, *a, **kw: seen.__setitem__(name, 1) or wino(hl, name, *a, **kw))
    compiler.build_pipeline(prog)
    return seen


def _matches_reference_in_phases(prog, shape: tuple[int, int], seed: int) -> None:
    """The compiled kernel equals the numpy reference on random mosaics in every Bayer phase, every 7th X-Trans one."""
    k = Kernel(prog, quiet=True)
    rng = np.random.default_rng(seed)
    for dy, dx in PHASES[prog.cfa][:: 1 if prog.cfa is CFA.BAYER else 7]:
        pat = CFAPattern(prog.cfa, dy, dx)
        m = rng.random((shape[0] + dy, shape[1] + dx)).astype(np.float32)
        assert np.abs(k(m, pat) - run_reference(prog, m, pat)).max() <= 1e-4


@pytest.mark.parametrize("cfa", [CFA.BAYER, CFA.XTRANS])
def test_downsample_is_a_strided_dense_reduction(cfa, monkeypatch):
    """Learned down-sampling lowers as a dense reduction: with a stride when it reads a dense layer, and as a
    1x1 reduction over the input packed by the stride (a channel per input channel and tap) when it reads a
    full-resolution stack that carries the CFA phase (compiled in seconds; strided, X-Trans took minutes);
    both match the reference in several phases."""
    from rawdemosaic.program.graph import Node as N
    from rawdemosaic.program.graph import Program
    from rawdemosaic.program.zoo import random_weights

    p, pp = cfa.period, cfa.period**2
    nodes = (
        N("mosaic", "Input"),
        N("packed", "Pack", ("mosaic",)),
        N("a", "Conv2D", ("packed",), {"out_channels": 8}),
        N("d", "Downsample", ("a",), {"factor": 2, "out_channels": 8}),  # reads the dense layer a
        N("u", "Upsample", ("d",), {"factor": 2, "mode": "bilinear"}),
        N("s", "Add", ("a", "u")),
        N("g", "Conv2D", ("s",), {"out_channels": pp}),
        N("green", "GreenInsert", ("mosaic", "g")),
        N("e", "Stack", ("green", "mosaic", "mosaic", "green")),
        N("h", "Downsample", ("e",), {"factor": p, "out_channels": 8}),  # reads a phase-carrying stack
        N("hc", "Conv2D", ("h",), {"out_channels": 2 * pp}),
        N("rgb", "ChromaInsert", ("mosaic", "green", "hc"), {"mode": "diff"}),
    )
    prog = Program(f"down_{cfa.value}", cfa, nodes, "rgb", random_weights(nodes, cfa, np.random.default_rng(7)))
    packed = {}
    real = compiler._packed_input
    monkeypatch.setattr(compiler, "_packed_input", lambda hl, name, *a: packed.__setitem__(name, real(hl, name, *a)) or packed[name])
    assert _dense_lowerings(monkeypatch, prog) == {"conv2d_a": 1, "downsample_d": 2, "conv2d_g": 1, "downsample_h": 1, "conv2d_hc": 1}
    assert list(packed) == ["downsample_h"]
    node, (wt, _, taps, groups) = packed["downsample_h"]
    assert node.shape.channels == 4 * p * p and wt.shape == (8, 4 * p * p, 1) and taps == [(0, 0)] and groups == 1
    _matches_reference_in_phases(prog, (50, 77), seed=8)


@pytest.mark.parametrize("cfa", [CFA.BAYER, CFA.XTRANS])
def test_wide_3x3_layers_lower_as_winograd(cfa, monkeypatch):
    """Ungrouped 3x3 layers wide enough to gain lower as Winograd F(2x2, 3x3) on grids of at most half the
    resolution: reading a dense layer, a materialised grouped one (Tuple blocks) and a full-resolution layer
    that carries the CFA phase; narrow ones (Bayer's 4 -> 16 and 16 -> 4) and X-Trans packed ones stay
    direct. All match the reference in several phases on odd sizes."""
    from rawdemosaic.program import compiler
    from rawdemosaic.program.graph import Node as N
    from rawdemosaic.program.graph import Program
    from rawdemosaic.program.zoo import random_weights

    pp = cfa.period**2
    nodes = (
        N("mosaic", "Input"),
        N("packed", "Pack", ("mosaic",)),
        N("a", "Conv2D", ("packed",), {"out_channels": 16}),  # p^2 inputs
        N("ar", "ReLU", ("a",)),
        N("b", "Conv2D", ("ar",), {"out_channels": 16}),  # reads a dense layer
        N("h", "Conv1x1", ("b",), {"out_channels": 16, "groups": 4}),  # grouped: Tuple blocks
        N("hw", "Conv2D", ("h",), {"out_channels": 16, "bias": False}),
        N("g", "Conv2D", ("hw",), {"out_channels": pp}),  # p^2 outputs
        N("green", "GreenInsert", ("mosaic", "g")),
        N("s", "Stack", ("green", "mosaic")),
        N("e", "Conv1x1", ("s",), {"out_channels": 8}),  # full resolution, carries the phase
        N("ew", "Conv2D", ("e",), {"out_channels": 16}),
        N("ec", "Conv1x1", ("ew",), {"out_channels": 2}),
        N("rgb", "ChromaInsert", ("mosaic", "green", "ec"), {"mode": "diff"}),
    )
    prog = Program(f"wino_{cfa.value}", cfa, nodes, "rgb", random_weights(nodes, cfa, np.random.default_rng(9)))
    seen: list[str] = []
    real = compiler._winograd_conv
    monkeypatch.setattr(compiler, "_winograd_conv", lambda hl, name, *a, **kw: seen.append(name) or real(hl, name, *a, **kw))
    compiler.build_pipeline(prog)
    packed = ["conv2d_b", "conv2d_hw"] if cfa is CFA.BAYER else []  # X-Trans packs to a sixth: direct there
    assert seen == [*packed, "conv2d_ew"]
    _matches_reference_in_phases(prog, (45, 67), seed=10)


@pytest.mark.parametrize("cfa", [CFA.BAYER, CFA.XTRANS])
def test_a_relu_that_is_a_layers_only_reader_is_stored_by_the_layer(cfa, monkeypatch):
    """A dense layer (direct or Winograd) whose only reader is a ReLU stores the rectified value and the
    next dense layer reads it without a copy; a layer read by its ReLU and by another node keeps its copy.
    Same output as the reference."""
    from rawdemosaic.program import compiler
    from rawdemosaic.program.graph import Node as N
    from rawdemosaic.program.graph import Program
    from rawdemosaic.program.zoo import random_weights

    pp = cfa.period**2
    nodes = (
        N("mosaic", "Input"),
        N("packed", "Pack", ("mosaic",)),
        N("a", "Conv2D", ("packed",), {"out_channels": 16}),
        N("ar", "ReLU", ("a",)),
        N("b", "Conv2D", ("ar",), {"out_channels": 16}),  # reads a rectified dense layer: no copy
        N("br", "ReLU", ("b",)),
        N("c", "Conv2D", ("br",), {"out_channels": 16}),  # read by its ReLU and by the Stack: not folded
        N("cr", "ReLU", ("c",)),
        N("d", "Conv1x1", ("cr",), {"out_channels": 8}),
        N("s", "Stack", ("d", "c")),
        N("g", "Conv2D", ("s",), {"out_channels": pp}),
        N("green", "GreenInsert", ("mosaic", "g")),
        N("rgb", "ChromaInsert", ("mosaic", "green", "d"), {"mode": "diff"}) if cfa is CFA.BAYER else N("e", "Conv1x1", ("d",), {"out_channels": 2 * pp}),
    )
    if cfa is CFA.XTRANS:
        nodes = nodes + (N("rgb", "ChromaInsert", ("mosaic", "green", "e"), {"mode": "diff"}),)
    prog = Program(f"relu_{cfa.value}", cfa, nodes, "rgb", random_weights(nodes, cfa, np.random.default_rng(11)))
    assert compiler._relu_only_readers(prog) == {"a": "ar", "b": "br"}
    copied: dict[str, bool] = {}
    real = compiler._dense_input
    monkeypatch.setattr(compiler, "_dense_input", lambda hl, name, src, cin: (lambda r: copied.__setitem__(name, r[1] is not None) or r)(real(hl, name, src, cin)))
    compiler.build_pipeline(prog)
    assert copied["conv2d_b"] is False and copied["conv2d_c"] is False  # b, c read a (b) rectified as stored
    assert copied["conv1x1_d"] is True and copied["conv2d_g"] is True  # ReLU(c) and the Stack are materialised
    _matches_reference_in_phases(prog, (41, 63), seed=12)


def test_winograd_weights_give_the_direct_convolution():
    """The transformed weights and the input and output transforms reproduce a 3x3 correlation exactly
    (float64 algebra on one 4x4 block)."""
    from rawdemosaic.program.compiler import _at, _bt, _winograd_weights

    rng = np.random.default_rng(0)
    g, d = rng.standard_normal((1, 1, 9)), rng.standard_normal((4, 4))  # d[i][j]: i along x, j along y
    u = _winograd_weights(g)[0, 0].astype(np.float64)
    cols = [_bt(list(d[i])) for i in range(4)]
    vt = [_bt([cols[i][bb] for i in range(4)]) for bb in range(4)]
    rows = [_at([u[a + 4 * bb] * vt[bb][a] for a in range(4)]) for bb in range(4)]
    blocks = [_at([rows[bb][uu] for bb in range(4)]) for uu in range(2)]
    w = g.reshape(3, 3)  # [ky, kx], taps (dy, dx) row-major
    for uu in range(2):
        for vv in range(2):
            direct = sum(w[ky + 1, kx + 1] * d[uu + 1 + kx, vv + 1 + ky] for ky in (-1, 0, 1) for kx in (-1, 0, 1))
            assert blocks[uu][vv] == pytest.approx(direct, abs=1e-5)


@pytest.mark.parametrize(
    ("target", "lanes", "accumulators", "channels", "block24"),
    [
        ("x86-64-linux-avx-avx2-avx512-avx512_skylake-f16c-fma-sse41", 16, 16, 8, (8, 2)),
        ("x86-64-linux-avx-avx2-f16c-fma-sse41", 8, 12, 4, (4, 3)),
        ("x86-64-linux-sse41", 4, 12, 4, (4, 3)),
        ("arm-64-linux", 4, 16, 8, (8, 2)),
        ("arm-32-linux", 4, 8, 8, (8, 1)),
    ],
)
def test_vector_shape_follows_the_target(target, lanes, accumulators, channels, block24):
    from rawdemosaic.program.compiler import _dense_block, _widths, tile_size

    wd = _widths(target)
    assert wd == (lanes, accumulators, channels)
    assert _dense_block(24, wd.accumulators, wd.channels) == block24  # a 24-channel layer's register block
    assert _dense_block(6, wd.accumulators, wd.channels) == (2, min(4, accumulators // 2))
    prog = _dense_program(CFA.XTRANS)
    ty, tx = tile_size(prog, target)
    assert tx % (prog.period * lanes) == 0 and ty % prog.period == 0


def test_only_learned_programs_read_materialised_layers():
    """The output vector width rule's predicate (:func:`compiler._schedule`): a linear filter is inlined
    into the output, a learned program's convolutions are materialised."""
    from rawdemosaic.program.classical import CLASSICAL
    from rawdemosaic.program.compiler import _reads_learned_layers

    assert not any(_reads_learned_layers(make()) for make in CLASSICAL.values())
    assert _reads_learned_layers(_dense_program(CFA.XTRANS)) and _reads_learned_layers(_dense_program(CFA.BAYER))


def _host_runs(target: str) -> bool:
    import halide as hl

    host, t = hl.get_host_target(), hl.Target(target)
    return all(host.has_feature(f) for f in (hl.TargetFeature.AVX2, hl.TargetFeature.AVX512) if t.has_feature(f))


@pytest.mark.parametrize("target", ["x86-64-linux-sse41", "x86-64-linux-avx-avx2-f16c-fma-sse41", "x86-64-linux-avx-avx2-avx512-avx512_skylake-f16c-fma-sse41"])
@pytest.mark.parametrize("cfa", [CFA.BAYER, CFA.XTRANS])
def test_every_vector_width_matches_reference(cfa, target):
    """Schedules of 4, 8 and 16 lanes (their own tile sizes and register blocks) compute the same image.
    The width of the host's own target is compiled for the host (the kernel the dense-convolution test
    builds too, shared through the cache)."""
    from rawdemosaic.program.compiler import _widths, host_target

    if not _host_runs(target):
        pytest.skip(f"this machine cannot run {target}")
    prog = _dense_program(cfa)
    same = _widths(target) == _widths(host_target())
    k = Kernel(prog, target=None if same else target, quiet=True)
    rng = np.random.default_rng(2)
    for dy, dx in PHASES[cfa][:: 3 if cfa is CFA.BAYER else 11]:
        pat = CFAPattern(cfa, dy, dx)
        m = rng.random((61 + dy, 203 + dx)).astype(np.float32)
        assert np.abs(k(m, pat) - run_reference(prog, m, pat)).max() <= 1e-4


def test_cross_compiles_for_64_bit_arm(tmp_path):
    """A NEON schedule (4 lanes, 16 accumulators) lowers and compiles to an object file for ARM boards."""
    import halide as hl

    from rawdemosaic.program import compiler

    pipe, args = compiler.build_pipeline(_dense_program(CFA.BAYER), "uint16", "uint16", target="arm-64-linux")
    obj = tmp_path / "k.o"
    pipe.compile_to({hl.OutputFileType.object: str(obj)}, args, "rd_arm", hl.Target("arm-64-linux"))
    assert obj.read_bytes()[:4] == b"\x7fELF" and obj.read_bytes()[18] == 183  # e_machine EM_AARCH64


def test_scratch_blocks_are_reused_per_thread():
    """Kernels link a per-thread cache of freed scratch blocks (tiles then reuse warm memory instead of
    mapping fresh pages): a smaller request after a free gets the cached block back, 128-byte aligned."""
    import ctypes

    k = Kernel(_bilinear(), quiet=True)
    k._load()
    lib = k._lib
    lib.halide_malloc.restype = ctypes.c_void_p
    lib.halide_malloc.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    lib.halide_free.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    big = lib.halide_malloc(None, 4 << 20)
    assert big and big % 128 == 0
    lib.halide_free(None, big)
    small = lib.halide_malloc(None, 1 << 20)
    other = lib.halide_malloc(None, 1 << 20)  # the cache is empty again: a fresh block
    assert small == big and other != big and other % 128 == 0
    lib.halide_free(None, small)
    lib.halide_free(None, other)


def test_programs_with_wide_helpers_run_in_square_tiles():
    # ResidualChroma materialises lattice intermediates of 8 px reach per tile; in bands of 16 rows their
    # halos are recomputed (c333's green with the op: 65 MP/s in bands, 115 in square tiles)
    from rawdemosaic.program.compiler import _long_tiles
    from rawdemosaic.program.zoo import exercise

    assert not _long_tiles(exercise("ResidualChroma", "bayer"))
    assert _long_tiles(exercise("GreenInsert", "bayer"))  # the same narrow green with ChromaInsert
