"""The evolutionary search: tiers, Pareto ranks, parent sampling, checkpoint/resume, smoke end to end."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from rawdemosaic.search import evolve as E
from rawdemosaic.search import space as S

TIERS = {"min_cost": 10.0, "max_cost": 1000.0}


def fake_trainer(program, seed, init_from):
    """Deterministic stand-in for training: PSNR from cost and structure (inheritance adds a little)."""
    h = int(hashlib.sha256(S.structural_hash(program).encode()).hexdigest()[:8], 16) / 2**32
    return program, 25.0 + 3.0 * math.log10(program.cost()) + 2.0 * h + (0.3 if init_from is not None else 0.0)


def _cand(i, cost, psnr):
    return E.Candidate(id=i, program=None, psnr=psnr, cost=cost, gen=0, phase="joint")  # type: ignore[arg-type]


def test_tiers_double():
    b = E.tier_bounds(**TIERS)
    assert b[0] == (10.0, 20.0) and all(hi == 2 * lo for lo, hi in b) and all(b[k][1] == b[k + 1][0] for k in range(len(b) - 1))
    assert b[-1][1] >= 1000.0 and len(b) == 7
    assert E.tier_of(10.0, **TIERS) == 0 and E.tier_of(19.99, **TIERS) == 0 and E.tier_of(20.0, **TIERS) == 1
    assert E.tier_of(999.0, **TIERS) == 6
    assert E.tier_of(9.9, **TIERS) is None and E.tier_of(5000.0, **TIERS) is None and E.tier_of(float("nan"), **TIERS) is None


def test_pareto_ranks():
    pts = [(10, 30), (20, 35), (15, 29), (20, 34), (30, 35), (12, 31)]
    r = E.pareto_ranks(pts)
    assert r[0] == 0 and r[1] == 0 and r[5] == 0
    assert r[2] == 1 and r[3] == 1  # dominated by (10, 30) / (20, 35)
    assert r[4] == 1  # same PSNR as (20, 35) but dearer
    assert E.pareto_ranks([]) == []


def test_survivors_per_tier():
    pop = [_cand(i, c, q) for i, (c, q) in enumerate([(11, 30), (12, 31), (13, 29), (14, 28), (25, 33), (26, 32), (5, 40), (50, -math.inf)])]
    keep = E.select_survivors(pop, TIERS, tier_size=2)
    assert [c.id for c in keep] == [0, 1, 4, 5]  # best two of tier 0, tier 1; out-of-tier / failed dropped


def test_sampling_without_replacement():
    pop = [_cand(i, 10 + i, 30 + (i % 3)) for i in range(6)]
    rng = np.random.default_rng(0)
    for _ in range(20):
        ps = E.sample_parents(pop, 6, rng, TIERS)
        assert sorted(c.id for c in ps) == list(range(6))
        ps = E.sample_parents(pop, 4, rng, TIERS)
        assert len({c.id for c in ps}) == 4
    ps = E.sample_parents(pop, 9, rng, TIERS)  # two rounds: everyone once, then 3 distinct
    ids = [c.id for c in ps]
    assert sorted(ids[:6]) == list(range(6)) and len(set(ids[6:])) == 3


def test_sampling_prefers_low_rank():
    pop = [_cand(0, 100, 40), _cand(1, 110, 30), _cand(2, 120, 29), _cand(3, 130, 28)]  # ranks 0, 1, 2, 3 in tier
    rng = np.random.default_rng(1)
    first = [E.sample_parents(pop, 1, rng, TIERS, pressure=1.0)[0].id for _ in range(400)]
    counts = np.bincount(first, minlength=4)
    assert counts[0] > counts[1] > counts[3]


CFG = """
[search]
mode = "%s"
generations = 2
initial = 4
children = 5
tier_size = 3
inherit_ab_fraction = 0.5
[ray]
enabled = false
"""


def _state_sig(st):
    return [(c.id, c.hash, round(c.psnr, 9), c.cost, c.parent, c.mutation) for c in st.population], sorted(st.seen), st.next_id


@pytest.mark.parametrize("mode,cfa", [("green_first", "bayer"), ("joint", "xtrans")])
def test_resume_after_kill_matches_uninterrupted(tmp_path, mode, cfa):
    cfg = E.load_config(text=CFG % mode)
    full = E.run(cfg, tmp_path / "full", cfa=cfa, seed=7, trainer=fake_trainer, executor=E.SerialExecutor(), quiet=True)
    assert full.done and full.generation == sum(n + 1 for _, n in E.phases(cfg))
    # interrupted after 1 generation; a kill during generation 2 leaves a half-written temp state
    E.run(cfg, tmp_path / "cut", cfa=cfa, seed=7, trainer=fake_trainer, executor=E.SerialExecutor(), quiet=True, stop_after=1)
    (tmp_path / "cut" / "state" / ".tmp_gen_0002" / "pop").mkdir(parents=True)
    (tmp_path / "cut" / "state" / ".tmp_gen_0002" / "pop" / "junk.json").write_text("{")
    st1 = E.load_state(tmp_path / "cut")
    assert st1.generation == 1 and not st1.done
    mid = E.resume(tmp_path / "cut", trainer=fake_trainer, executor=E.SerialExecutor(), quiet=True, stop_after=3)
    assert mid.generation == 3
    res = E.resume(tmp_path / "cut", trainer=fake_trainer, executor=E.SerialExecutor(), quiet=True)
    assert res.done
    assert _state_sig(res) == _state_sig(full)
    assert _state_sig(E.load_state(tmp_path / "cut")) == _state_sig(full)
    # programs (structure and weights) identical too
    for a, b in zip(res.population, full.population):
        assert a.program.digest() == b.program.digest()
    # the log shows the front per tier; the history both inherited and fresh scores
    log = (tmp_path / "full" / "front.log").read_text()
    assert "tier" in log and "front (cost/PSNR)" in log
    hist = [json.loads(line) for line in (tmp_path / "full" / "history.jsonl").read_text().splitlines()]
    assert any(h["psnr_fresh"] is not None for h in hist)
    assert {h["phase"] for h in hist} == ({"green", "chroma"} if mode == "green_first" else {"joint"})


def test_same_seed_same_run_other_seed_differs(tmp_path):
    cfg = E.load_config(text=CFG % "joint")
    a = E.run(cfg, tmp_path / "a", cfa="bayer", seed=1, trainer=fake_trainer, executor=E.SerialExecutor(), quiet=True)
    b = E.run(cfg, tmp_path / "b", cfa="bayer", seed=1, trainer=fake_trainer, executor=E.SerialExecutor(), quiet=True)
    c = E.run(cfg, tmp_path / "c", cfa="bayer", seed=2, trainer=fake_trainer, executor=E.SerialExecutor(), quiet=True)
    assert _state_sig(a) == _state_sig(b)
    assert _state_sig(a) != _state_sig(c)
    with pytest.raises(FileExistsError):
        E.run(cfg, tmp_path / "a", cfa="bayer", seed=1, trainer=fake_trainer, executor=E.SerialExecutor(), quiet=True)


def test_population_respects_tiers_and_pruning(tmp_path):
    cfg = E.load_config(text=CFG % "green_first")
    st = E.run(cfg, tmp_path / "r", cfa="bayer", seed=3, trainer=fake_trainer, executor=E.SerialExecutor(), quiet=True)
    assert len({c.hash for c in st.population}) == len(st.population)  # no duplicates
    per_tier: dict[int, int] = {}
    for c in st.population:
        t = E.tier_of(c.cost, **TIERS)
        assert t is not None
        per_tier[t] = per_tier.get(t, 0) + 1
        assert c.phase == "chroma"
    assert max(per_tier.values()) <= 3


def test_config_files_parse():
    from rawdemosaic.search.cli import config_path

    for name in ("smoke", "bayer", "xtrans"):
        cfg = E.load_config(config_path(name))
        assert E.phases(cfg)
        assert cfg["train"]["patch"] % 8 == 0
    assert E.load_config(config_path("xtrans"))["train"]["patch"] % 24 == 0


_FAKE_SRC = """
import hashlib, math
from rawdemosaic.search import space as S

