"""Registry: selection is a pure function of the entries; entries are truthful."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from rawdemosaic import BudgetError, KernelNotFoundError
from rawdemosaic.cfa import CFA
from rawdemosaic.evaluate import TEST_SETS, evaluate, load_images
from rawdemosaic.program.classical import bayer_bilinear, bayer_malvar
from rawdemosaic.program.compiler import Kernel
from rawdemosaic.registry import KernelInfo, add_entry, kernels, load_registry, select


def _info(name, cost, q, cfa=CFA.BAYER):
    return KernelInfo(name, cfa, cost, {"kodak24": q, "mcmaster18": q}, Path(f"{name}.json"))


ENTRIES = [_info("a", 5, 30), _info("b", 20, 35), _info("c", 100, 34), _info("d", 400, 38), _info("x", 6, 29, CFA.XTRANS)]


@pytest.mark.parametrize("budget, expect", [(5, "a"), (19.9, "a"), (20, "b"), (399, "b"), (1000, "d"), (None, "d")])
def test_budget_picks_best_quality_that_fits(budget, expect):
    assert select(ENTRIES, CFA.BAYER, budget).name == expect


def test_budget_below_cheapest_lists_costs():
    with pytest.raises(BudgetError, match=r"available: a=5, b=20, c=100, d=400"):
        select(ENTRIES, CFA.BAYER, 4)
    with pytest.raises(BudgetError):
        select(ENTRIES, CFA.BAYER, 0)


def test_select_by_name_and_family():
    assert select(ENTRIES, CFA.BAYER, name="c").name == "c"
    assert select(ENTRIES, CFA.XTRANS, budget=10).name == "x"
    with pytest.raises(KernelNotFoundError, match="serves xtrans"):
        select(ENTRIES, CFA.BAYER, name="x")
    with pytest.raises(KernelNotFoundError, match="no kernel named"):
        select(ENTRIES, CFA.BAYER, name="zzz")
    with pytest.raises(KernelNotFoundError):
        select([], CFA.BAYER)


def test_add_entry_keeps_others_and_replaces_same_name(tmp_path):
    add_entry(bayer_bilinear(), tmp_path, {"kodak24": 1.0})
    add_entry(bayer_malvar(), tmp_path, {"kodak24": 2.0})
    add_entry(bayer_bilinear(), tmp_path, {"kodak24": 3.0})
    reg = {e.name: e for e in load_registry(tmp_path)}
    assert set(reg) == {"bayer_bilinear", "bayer_malvar"}
    assert reg["bayer_bilinear"].quality["kodak24"] == 3.0
    assert reg["bayer_malvar"].program().digest() == bayer_malvar().digest()
    assert json.loads((tmp_path / "registry.json").read_text())["format"] == "rawdemosaic-registry/1"


def test_models_directory_override(tmp_path, monkeypatch):
    add_entry(bayer_bilinear(), tmp_path, {"kodak24": 1.0})
    monkeypatch.setenv("RAWDEMOSAIC_MODELS", str(tmp_path))
    assert [e.name for e in kernels(plugins=False)] == ["bayer_bilinear"]


BUILTIN = kernels(plugins=False)
ROOT = Path(__file__).resolve().parents[1]


def test_builtin_registry_covers_both_families():
    assert {e.cfa for e in BUILTIN} == {CFA.BAYER, CFA.XTRANS}


@pytest.mark.parametrize("entry", BUILTIN, ids=lambda e: e.name)
def test_recorded_quality_is_reproducible(entry, shared_data):
    # the registry's dB figures are recomputed here with the project's protocol (Kodak24: all 24 images)
    imgs = load_images(shared_data / TEST_SETS["kodak24"])
    k = Kernel(entry.program(), quiet=True)
    measured = evaluate(k, imgs, entry.cfa.value)
    assert measured == pytest.approx(entry.quality["kodak24"], abs=0.02)
    if "kodak24_linear" in entry.quality:  # linear light in and out, as the converter runs the kernel
        k_lin = Kernel(entry.program(), quiet=True, linear_io=True)
        assert evaluate(k_lin, imgs, entry.cfa.value, linear=True) == pytest.approx(entry.quality["kodak24_linear"], abs=0.02)


@pytest.mark.parametrize("entry", [e for e in BUILTIN if "builder" not in (e.provenance or {})], ids=lambda e: e.name)
def test_learned_entries_record_where_they_come_from(entry):
    """Every trained or fitted entry names its origin: the program digest it was written with, how it was
    made (a search run with its seed and config, and the command of a derived one; or the fit's command),
    and a searched entry's run directory is committed (its config, run record, last population and front);
    a derived one's command is the subcommand that made it, with the steps it was fine-tuned for."""
    import tomllib

    prov = entry.provenance or {}
    assert prov.get("digest") == entry.program().digest()
    if "config" in prov:  # searched, or derived from a searched entry
        cfg = tomllib.loads(prov["config"])
        assert "search" in cfg and "export" in cfg
        assert "seed" in prov or "seed" in cfg["search"]
        # what `rawdemosaic search export` and `resume` read: the config, the run record and the last population
        needed = [f"{prov['run']}/{f}" for f in ("config.toml", "run.json", "state.json", "front.log")]
        assert all((ROOT / f).is_file() for f in needed), prov["run"]
        if (ROOT / ".git").exists():  # committed, not merely present here
            tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files", "--", *needed], capture_output=True, text=True).stdout.split()
            assert sorted(tracked) == sorted(needed)
        # a derived entry: the subcommand that made it, with the fine-tuning it records
        verbs = {"pruned_from": "prune", "residual_chroma_from": "residual-chroma", "expanded_from": "expand", "folded_from": "fold", "ensemble_of": "ensemble", "chroma_refined_from": "refine-chroma"}
        made = [v for k, v in verbs.items() if k in prov]
        if made == ["ensemble"] and "command" not in prov:  # an ensemble of a run's finalist, written by the run's export
            made = []
        if made:
            assert prov["command"].split()[:3] in (["rawdemosaic", "search", v] for v in made)
            if "finetune" in prov:  # the command that fine-tuned: this one, or a fold's or ensemble's parent's
                cmds = [prov[k] for k in ("command", "folded_from_command", "ensemble_of_command") if k in prov]
                assert any(f"--steps {prov['finetune']['steps']}" in c for c in cmds), cmds
    else:  # a least-squares fit: its command and corpus
        assert prov["command"].startswith("rawdemosaic search fit-linear") and prov["corpus"]


def test_front_is_monotone():
    # every entry beats every cheaper entry of its CFA on both standard sets
    for cfa in CFA:
        fam = sorted((e for e in BUILTIN if e.cfa is cfa), key=lambda e: e.cost)
        for s in ("kodak24", "mcmaster18"):
            q = [e.quality[s] for e in fam]
            assert all(a < b for a, b in zip(q, q[1:])), f"dominated {cfa.value} entry on {s}: {[(e.name, e.quality[s]) for e in fam]}"


def test_prune_dominated_keeps_a_strictly_rising_front(tmp_path):
    from rawdemosaic.program.classical import xtrans_linear
    from rawdemosaic.registry import prune_dominated

    a, b, c = bayer_bilinear(), bayer_malvar(), bayer_malvar()
    c.name = "malvar_copy"
    c.weights = {k: v * 1.01 for k, v in c.weights.items()}
    add_entry(a, tmp_path, {"kodak24": 30.0, "mcmaster18": 32.0})
    add_entry(b, tmp_path, {"kodak24": 35.0, "mcmaster18": 31.9})  # worse on McMaster than bilinear: dropped
    add_entry(c, tmp_path, {"kodak24": 36.0, "mcmaster18": 33.0})
    add_entry(xtrans_linear(), tmp_path, {"kodak24": 20.0, "mcmaster18": 20.0})  # other CFA: judged alone
    assert prune_dominated(tmp_path) == ["bayer_malvar"]
    assert {e.name for e in load_registry(tmp_path)} == {"bayer_bilinear", "malvar_copy", "xtrans_linear"}
    assert not (tmp_path / "bayer_malvar.json").exists() and (tmp_path / "malvar_copy.json").exists()
    assert prune_dominated(tmp_path) == []


def test_prune_dominated_keeps_the_better_of_two_entries_at_one_cost(tmp_path):
    from rawdemosaic.registry import prune_dominated

    a, b = bayer_malvar(), bayer_malvar()
    a.name, b.name = "a_worse", "b_better"  # the worse one sorts first by name
    add_entry(a, tmp_path, {"kodak24": 25.0, "mcmaster18": 25.0})
    add_entry(b, tmp_path, {"kodak24": 30.0, "mcmaster18": 30.0})
    assert prune_dominated(tmp_path) == ["a_worse"]
    assert [e.name for e in load_registry(tmp_path)] == ["b_better"]


@pytest.mark.parametrize("name", ["../escaped", "sub/kernel", "", ".hidden", "a b"])
def test_add_entry_refuses_names_that_are_not_file_names(tmp_path, name):
    prog = bayer_malvar()
    prog.name = name
    with pytest.raises(ValueError, match="not a registry entry name"):
        add_entry(prog, tmp_path / "models", {"kodak24": 30.0})
    assert not (tmp_path / "models").exists() and not (tmp_path / "escaped.json").exists()
