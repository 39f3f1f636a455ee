"""ProgramModule (PyTorch) against the numpy reference and the compiled Halide kernel."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import numpy as np  # noqa: E402

from rawdemosaic.cfa import CFA  # noqa: E402
from rawdemosaic.program.classical import bayer_bilinear  # noqa: E402
from rawdemosaic.program.reference import run_reference  # noqa: E402
from rawdemosaic.program.zoo import OP_CFAS, exercise  # noqa: E402
from rawdemosaic.search.model import ProgramModule, inherit_weights, to_program  # noqa: E402

TOL = 1e-4


def _mosaic_for(prog, seed: int) -> np.ndarray:
    L, r = prog.lcm_scale(), prog.receptive_radius()
    h = max(48, -(-(2 * r + 16) // L) * L)
    return np.random.default_rng(seed).random((h, h + L)).astype(np.float32)


def _torch_rgb(module, m: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(m)[None, None])[0].permute(1, 2, 0).numpy()


@pytest.mark.parametrize("op,cfa", [(op, cfa.value) for op, cfa in OP_CFAS])
def test_torch_matches_reference(op, cfa):
    for seed in (0, 1):  # seeds vary the exercise (modes, dilation, bias)
        prog = exercise(op, cfa, seed)
        m = _mosaic_for(prog, seed)
        r = prog.receptive_radius()
        ref = run_reference(prog, m)
        out = _torch_rgb(ProgramModule(prog), m)
        assert out.shape == ref.shape
        assert np.abs(out - ref)[r:-r, r:-r].max() <= TOL, (op, cfa, seed)


@pytest.mark.parametrize("init", ["program", "random", "xavier"])
def test_round_trip_and_inits(init):
    prog = exercise("Conv2D", "bayer", 0)
    mod = ProgramModule(prog, init=init, seed=3)
    assert all("." not in k for k in mod.weights)
    back = to_program(mod)
    assert set(back.weights) == set(prog.weights)
    for k, v in back.weights.items():
        assert v.shape == prog.weights[k].shape
        if k.endswith(".bias") and init != "program":
            assert not v.any()
    if init == "program":
        assert back.digest() == prog.digest()
    else:  # seeded and deterministic
        again = to_program(ProgramModule(prog, init=init, seed=3))
        assert back.digest() == again.digest() != prog.digest()


def test_forward_checks_alignment():
    mod = ProgramModule(exercise("Conv2D", "xtrans", 0))
    with pytest.raises(ValueError):
        mod(torch.zeros(1, 1, 40, 42))


def test_inherit_weights():
    parent = exercise("Conv2D", "bayer", 0)
    child = ProgramModule(parent, init="random", seed=1)
    copied = inherit_weights(child, parent)
    assert set(copied) == set(parent.weights)
    assert to_program(child).digest() == parent.digest()


@pytest.mark.parametrize("op,cfa", [(op, cfa.value) for op, cfa in OP_CFAS])
def test_trained_export_matches_halide(op, cfa):
    from rawdemosaic.program.compiler import Kernel

    prog = exercise(op, cfa, 0)
    mod = ProgramModule(prog)
    opt = torch.optim.Adam(mod.parameters(), lr=1e-2)
    L = prog.lcm_scale()
    x = torch.rand(2, 1, 4 * L, 4 * L, generator=torch.Generator().manual_seed(0))
    for _ in range(3):
        opt.zero_grad()
        loss = (mod(x) - 0.5).pow(2).mean()
        loss.backward()
        opt.step()
    trained = to_program(mod, name=f"trained_{op}_{cfa}")
    assert trained.digest() != prog.digest()
    m = _mosaic_for(trained, 5)
    r = trained.receptive_radius()
    out = Kernel(trained, quiet=True)(m)
    ref = _torch_rgb(mod, m)
    assert np.abs(out - ref)[r:-r, r:-r].max() <= TOL


def test_bilinear_program_module_is_a_demosaicker():
    prog = bayer_bilinear()
    assert prog.cfa is CFA.BAYER
    img = np.random.default_rng(0).random((1, 3, 32, 32)).astype(np.float32) * 0 + 0.3
    m = torch.from_numpy(img[:, 1:2])  # a flat grey image: its mosaic is flat
    out = ProgramModule(prog)(m)
    assert torch.allclose(out[..., 4:-4, 4:-4], torch.full_like(out[..., 4:-4, 4:-4], 0.3), atol=1e-6)


@pytest.mark.parametrize("cfa", ["bayer", "xtrans"])
def test_midres_seed_torch_reference_halide_agree(cfa, tmp_path, monkeypatch):
    """The half-period trunks (LearnedUpsample in, Pack by 2 out) train and compile to the same function."""
    from rawdemosaic.program.compiler import Kernel
    from rawdemosaic.search.space import midres_net

    monkeypatch.setenv("RAWDEMOSAIC_CACHE", str(tmp_path))
    prog = midres_net(cfa, 4, 1, 4, seed=2)
    assert min(s.scale for s in prog.shapes().values()) == 1 and prog.shapes()["g_c0"].scale == prog.period // 2
    m = _mosaic_for(prog, 3)
    r = prog.receptive_radius()
    ref = run_reference(prog, m)
    assert np.abs(_torch_rgb(ProgramModule(prog), m) - ref)[r:-r, r:-r].max() <= TOL
    assert np.abs(Kernel(prog, quiet=True)(m) - ref).max() <= TOL


def test_forward_hook_sees_every_node_and_can_replace_its_operands():
    prog = bayer_bilinear()
    module = ProgramModule(prog)
    m = torch.from_numpy(np.random.default_rng(3).random((16, 16)).astype(np.float32))[None, None]
    seen = []

    def record(node, ins, w):
        seen.append(node.id)
        return ins, w

    with torch.no_grad():
        plain = module(m)
        same = module(m, hook=record)
        zeroed = module(m, hook=lambda node, ins, w: (ins, {k: torch.zeros_like(v) for k, v in w.items()}))
    assert seen == [n.id for n in prog.live_nodes() if n.op != "Input"]
    assert torch.equal(plain, same)
    # with every filter zeroed, green keeps only the CFA's green samples (RGGB: odd row-plus-column parity)
    green = torch.zeros(16, 16, dtype=torch.bool)
    green[0::2, 1::2] = green[1::2, 0::2] = True
    assert not torch.equal(plain, zeroed) and torch.equal(zeroed[0, 1], torch.where(green, m[0, 0], torch.zeros(())))
