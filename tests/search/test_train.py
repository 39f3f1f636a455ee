"""A tiny training run improves its program; inheritance copies matching weights; Halide measures it."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


from rawdemosaic.cfa import CFA  # noqa: E402
from rawdemosaic.program.classical import bayer_bilinear, linear_program  # noqa: E402
from rawdemosaic.search.data import PatchDataset, load_split  # noqa: E402
from rawdemosaic.search.model import ProgramModule  # noqa: E402
from rawdemosaic.search.train import evaluate_program, full_train, patch_psnr, train  # noqa: E402

DIRS = ("train/a", "train/b")


@pytest.fixture
def tiny_sets(tiny_data):
    tr = PatchDataset(DIRS, "bayer", patch=16, count=96, seed=0)
    va = PatchDataset(DIRS, "bayer", patch=16, count=32, seed=0, split="val")
    return tr, va


def _linear():
    return linear_program("lin", CFA.BAYER, {}, {}, {})


def test_training_improves_over_initialisation(tiny_sets):
    tr, va = tiny_sets
    res = train(_linear(), tr, va, steps=80, lr=1e-2, batch=8, seed=0, inits=3, select_after=10)
    assert res.val_psnr > res.init_psnr + 3.0
    assert res.chosen_init in (0, 1, 2)
    assert {h["init"] for h in res.history if h.get("event") == "selection"} == {"0", "1", "2"}
    # the returned program is the trained one: its torch PSNR is the reported one
    m, rgb = va.tensors()
    assert patch_psnr(ProgramModule(res.program), m, rgb, 4) == pytest.approx(res.val_psnr, abs=1e-3)
    # deterministic from the seed
    again = train(_linear(), tr, va, steps=80, lr=1e-2, batch=8, seed=0, inits=3, select_after=10)
    assert again.program.digest() == res.program.digest()


def test_inheritance_and_full_training(tiny_sets):
    tr, va = tiny_sets
    parent = bayer_bilinear()
    res = train(parent, tr, va, steps=0, inits=1, init_from=parent)
    assert sorted(res.inherited) == sorted(parent.weights)
    assert res.program.digest() == parent.digest()
    fin = full_train(res.program, tr, va, steps=40, lr=1e-3, batch=8, eval_every=10)
    assert fin.val_psnr >= res.val_psnr - 1e-6  # keeps the best validation state, never worse than its start


def test_keep_zeros_retrains_a_sparse_kernel_at_its_cost(tiny_sets):
    """Malvar's zero taps stay zero (same cost, same sparsity) while its non-zero ones train; without
    ``keep_zeros`` the same training fills the zeros in and the counted cost grows."""
    from rawdemosaic.program.classical import bayer_malvar

    tr, va = tiny_sets
    prog = bayer_malvar()
    kw = dict(steps=30, lr=1e-2, batch=8, inits=1, select_after=30, init="program")  # the state after 30 steps
    kept = train(prog, tr, va, keep_zeros=True, **kw)
    dense = train(prog, tr, va, **kw)
    for k, w in prog.weights.items():
        assert ((kept.program.weights[k] != 0) == (w != 0)).all()
    assert any(not (kept.program.weights[k] == w).all() for k, w in prog.weights.items())  # it did train
    assert kept.program.cost() == prog.cost() < dense.program.cost()


def test_keep_zeros_leaves_a_linear_expansion_free_to_train(tiny_sets):
    """The pointwise layer of :func:`expand_linear` starts as a selection (zeros past the node's width): under
    ``keep_zeros`` those zeros are initialisation, not pruning, so they train; the rest keeps its zeros."""
    from rawdemosaic.search.fold import deployed, expand_linear
    from rawdemosaic.search.space import residual_net

    tr, va = tiny_sets
    prog = residual_net("bayer", width=4, depth=1, chroma_width=4, seed=0)
    pruned = dict(prog.weights)
    pruned["c_c0.weight"] = pruned["c_c0.weight"].copy()
    pruned["c_c0.weight"].flat[::3] = 0.0  # a sparse node elsewhere keeps its zeros
    prog = type(prog)(prog.name, prog.cfa, prog.nodes, prog.output, pruned, prog.meta)
    wide = expand_linear(prog, {"g_c0": 8}, seed=1)
    out = train(wide, tr, va, steps=20, lr=1e-2, batch=8, inits=1, select_after=20, init="program", keep_zeros=True).program
    back = wide.weights["g_c0.weight"]
    assert (back[:, 4:] == 0).all() and (out.weights["g_c0.weight"][:, 4:] != 0).all()
    assert ((out.weights["c_c0.weight"] != 0) == (pruned["c_c0.weight"] != 0)).all()
    assert deployed(out).cost() == prog.cost()


def test_keep_zeros_leaves_a_chroma_refinement_free_to_train(tiny_sets):
    """A chroma refinement's correction starts at zero: under ``keep_zeros`` it trains all the same."""
    from rawdemosaic.search.rechroma import with_chroma_refinement, with_residual_chroma
    from rawdemosaic.search.space import residual_net

    tr, va = tiny_sets
    ref = with_chroma_refinement(with_residual_chroma(residual_net("bayer", width=4, depth=1, chroma_width=4, seed=0)), width=4)
    assert not ref.weights["c_corr.weight"].any()
    out = train(ref, tr, va, steps=20, lr=1e-2, batch=8, inits=1, select_after=20, init="program", keep_zeros=True).program
    assert out.weights["c_corr.weight"].any()  # (a hidden unit the ReLU keeps at zero passes no gradient)


def test_training_keeps_a_self_ensemble(tiny_data, tiny_sets):
    """Training fits the graph an ensemble averages; the trained program (and what the export and derive
    commands write) still averages it."""
    from rawdemosaic.search.cli import FullTrainer
    from rawdemosaic.search.evolve import DEFAULTS

    tr, va = tiny_sets
    ens = _linear().with_ensemble(2)
    assert full_train(ens, tr, va, steps=5, lr=1e-3, batch=8).program.ensemble == 2
    base = {**DEFAULTS["train"], "data": list(DIRS), "patch": 16, "count": 32, "val_count": 16, "steps": 5, "batch": 8, "inits": 1, "lr": 1e-3}
    assert FullTrainer(base, "bayer", 0)(ens, 3, None)[0].ensemble == 2


def test_evaluate_program_through_halide(tiny_data):
    imgs = load_split("val", DIRS)
    bil = evaluate_program(bayer_bilinear(), imgs, linear=False)
    lin = evaluate_program(bayer_bilinear(), imgs, linear=True)
    assert 15 < bil < 60 and 15 < lin < 60 and bil != lin


@pytest.mark.parametrize("kind", ["select", "export"])
def test_config_loss_reaches_training(tiny_data, kind):
    """``[train] loss`` (selection) and ``[export] loss`` (finalists) choose the loss actually minimised."""
    from rawdemosaic.search.cli import FullTrainer
    from rawdemosaic.search.evolve import DEFAULTS, TorchTrainer

    base = {**DEFAULTS["train"], "data": list(DIRS), "patch": 16, "count": 64, "val_count": 16, "steps": 30, "batch": 8, "inits": 1, "lr": 1e-2}
    make = TorchTrainer if kind == "select" else FullTrainer
    got = {loss: make({**base, "loss": loss}, "bayer", 0)(_linear(), 3, None)[0].digest() for loss in ("l2", "l1")}
    assert got["l1"] != got["l2"]
    assert make({**base, "loss": "l1"}, "bayer", 0)(_linear(), 3, None)[0].digest() == got["l1"]
    with pytest.raises(ValueError, match="loss"):
        make({**base, "loss": "huber"}, "bayer", 0)(_linear(), 3, None)


@pytest.mark.parametrize("kind", ["select", "export"])
def test_config_keep_zeros_reaches_training(tiny_data, kind):
    """``[train] keep_zeros`` (selection, for the inherited initialisation) and ``[export] keep_zeros`` (finalists,
    from their own weights) keep a sparse kernel's zeros; without it they fill in."""
    from rawdemosaic.program.graph import Program
    from rawdemosaic.search.cli import FullTrainer
    from rawdemosaic.search.evolve import DEFAULTS, TorchTrainer

    base = {**DEFAULTS["train"], "data": list(DIRS), "patch": 16, "count": 64, "val_count": 16, "steps": 30, "batch": 8, "inits": 1, "lr": 1e-2}
    make = TorchTrainer if kind == "select" else FullTrainer
    bil = bayer_bilinear()  # sparse, and far from its optimum at half its weights: every check improves
    prog = Program(bil.name, bil.cfa, bil.nodes, bil.output, {k: 0.5 * w for k, w in bil.weights.items()}, bil.meta)
    parent = prog if kind == "select" else None  # selection inherits from the parent; export trains the program's own weights
    for keep in (True, False):
        out = make({**base, "keep_zeros": keep}, "bayer", 0)(prog, 3, parent)[0]
        same = all(((out.weights[k] != 0) == (w != 0)).all() for k, w in prog.weights.items())
        assert same is keep