def fake_trainer(program, seed, init_from):
    h = int(hashlib.sha256(S.structural_hash(program).encode()).hexdigest()[:8], 16) / 2**32
    return program, 25.0 + 3.0 * math.log10(program.cost()) + 2.0 * h + (0.3 if init_from is not None else 0.0)
"""


def test_ray_executor_matches_serial(tmp_path):
    pytest.importorskip("ray")
    ns: dict = {"__name__": "_search_test_fake"}  # not an importable module: Ray pickles it by value
    exec(_FAKE_SRC, ns)
    remote_fake = ns["fake_trainer"]
    cfg = E.load_config(text=CFG % "joint")
    cfg["search"]["generations"] = 1
    ex = E.RayExecutor(num_cpus=2)
    a = E.run(cfg, tmp_path / "ray", cfa="bayer", seed=4, trainer=remote_fake, executor=ex, quiet=True)
    b = E.run(cfg, tmp_path / "ser", cfa="bayer", seed=4, trainer=fake_trainer, executor=E.SerialExecutor(), quiet=True)
    assert _state_sig(a) == _state_sig(b)


def test_smoke_end_to_end(tmp_path, monkeypatch):
    """search/configs/smoke.toml: run (2 generations on Ray), export into a registry, demosaic through it
    (about 25 s on 2 cores, most of it Ray start-up)."""
    pytest.importorskip("torch")
    pytest.importorskip("ray")
    import rawdemosaic
    from rawdemosaic.search.cli import config_path, main

    try:
        from rawdemosaic.search.data import list_images

        list_images()
    except (FileNotFoundError, ImportError) as e:
        pytest.skip(f"no training corpus: {e}")
    run_dir, reg = tmp_path / "run", tmp_path / "models"
    shutil.copytree(Path(rawdemosaic.registry.default_models_dir()), reg)  # an existing registry: entries must survive
    before = {e.name for e in rawdemosaic.kernels(models=reg, plugins=False)}
    assert main(["run", "--cfa", "bayer", "--config", str(config_path("smoke")), "--out", str(run_dir), "--quiet"]) == 0
    st = E.load_state(run_dir)
    assert st.done and st.generation == 2
    assert main(["export", str(run_dir), "--into", str(reg), "--quiet"]) == 0
    names = {e.name for e in rawdemosaic.kernels(models=reg, plugins=False)}
    entries = rawdemosaic.kernels("bayer", models=reg, plugins=False)
    assert before <= names
    searched = [e for e in entries if e.name.startswith("smoke_")]
    assert searched
    for e in searched:
        assert e.provenance["seed"] == 0 and "[search]" in e.provenance["config"]
    rng = np.random.default_rng(0)
    mosaic = rng.random((48, 64), dtype=np.float32)
    out = rawdemosaic.demosaic(mosaic, "RGGB", kernel=searched[0].name, models=reg)
    assert out.shape == (48, 64, 3) and np.all(np.isfinite(out))
    png = tmp_path / "front.png"
    assert main(["report", "--models", str(reg), "--runs", str(run_dir), "--out", str(png)]) == 0
    assert png.stat().st_size > 1000


def test_finished_run_extends_when_its_config_asks_for_more_generations(tmp_path):
    cfg = E.load_config(text=CFG % "joint")
    done = E.run(cfg, tmp_path / "r", cfa="bayer", seed=3, trainer=fake_trainer, executor=E.SerialExecutor(), quiet=True)
    assert done.done
    again = E.resume(tmp_path / "r", trainer=fake_trainer, executor=E.SerialExecutor(), quiet=True)
    assert again.generation == done.generation  # nothing left to do
    n = cfg["search"]["generations"]
    conf = tmp_path / "r" / "config.toml"
    conf.write_text(conf.read_text().replace(f"generations = {n}", f"generations = {n + 2}"))
    more = E.resume(tmp_path / "r", trainer=fake_trainer, executor=E.SerialExecutor(), quiet=True)
    assert more.done and more.generation == done.generation + 2
    assert "extending the finished run" in (tmp_path / "r" / "front.log").read_text()


def test_export_trains_elsewhere_and_resumes_from_trained_finalists(tmp_path):
    """``--trained DIR --train-only`` on one machine (no Halide), then the export elsewhere reuses the trained
    finalists instead of training again; ``--set`` overrides reach the provenance."""
    from rawdemosaic.evaluate import TEST_SETS, data_dir
    from rawdemosaic.search.cli import export_run, parse_overrides

    if not (data_dir() / TEST_SETS["kodak24"]).is_dir():
        pytest.skip("no test images")
    cfg = E.load_config(text=CFG % "joint")
    cfg["search"]["generations"] = 1
    run_dir, tdir, reg = tmp_path / "run", tmp_path / "trained", tmp_path / "models"
    E.run(cfg, run_dir, cfa="bayer", seed=3, trainer=fake_trainer, executor=E.SerialExecutor(), quiet=True)
    calls = []

    def counting(program, seed, init_from):
        calls.append(seed)
        return fake_trainer(program, seed, init_from)

    def interrupted(program, seed, init_from):
        if calls:
            raise KeyboardInterrupt  # the session ends during the second finalist
        return counting(program, seed, init_from)

    ov = parse_overrides(["steps=123", "device=cuda"])
    with pytest.raises(KeyboardInterrupt):
        export_run(run_dir, reg, top=2, trainer=interrupted, trained_dir=tdir, train_only=True, quiet=True, overrides=ov)
    assert len(list(tdir.glob("c*.json"))) == len(calls) == 1  # the first one was kept
    assert export_run(run_dir, reg, top=2, trainer=counting, trained_dir=tdir, train_only=True, quiet=True, overrides=ov) == []
    saved = sorted(tdir.glob("c*.json"))
    assert len(saved) == len(calls) == 2 and not reg.exists()  # resumed: only the second trained

    def must_not_train(program, seed, init_from):
        raise AssertionError("trained again")

    with pytest.raises(ValueError, match="trained with .* not the"):  # other settings: not reused as if they were these
        export_run(run_dir, reg, top=2, trainer=must_not_train, trained_dir=tdir, limit=1, sets=["kodak24"], overrides={"steps": 124}, quiet=True)
    written = export_run(run_dir, reg, top=2, trainer=must_not_train, trained_dir=tdir, limit=1, sets=["kodak24"], overrides=ov, quiet=True)
    assert len(written) == 2 and all(w.provenance["export_overrides"] == ov for w in written)
    assert {f"c{w.provenance['candidate']}.json" for w in written} == {f.name for f in saved}
    with pytest.raises(ValueError):
        parse_overrides(["steps"])


def test_export_jobs_train_in_parallel_processes_with_the_same_result(tmp_path):
    from rawdemosaic.program.graph import Program
    from rawdemosaic.search.cli import export_run

    cfg = E.load_config(text=CFG % "joint")
    cfg["search"]["generations"] = 1
    E.run(cfg, tmp_path / "run", cfa="bayer", seed=5, trainer=fake_trainer, executor=E.SerialExecutor(), quiet=True)
    for jobs in (1, 2):
        export_run(tmp_path / "run", tmp_path / "models", top=2, trainer=fake_trainer, trained_dir=tmp_path / f"t{jobs}", train_only=True, jobs=jobs, quiet=True)
    one, two = sorted((tmp_path / "t1").glob("c*.json")), sorted((tmp_path / "t2").glob("c*.json"))
    assert [f.name for f in one] == [f.name for f in two] and len(one) == 2
    assert [Program.load(f).digest() for f in one] == [Program.load(f).digest() for f in two]


def test_export_ids_pick_candidates_the_front_would_not(tmp_path):
    """``--ids`` exports the named candidates of the final population instead of the spread front."""
    from rawdemosaic.search.cli import _spread, export_run

    cfg = E.load_config(text=CFG % "joint")
    cfg["search"]["generations"] = 1
    st = E.run(cfg, tmp_path / "run", cfa="bayer", seed=5, trainer=fake_trainer, executor=E.SerialExecutor(), quiet=True)
    default = {c.id for c in _spread(E.front(st.population), 1)}
    pick = [c.id for c in st.population if c.id not in default][:2]
    assert pick, "the fixture run should leave more than one candidate"
    export_run(tmp_path / "run", tmp_path / "models", top=1, trainer=fake_trainer, trained_dir=tmp_path / "t", train_only=True, ids=pick, quiet=True)
    assert sorted(f.name for f in (tmp_path / "t").glob("c*.json")) == sorted(f"c{i}.json" for i in pick)
    with pytest.raises(ValueError, match="not in the final population"):
        export_run(tmp_path / "run", tmp_path / "models", trainer=fake_trainer, train_only=True, trained_dir=tmp_path / "t", ids=[10**6], quiet=True)


def test_export_ensemble_writes_the_averaged_variant(tmp_path):
    """``--ensemble 2`` adds ``<name>_x2``: the same weights averaged over two reflections, its own
    measurement and cost, provenance naming the base entry."""
    from rawdemosaic.evaluate import TEST_SETS, data_dir
    from rawdemosaic.registry import load_registry
    from rawdemosaic.search.cli import export_run

    if not (data_dir() / TEST_SETS["kodak24"]).is_dir():
        pytest.skip("no test images")
    cfg = E.load_config(text=CFG % "joint")
    cfg["search"]["generations"] = 1
    E.run(cfg, tmp_path / "run", cfa="bayer", seed=3, trainer=fake_trainer, executor=E.SerialExecutor(), quiet=True)
    written = export_run(tmp_path / "run", tmp_path / "models", top=1, trainer=fake_trainer, limit=1, sets=["kodak24"], ensemble=[2], quiet=True)
    base, x2 = written
    assert x2.name == base.name + "_x2" and x2.provenance["ensemble_of"] == base.name and x2.provenance["ensemble"] == 2
    assert x2.program().ensemble == 2 and x2.program().digest() == base.program().with_ensemble(2).digest()
    assert x2.cost == pytest.approx(2 * base.cost + 6, abs=1e-3)
    assert x2.quality["kodak24@1"] != base.quality["kodak24@1"]  # measured, not copied
    assert {e.name for e in load_registry(tmp_path / "models")} == {base.name, x2.name}


def test_workers_run_the_search_in_processes_with_the_serial_result(tmp_path):
    cfg = E.load_config(text=CFG % "joint")
    cfg["search"]["generations"] = 1
    assert isinstance(E.make_executor(cfg), E.SerialExecutor)
    cfg["search"]["workers"] = 2
    ex = E.make_executor(cfg)
    assert isinstance(ex, E.ProcessExecutor) and ex.n == 2
    a = E.run(cfg, tmp_path / "proc", cfa="bayer", seed=4, trainer=fake_trainer, quiet=True)
    b = E.run(cfg, tmp_path / "ser", cfa="bayer", seed=4, trainer=fake_trainer, executor=E.SerialExecutor(), quiet=True)
    assert _state_sig(a) == _state_sig(b)


def test_seed_entries_start_the_search_from_registry_graphs(tmp_path):
    from rawdemosaic.cfa import CFA
    from rawdemosaic.registry import kernels

    name = min((k for k in kernels("bayer", plugins=False) if k.provenance.get("run")), key=lambda k: k.cost).name
    cfg = E.load_config(text=CFG % "joint")
    cfg["search"]["generations"] = 0
    cfg["space"]["seed_entries"] = {"bayer": [name]}
    seeds = E._seed_entries([name], CFA.BAYER)
    assert seeds[0].name == name and seeds[0].meta == {"seed_entry": name}
    st = E.run(cfg, tmp_path / "r", cfa="bayer", seed=4, trainer=fake_trainer, executor=E.SerialExecutor(), quiet=True)
    assert S.structural_hash(seeds[0]) in st.seen
    assert any(c.hash == S.structural_hash(seeds[0]) and c.mutation == "seed" for c in st.population)
    # the run keeps the seed graph; a program file seeds a run as the registry name does
    kept = tmp_path / "r" / "seeds" / f"{name}.json"
    assert kept.is_file()
    again = E._seed_entries([str(kept)], CFA.BAYER)[0]
    assert S.structural_hash(again) == S.structural_hash(seeds[0]) and again.meta == {"seed_entry": name}
    with pytest.raises(ValueError, match="no such program file"):
        E._seed_entries([str(tmp_path / "nothing.json")], CFA.BAYER)
    with pytest.raises(ValueError, match="not in the registry"):
        E._seed_entries(["no_such_kernel"], CFA.BAYER)
    with pytest.raises(ValueError, match="xtrans kernel"):
        E._seed_entries(["xtrans_linear"], CFA.BAYER)


def test_seed_weights_start_an_entry_from_its_own_weights(tmp_path):
    """With ``seed_weights`` the entry's job carries the entry itself as ``init_from`` (its weights are the
    first initialisation); without it, or without ``inherit``, it is trained from scratch like the paper's seeds."""
    seen: dict[str, object] = {}

    def trainer(program, seed, init_from):
        seen[S.structural_hash(program)] = init_from
        return fake_trainer(program, seed, init_from)

    from rawdemosaic.cfa import CFA

    # Malvar's graph with its nodes named as the search's green/chroma parts (search/configs/bayer_lin.toml)
    name = str(Path(__file__).resolve().parents[2] / "search" / "results" / "bayer_lin_seed" / "bayer_malvar_graph.json")
    entry = E._seed_entries([name], CFA.BAYER)[0]
    h = S.structural_hash(entry)
    for flag, inherit, want in ((True, True, True), (False, True, False), (True, False, False)):
        seen.clear()
        cfg = E.load_config(text=CFG % "joint")
        cfg["search"]["generations"] = 0
        cfg["search"]["inherit"] = inherit
        cfg["space"]["seed_entries"] = {"bayer": [name]}
        cfg["space"]["seed_weights"] = flag
        cfg["tiers"]["min_cost"] = 4.0
        E.run(cfg, tmp_path / f"r{flag}{inherit}", cfa="bayer", seed=4, trainer=trainer, executor=E.SerialExecutor(), quiet=True)
        assert h in seen, "the entry was not trained"
        got = seen[h]
        if want:
            assert got is not None and set(got.weights) == set(entry.weights)
            assert all(np.array_equal(got.weights[k], entry.weights[k]) for k in entry.weights)
        else:
            assert got is None
        others = [v for k, v in seen.items() if k != h and v is not None]
        assert not any(set(v.weights) == set(entry.weights) and all(np.array_equal(v.weights[k], entry.weights[k]) for k in entry.weights) for v in others)


def test_export_refuses_a_trained_directory_of_another_run(tmp_path):
    """A trained finalist is reused only if it is the candidate's program: ``c2.json`` of another run (the
    trained directories are named by candidate number) is an error, not silently exported."""
    from rawdemosaic.search.cli import export_run

    cfg = E.load_config(text=CFG % "joint")
    cfg["search"]["generations"] = 1
    E.run(cfg, tmp_path / "a", cfa="bayer", seed=5, trainer=fake_trainer, executor=E.SerialExecutor(), quiet=True)
    E.run(cfg, tmp_path / "b", cfa="bayer", seed=6, trainer=fake_trainer, executor=E.SerialExecutor(), quiet=True)
    tdir = tmp_path / "trained"
    export_run(tmp_path / "a", tmp_path / "m", top=2, trainer=fake_trainer, trained_dir=tdir, train_only=True, quiet=True)
    ids_a = {int(f.stem[1:]) for f in tdir.glob("c*.json")}
    hash_b = {c.id: c.hash for c in E.load_state(tmp_path / "b").population}
    hash_a = {c.id: c.hash for c in E.load_state(tmp_path / "a").population}
    clash = [i for i in ids_a if i in hash_b and hash_b[i] != hash_a[i]]
    assert clash, "the two runs should share a candidate number with different programs"
    with pytest.raises(ValueError, match=f"not candidate {clash[0]} of"):
        export_run(tmp_path / "b", tmp_path / "m", ids=[clash[0]], trainer=fake_trainer, trained_dir=tdir, train_only=True, quiet=True)
    # the run's own trained finalists are reused as before
    assert export_run(tmp_path / "a", tmp_path / "m", top=2, trainer=fake_trainer, trained_dir=tdir, train_only=True, quiet=True) == []


_ORPHAN_SRC = """
import os, sys, time
from rawdemosaic.search import evolve as E

def slow(program, seed, init_from):
    print(os.getpid(), flush=True)
    time.sleep(60)
    return program, 1.0

if __name__ == "__main__":
    import threading
    threading.Timer(8.0, lambda: os._exit(0)).start()  # the parent dies (killed) while its worker trains
    E.ProcessExecutor(1).map(slow, [E.Job(1, None, 0, None)])
"""


def test_process_workers_end_with_their_parent(tmp_path):
    import subprocess
    import sys
    import time

    script = tmp_path / "orphan.py"
    script.write_text(_ORPHAN_SRC)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60).stdout.split()
    assert out, "the worker did not start"
    pid = int(out[0])
    deadline = time.time() + 15
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    os.kill(pid, 9)
    pytest.fail(f"worker {pid} outlived its parent by 15 s")


@pytest.mark.parametrize("name", sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "search" / "configs").glob("*.toml")))
def test_packaged_configs_load_and_their_seed_entries_exist(name):
    # registry entries come and go (the front rule): a config naming a dropped one would fail at `run`
    from rawdemosaic.search.cli import config_path

    cfg = E.load_config(config_path(name))
    for cfa, names in cfg["space"].get("seed_entries", {}).items():
        cwd = os.getcwd()
        try:
            os.chdir(Path(__file__).resolve().parents[2])  # program files are relative to the checkout
            from rawdemosaic.cfa import CFA

            assert E._seed_entries(names, CFA(cfa))
        finally:
            os.chdir(cwd)
