"""Multi-objective evolutionary search over demosaicking programs (cost vs validation PSNR).

Cost tiers double in width (``[c0, 2 c0), [2 c0, 4 c0), ...``); inside each tier the population keeps
its best members by Pareto rank (cost down, PSNR up). Each generation samples parents with
probability decreasing in rank, *without replacement* (a parent is drawn again only once every other
member was drawn), mutates and prunes children (:mod:`.space`), trains them in parallel on Ray and
merges them into the tiers.

A run directory holds::

    config.toml   the config the run was started with (byte copy)     run.json   seed, CFA, overrides
    state.json    pointer to the last completed generation            state/gen_NNNN/   that generation
    front.log     the front per tier after every generation          history.jsonl one line per candidate

``state/gen_NNNN/`` holds the population (programs as JSON + npz), the green pool, the RNG state, the
structural hashes seen and the generation index; it is written to a temporary directory and renamed,
and ``state.json`` is replaced atomically afterwards, so a run killed at any moment resumes from its
last completed generation. Everything random is drawn in the driver from one seeded generator, and
each candidate trains with a seed derived from the run seed and its id; results are merged in id
order, so a resumed run reproduces an uninterrupted one.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import os
import shutil
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..cfa import CFA
from ..program.graph import Program
from . import space as S
from .fold import deployed

__all__ = [
    "DEFAULTS",
    "Candidate",
    "load_config",
    "tier_of",
    "tier_bounds",
    "pareto_ranks",
    "select_survivors",
    "sample_parents",
    "run",
    "resume",
    "load_state",
    "front",
    "make_trainer",
]

DEFAULTS: dict[str, Any] = {
    "search": {
        "mode": "green_first",  # "green_first" | "joint" | "green"
        "seed": 0,
        "generations": 10,  # per phase unless green_generations / chroma_generations are given
        "children": 8,  # children per generation
        "initial": 8,  # initial population of a phase (seeds, then seed mutants)
        "tier_size": 4,  # members kept per tier
        "pressure": 1.0,  # parent weight exp(-pressure * rank)
        "green_pool": 3,  # green programs the chroma phase builds on
        "inherit": True,  # children start from their parent's weights where shapes allow
        "inherit_ab_fraction": 0.0,  # fraction of children also trained from scratch (logs both)
        "mutation_attempts": 30,
        "workers": 1,  # candidates trained in parallel processes when Ray is off (one GPU is shared)
    },
    "tiers": {"min_cost": 10.0, "max_cost": 1000.0},
    "space": {},
    "train": {
        "trainer": "torch",  # or "module:callable" returning a trainer for (config, cfa)
        "data": [],  # image directories (absolute, or relative to the data directory); [] = the default corpus
        "patch": 48,  # a multiple of 4 CFA periods (the coarsest grid the space allows)
        "count": 1024,  # training patches (fixed subset)
        "val_count": 256,  # validation patches (the corpus' validation split)
        "steps": 300,
        "lr": 2e-3,
        "batch": 16,
        "inits": 3,
        "linear": True,
        "augment": True,
        "loss": "l2",  # "l2" | "l1" (per-pixel loss on the patch interior)
        "keep_zeros": False,  # zero weights of inherited / own initialisations stay zero (sparse kernels keep their cost)
        "device": "auto",
    },
    "ray": {"enabled": True, "address": "", "num_cpus": 0, "gpus_per_task": 1.0},
    "export": {"top": 6, "steps": 2000, "lr": 2e-3, "batch": 16, "patch": 96, "sets": ["kodak24", "mcmaster18"], "prefix": "search"},
}


def _seed_entries(names: Sequence[str], cfa: CFA) -> list[Program]:
    """Seed programs from ``[space] seed_entries``: registry names (the models directory), or program files
    (``*.json``, relative to the working directory) such as the copies a run keeps in ``<run>/seeds``.
    Their graphs are trained anew like any seed; with ``[space] seed_weights`` (and ``inherit``) the first
    initialisation starts from the entry's own weights."""
    from ..registry import default_models_dir, load_registry

    by_name = {e.name: e for e in load_registry(default_models_dir())} if any(not str(n).endswith(".json") for n in names) else {}
    out = []
    for n in names:
        if str(n).endswith(".json"):
            if not Path(n).is_file():
                raise ValueError(f"seed entry {n!r}: no such program file")
            p = Program.load(n)
        elif n in by_name:
            p = by_name[n].program()
        else:
            raise ValueError(f"seed entry {n!r} is not in the registry {default_models_dir()}")
        if p.cfa != cfa:
            raise ValueError(f"seed entry {n!r} is a {p.cfa.value} kernel, the search is {cfa.value}")
        out.append(Program(p.name, p.cfa, p.nodes, p.output, p.weights, {"seed_entry": p.name}))
    return out


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


#: keys a config may hold beyond :data:`DEFAULTS` (read with ``.get`` where they are used)
_EXTRA_KEYS: dict[str, tuple[str, ...]] = {
    "search": ("cfa", "green_generations", "chroma_generations"),
    "train": ("synthetic", "hard_fraction", "pool_factor", "color", "limit", "cache_dir"),
    "export": ("patch", "count", "val_count", "batch", "lr", "loss", "limit", "device", "synthetic", "color", "keep_zeros"),
    "space": ("seed_weights", "seed_entries", "residual_seeds", "deep_seeds", "midres_seeds"),
}


def _known_keys(table: str) -> set[str]:
    keys = set(DEFAULTS[table]) | set(_EXTRA_KEYS.get(table, ()))
    if table == "space":
        from .space import SpaceConfig

        keys |= set(SpaceConfig.__dataclass_fields__) - {"cfa", "mode", "green_pool"}
    return keys


def check_config(doc: dict, source: str = "config") -> None:
    """Refuse what a config must not hold: unknown tables or keys (a typo would silently fall back to the
    default) and values of another type than the default's (``enabled = "no"`` would read as true).

    Raises
    ------
    ValueError
        Naming ``source``, the key and what it takes.
    """
    import difflib

    for table, body in doc.items():
        if table not in DEFAULTS or not isinstance(body, dict):
            raise ValueError(f"{source}: unknown table [{table}] (known: {', '.join(f'[{t}]' for t in DEFAULTS)})")
        known = _known_keys(table)
        for k, v in body.items():
            if k not in known:
                near = difflib.get_close_matches(k, sorted(known), n=1)
                raise ValueError(f"{source}: unknown key {k!r} in [{table}]" + (f" (did you mean {near[0]!r}?)" if near else f" (known: {', '.join(sorted(known))})"))
            # an [export] table also takes [train] keys (the finalists' training): typed like them
            d = DEFAULTS[table].get(k, DEFAULTS["train"].get(k) if table == "export" else None)
            if d is None:
                continue
            if isinstance(d, bool):
                ok, what = isinstance(v, bool), "true or false"
            elif isinstance(d, int):
                ok, what = isinstance(v, int) and not isinstance(v, bool), "an integer"
            elif isinstance(d, float):
                ok, what = isinstance(v, (int, float)) and not isinstance(v, bool), "a number"
            elif isinstance(d, str):
                ok, what = isinstance(v, str), "a string"
            elif isinstance(d, list):
                ok, what = isinstance(v, list), "a list"
            else:
                ok, what = True, ""
            if not ok:
                raise ValueError(f"{source}: [{table}] {k} takes {what}, got {v!r}")


def load_config(path: str | Path | None = None, text: str | None = None, source: str | None = None) -> dict:
    """A config (TOML) merged over :data:`DEFAULTS`, checked by :func:`check_config`.

    Raises
    ------
    ValueError
        The file cannot be read or parsed, or holds an unknown key or a value of the wrong type (the message
        names ``source``, default the path).
    """
    source = source or (str(path) if path is not None else "config")
    try:
        if text is None:
            text = Path(path).read_text() if path is not None else ""
        doc = tomllib.loads(text)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"{source}: cannot read the config: {' '.join(str(e).split())}") from None
    check_config(doc, source)
    return _merge(DEFAULTS, doc)


# ------------------------------------------------------------------------------------------------
# Candidates, tiers, Pareto ranks, selection


@dataclass
class Candidate:
    id: int
    program: Program
    psnr: float
    cost: float
    gen: int
    phase: str
    parent: int | None = None
    mutation: str = "seed"
    inherited: bool = False
    hash: str = ""
    psnr_fresh: float | None = None  # A/B: the same child trained from scratch
    seconds: float = 0.0

    @functools.cached_property
    def total_cost(self) -> float:
        """The whole program's cost as exported (affine chains folded), computed once: ``info`` is written
        for every member at every save, and a candidate's program does not change."""
        return round(deployed(self.program).cost(), 4)

    def info(self) -> dict:
        return {
            "id": self.id,
            "psnr": _num(self.psnr),
            "cost": self.cost,
            "total_cost": self.total_cost,
            "gen": self.gen,
            "phase": self.phase,
            "parent": self.parent,
            "mutation": self.mutation,
            "inherited": self.inherited,
            "hash": self.hash,
            "psnr_fresh": _num(self.psnr_fresh),
            "seconds": round(self.seconds, 3),
        }


def _num(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def n_tiers(min_cost: float, max_cost: float) -> int:
    return max(1, math.ceil(math.log2(max_cost / min_cost) - 1e-9))


def tier_bounds(min_cost: float, max_cost: float) -> list[tuple[float, float]]:
    """``[(c0, 2 c0), (2 c0, 4 c0), ...]`` covering ``[min_cost, max_cost)``."""
    return [(min_cost * 2**k, min_cost * 2 ** (k + 1)) for k in range(n_tiers(min_cost, max_cost))]


def tier_of(cost: float, min_cost: float, max_cost: float) -> int | None:
    """Index of the tier holding ``cost`` (``None`` outside the tiers)."""
    if not (cost >= min_cost) or not math.isfinite(cost):
        return None
    k = int(math.floor(math.log2(cost / min_cost)))
    return k if k < n_tiers(min_cost, max_cost) else None


def pareto_ranks(points: Sequence[tuple[float, float]]) -> list[int]:
    """Non-dominated sorting of ``(cost, psnr)`` points (lower cost and higher PSNR are better): rank 0
    is the front, rank 1 the front once rank 0 is removed, ..."""
    n = len(points)
    dominated_by = [0] * n
    dominates: list[list[int]] = [[] for _ in range(n)]
    for i in range(n):
        ci, qi = points[i]
        for j in range(n):
            if i == j:
                continue
            cj, qj = points[j]
            if ci <= cj and qi >= qj and (ci < cj or qi > qj):
                dominates[i].append(j)
            elif cj <= ci and qj >= qi and (cj < ci or qj > qi):
                dominated_by[i] += 1
    ranks = [0] * n
    current = [i for i in range(n) if dominated_by[i] == 0]
    r = 0
    while current:
        nxt = []
        for i in current:
            ranks[i] = r
            for j in dominates[i]:
                dominated_by[j] -= 1
                if dominated_by[j] == 0:
                    nxt.append(j)
        current = nxt
        r += 1
    return ranks


def _ranked_tiers(pop: Sequence[Candidate], tiers: dict) -> dict[int, list[tuple[int, Candidate]]]:
    """Per tier: ``(rank, candidate)`` sorted best first."""
    by: dict[int, list[Candidate]] = {}
    for c in pop:
        t = tier_of(c.cost, tiers["min_cost"], tiers["max_cost"])
        if t is not None and math.isfinite(c.psnr):
            by.setdefault(t, []).append(c)
    out = {}
    for t, cs in sorted(by.items()):
        ranks = pareto_ranks([(c.cost, c.psnr) for c in cs])
        out[t] = sorted(zip(ranks, cs), key=lambda rc: (rc[0], -rc[1].psnr, rc[1].cost, rc[1].id))
    return out


def select_survivors(pop: Sequence[Candidate], tiers: dict, tier_size: int) -> list[Candidate]:
    """The best ``tier_size`` members of every tier by (Pareto rank, PSNR); sorted by id."""
    keep = []
    for t, rc in _ranked_tiers(pop, tiers).items():
        keep += [c for _, c in rc[:tier_size]]
    return sorted(keep, key=lambda c: c.id)


def sample_parents(pop: Sequence[Candidate], k: int, rng: np.random.Generator, tiers: dict, pressure: float = 1.0) -> list[Candidate]:
    """``k`` parents, probability ``exp(-pressure * rank)`` (rank within the parent's tier), drawn
    without replacement; when ``k`` exceeds the population, further rounds start afresh."""
    ranked = [(r, c) for rc in _ranked_tiers(pop, tiers).values() for r, c in rc]
    ranked.sort(key=lambda rc: rc[1].id)
    if not ranked or k <= 0:
        return []
    w = np.array([math.exp(-pressure * r) for r, _ in ranked])
    out: list[Candidate] = []
    while len(out) < k:
        m = min(k - len(out), len(ranked))
        idx = rng.choice(len(ranked), size=m, replace=False, p=w / w.sum())
        out += [ranked[int(i)][1] for i in idx]
    return out


def front(pop: Sequence[Candidate]) -> list[Candidate]:
    """The overall Pareto front (cost up, PSNR up), cheapest first."""
    good = [c for c in pop if math.isfinite(c.psnr)]
    ranks = pareto_ranks([(c.cost, c.psnr) for c in good])
    return sorted((c for c, r in zip(good, ranks) if r == 0), key=lambda c: (c.cost, c.id))


# ------------------------------------------------------------------------------------------------
# Training: trainers and executors


_DATA_CACHE: dict[str, Any] = {}


class TorchTrainer:
    """Fast training through :func:`rawdemosaic.search.train.train` (datasets built once per worker)."""

    def __init__(self, train_cfg: dict, cfa: CFA | str, seed: int = 0):
        self.cfg = dict(train_cfg)
        self.cfa = CFA(cfa).value
        self.seed = seed

    def datasets(self):
        key = json.dumps([self.cfg, self.cfa, self.seed], sort_keys=True, default=str)
        if key not in _DATA_CACHE:
            from . import data as D

            cfg = self.cfg
            dirs = cfg.get("data") or None
            common = {k: cfg[k] for k in ("limit", "cache_dir") if k in cfg and k != "cache_dir"}
            tr_kw = {k: cfg[k] for k in ("synthetic", "hard_fraction", "pool_factor", "color") if k in cfg}
            cache = cfg.get("cache_dir") or os.environ.get("RAWDEMOSAIC_PATCH_CACHE")  # shared by worker processes
            train = D.PatchDataset(dirs, self.cfa, cfg["patch"], linear=cfg["linear"], augment=cfg["augment"], seed=self.seed,
                                   split="train", count=int(cfg.get("count", 1024)),
                                   cache=(Path(cache) / f"train_{self.cfa}_{self.seed}.npz") if cache else None, **common, **tr_kw)
            val = D.PatchDataset(dirs, self.cfa, cfg["patch"], linear=cfg["linear"], augment=False, seed=self.seed + 1,
                                 split="val", count=int(cfg.get("val_count", 256)),
                                 cache=(Path(cache) / f"val_{self.cfa}_{self.seed}.npz") if cache else None, **common)
            _DATA_CACHE[key] = (train, val)
        return _DATA_CACHE[key]

    def __call__(self, program: Program, seed: int, init_from: Program | None) -> tuple[Program, float]:
        from .train import train

        tr, va = self.datasets()
        cfg = self.cfg
        device = None if cfg.get("device", "auto") == "auto" else cfg["device"]
        res = _call(train, program, tr, va, steps=cfg["steps"], lr=cfg["lr"], batch=cfg["batch"], seed=seed, inits=cfg["inits"], init_from=init_from, device=device, loss=cfg.get("loss", "l2"),
                    keep_zeros=bool(cfg.get("keep_zeros", False)))
        return res.program, float(res.val_psnr)


def _call(fn: Callable, *args, **kwargs):
    """Call ``fn`` dropping keyword arguments it does not accept (the search A interfaces evolve)."""
    import inspect

    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return fn(*args, **kwargs)
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return fn(*args, **kwargs)
    return fn(*args, **{k: v for k, v in kwargs.items() if k in sig.parameters})


def make_trainer(config: dict, cfa: CFA | str, seed: int):
    spec = config["train"].get("trainer", "torch")
    if spec == "torch":
        return TorchTrainer(config["train"], cfa, seed)
    import importlib

    mod, _, attr = spec.partition(":")
    return getattr(importlib.import_module(mod), attr)(config, cfa)


@dataclass
class Job:
    id: int
    program: Program
    seed: int
    init_from: Program | None
    fresh_too: bool = False


def _train_job(trainer, job: Job) -> dict:
    try:
        import torch

        if not torch.cuda.is_available():
            torch.set_num_threads(1)
    except ImportError:  # stand-in trainers in tests
        pass
    t0 = time.time()
    out: dict[str, Any] = {"id": job.id}
    try:
        prog, psnr = trainer(job.program, job.seed, job.init_from)
        out.update(program=prog, psnr=float(psnr) if math.isfinite(psnr) else -math.inf)
        if job.fresh_too:
            _, out["psnr_fresh"] = trainer(job.program, job.seed + 1, None)
    except Exception as e:  # noqa: BLE001 - one failing candidate must not end the search
        out.update(program=job.program, psnr=-math.inf, error=f"{type(e).__name__}: {e}")
    out["seconds"] = time.time() - t0
    return out


# Executors: ``map(trainer, jobs, bar=None, on_result=None)`` trains the jobs and returns their results by
# id; ``on_result(result)`` is called as each one finishes (the export saves finalists that way).


class SerialExecutor:
    def map(self, trainer, jobs: Sequence[Job], bar=None, on_result=None) -> list[dict]:
        res = []
        for j in jobs:
            res.append(_train_job(trainer, j))
            if on_result is not None:
                on_result(res[-1])
            if bar is not None:
                bar.update(1)
        return sorted(res, key=lambda r: r["id"])


def _exit_with_parent(parent: int, every: float = 2.0) -> None:
    """Worker initialiser: end this process when ``parent`` is gone (a killed search or export must not
    leave its workers training on for minutes, holding the cores or the GPU)."""
    import threading

    def watch() -> None:
        while True:
            time.sleep(every)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


class ProcessExecutor:
    """Jobs in ``n`` worker processes (spawned, so CUDA works in them; one GPU is shared), no Ray needed.
    Workers end with the process that started them."""

    def __init__(self, n: int):
        self.n = int(n)

    def map(self, trainer, jobs: Sequence[Job], bar=None, on_result=None) -> list[dict]:
        import concurrent.futures as cf
        import multiprocessing as mp

        res = []
        with cf.ProcessPoolExecutor(max_workers=max(1, min(self.n, len(jobs))), mp_context=mp.get_context("spawn"), initializer=_exit_with_parent, initargs=(os.getpid(),)) as pool:
            for fut in cf.as_completed([pool.submit(_train_job, trainer, j) for j in jobs]):
                res.append(fut.result())
                if on_result is not None:
                    on_result(res[-1])
                if bar is not None:
                    bar.update(1)
        return sorted(res, key=lambda r: r["id"])


class RayExecutor:
    """Candidates as Ray tasks: one CPU each (torch single-threaded), or a GPU share when present."""

    def __init__(self, address: str = "", num_cpus: int = 0, gpus_per_task: float = 1.0):
        import ray

        if not ray.is_initialized():
            if address:
                ray.init(address=address, ignore_reinit_error=True, log_to_driver=True)
            else:
                ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, ignore_reinit_error=True, log_to_driver=True)
        self.ray = ray
        gpus = ray.cluster_resources().get("GPU", 0)
        self.remote = ray.remote(_train_job).options(num_cpus=1, num_gpus=gpus_per_task if gpus else 0, max_retries=1)

    def map(self, trainer, jobs: Sequence[Job], bar=None, on_result=None) -> list[dict]:
        ray = self.ray
        tref = ray.put(trainer)
        pending = [self.remote.remote(tref, j) for j in jobs]
        res = []
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            got = ray.get(done)
            res += got
            for r in got if on_result is not None else ():
                on_result(r)
            if bar is not None:
                bar.update(len(done))
        return sorted(res, key=lambda r: r["id"])


def make_executor(config: dict, address: str | None = None):
    """Ray when enabled (or given an address), else ``[search] workers`` processes (> 1), else serial."""
    rc = config["ray"]
    if not rc.get("enabled", True) and not address:
        n = int(config["search"].get("workers", 1))
        return ProcessExecutor(n) if n > 1 else SerialExecutor()
    return RayExecutor(address or rc.get("address", ""), int(rc.get("num_cpus", 0)), float(rc.get("gpus_per_task", 1.0)))


# ------------------------------------------------------------------------------------------------
# State


@dataclass
class State:
    generation: int = 0  # completed generations, all phases
    phase_index: int = 0
    phase_gen: int = 0  # completed generations of the current phase (0: its initial population is due)
    population: list[Candidate] = field(default_factory=list)
    green_pool: list[Program] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    rng_state: dict = field(default_factory=dict)
    next_id: int = 0
    pruned: dict[str, int] = field(default_factory=dict)
    done: bool = False


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def save_state(run_dir: Path, st: State, keep: int = 2) -> Path:
    run_dir = Path(run_dir)
    base = run_dir / "state"
    base.mkdir(parents=True, exist_ok=True)
    final = base / f"gen_{st.generation:04d}"
    tmp = base / f".tmp_gen_{st.generation:04d}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "pop").mkdir(parents=True)
    (tmp / "pool").mkdir()
    for c in st.population:
        c.program.save(tmp / "pop" / f"c{c.id:06d}.json")
    for k, g in enumerate(st.green_pool):
        g.save(tmp / "pool" / f"g{k:03d}.json")
    doc = {
        "generation": st.generation,
        "phase_index": st.phase_index,
        "phase_gen": st.phase_gen,
        "next_id": st.next_id,
        "rng_state": st.rng_state,
        "seen": sorted(st.seen),
        "pruned": st.pruned,
        "done": st.done,
        "population": [c.info() for c in st.population],
        "green_pool": len(st.green_pool),
    }
    (tmp / "state.json").write_text(json.dumps(doc, indent=1, default=_jsonable))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    _atomic_text(run_dir / "state.json", json.dumps({"current": f"state/{final.name}", "generation": st.generation, "done": st.done}) + "\n")
    olds = sorted(p for p in base.glob("gen_*") if p != final)
    for p in olds[: max(0, len(olds) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    return final


def _jsonable(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    raise TypeError(type(o))


def load_state(run_dir: str | Path) -> State | None:
    run_dir = Path(run_dir)
    ptr = run_dir / "state.json"
    if not ptr.exists():
        return None
    d = run_dir / str(_read_json(ptr, "current")["current"])
    keys = ("population", "green_pool", "generation", "phase_index", "phase_gen", "seen", "rng_state", "next_id")
    doc = _read_json(d / "state.json", *keys)
    try:
        return _state_from(doc, d)
    except (KeyError, TypeError) as e:
        raise ValueError(f"{d / 'state.json'}: damaged run file ({type(e).__name__}: {e})") from None


def _state_from(doc: dict, d: Path) -> State:
    pop = []
    for info in doc["population"]:
        prog = Program.load(d / "pop" / f"c{info['id']:06d}.json")
        pop.append(
            Candidate(
                id=info["id"], program=prog, psnr=info["psnr"] if info["psnr"] is not None else -math.inf, cost=info["cost"],
                gen=info["gen"], phase=info["phase"], parent=info["parent"], mutation=info["mutation"],
                inherited=info["inherited"], hash=info["hash"], psnr_fresh=info["psnr_fresh"], seconds=info["seconds"],
            )
        )
    pool = [Program.load(d / "pool" / f"g{k:03d}.json") for k in range(doc["green_pool"])]
    return State(
        generation=doc["generation"], phase_index=doc["phase_index"], phase_gen=doc["phase_gen"], population=pop,
        green_pool=pool, seen=set(doc["seen"]), rng_state=doc["rng_state"], next_id=doc["next_id"],
        pruned=doc.get("pruned", {}), done=doc.get("done", False),
    )


# ------------------------------------------------------------------------------------------------
# The search


def phases(config: dict) -> list[tuple[str, int]]:
    s = config["search"]
    g = int(s["generations"])
    mode = s["mode"]
    if mode == "green_first":
        return [("green", int(s.get("green_generations", g))), ("chroma", int(s.get("chroma_generations", g)))]
    if mode in ("joint", "green"):
        return [(mode, g)]
    raise ValueError(f"unknown search mode {mode!r} (green_first, joint, green)")


class Search:
    """One run: config, run directory, trainer and executor. Use :func:`run` / :func:`resume`."""

    def __init__(self, config: dict, run_dir: Path, cfa: CFA, seed: int, trainer=None, executor=None, quiet: bool = False):
        self.config = config
        self.run_dir = Path(run_dir)
        self.cfa = CFA(cfa)
        self.seed = int(seed)
        self.trainer = trainer if trainer is not None else make_trainer(config, self.cfa, self.seed)
        self.executor = executor
        self.quiet = quiet
        self.tiers = {"min_cost": float(config["tiers"]["min_cost"]), "max_cost": float(config["tiers"]["max_cost"])}
        self.phases = phases(config)

    # -- helpers
    def space(self, phase: str, pool: Sequence[Program] = ()) -> S.SpaceConfig:
        sp = S.SpaceConfig.from_dict(self.config["space"], self.cfa, phase)
        sp.min_cost, sp.max_cost = self.tiers["min_cost"], self.tiers["min_cost"] * 2 ** n_tiers(**self.tiers)
        sp.green_pool = list(pool)
        return sp

    def log(self, msg: str) -> None:
        with open(self.run_dir / "front.log", "a") as f:
            f.write(msg + "\n")
        if not self.quiet:
            print(msg, flush=True)

    def _executor(self):
        if self.executor is None:
            self.executor = make_executor(self.config)
        return self.executor

    def _train(self, st: State, items: list[tuple[Program, Candidate | None, str, bool]], phase: str, rng) -> list[Candidate]:
        """Train ``(program, parent, mutation, init_from_program)`` items as new candidates."""
        sc = self.config["search"]
        sp = self.space(phase)
        jobs, meta = [], {}
        for prog, parent, mutation, warm in items:
            cid = st.next_id
            st.next_id += 1
            fresh_too = bool(warm and rng.random() < float(sc["inherit_ab_fraction"]))
            prog = Program(f"{self.cfa.value}_c{cid:06d}", prog.cfa, prog.nodes, prog.output, prog.weights, {})
            jobs.append(Job(cid, prog, self.seed * 1_000_003 + cid, prog if warm else None, fresh_too))
            meta[cid] = (parent, mutation, warm, S.structural_hash(prog))
        bar = None
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(jobs), desc=f"gen {st.generation + 1} ({phase})", disable=self.quiet, leave=False)
        except ImportError:  # pragma: no cover
            pass
        results = self._executor().map(self.trainer, jobs, bar) if jobs else []
        if bar is not None:
            bar.close()
        out = []
        with open(self.run_dir / "history.jsonl", "a") as hist:
            for r in sorted(results, key=lambda r: r["id"]):
                parent, mutation, warm, h = meta[r["id"]]
                prog = r["program"]
                cand = Candidate(
                    id=r["id"], program=prog, psnr=r["psnr"], cost=sp.cost(prog), gen=st.generation + 1, phase=phase,
                    parent=parent.id if parent else None, mutation=mutation, inherited=warm, hash=h,
                    psnr_fresh=r.get("psnr_fresh"), seconds=r["seconds"],
                )
                rec = cand.info()
                if "error" in r:
                    rec["error"] = r["error"]
                hist.write(json.dumps(rec) + "\n")
                out.append(cand)
        return out

    def _child(self, st: State, parent: Program, sp: S.SpaceConfig, rng) -> tuple[Program, str] | None:
        for _ in range(int(self.config["search"]["mutation_attempts"])):
            try:
                child, kind = S.mutate(parent, rng, sp)
            except S.InvalidMutation:
                st.pruned["no valid mutation"] = st.pruned.get("no valid mutation", 0) + 1
                return None
            why = S.prune(child, sp, st.seen)
            if why is None:
                st.seen.add(S.structural_hash(child))
                return child, kind
            key = why.split(" (")[0].split(":")[0] if not why.startswith("cost") else "cost bounds"
            st.pruned[key] = st.pruned.get(key, 0) + 1
        return None

    def _initial(self, st: State, phase: str, rng) -> list[tuple[Program, Candidate | None, str, bool]]:
        sc = self.config["search"]
        width = int(self.config["space"].get("seed_width", 8))
        residual = self.config["space"].get("residual_seeds", {}).get(self.cfa.value, [])
        deep = self.config["space"].get("deep_seeds", {}).get(self.cfa.value, [])
        midres = self.config["space"].get("midres_seeds", {}).get(self.cfa.value, [])
        seeds = S.seed_programs(self.cfa, width=width, seed=self.seed, residual=residual, deep=deep, midres=midres)
        entries = _seed_entries(self.config["space"].get("seed_entries", {}).get(self.cfa.value, []), self.cfa)
        for e in entries:  # the run keeps the seed graphs it started from (registry entries come and go)
            if not (self.run_dir / "seeds" / f"{e.name}.json").exists():
                e.save(self.run_dir / "seeds" / f"{e.name}.json")
        # with `seed_weights`, an entry's first initialisation is its own weights (a trained or classical
        # kernel starts where it is, not from scratch); the other initialisations stay random
        own = {id(e) for e in entries} if self.config["space"].get("seed_weights") and sc["inherit"] else set()
        seeds += entries
        if phase == "green":
            chroma = S.default_chroma(self.cfa, seed=self.seed)
            base = [(S.compose(s, chroma, s.name), id(s) in own) for s in seeds]
        elif phase == "chroma":
            base = [(S.compose(g, s, s.name), True) for g in st.green_pool for s in seeds]
        else:
            base = [(s, id(s) in own) for s in seeds]
        sp = self.space(phase, st.green_pool)
        items = []
        for prog, warm in base:
            h = S.structural_hash(prog)
            why = S.prune(prog, sp, st.seen)
            if why is not None:
                self.log(f"# seed {prog.name} pruned: {why}")
                continue
            st.seen.add(h)
            items.append((prog, None, "seed", warm))
        k = 0
        while len(items) < int(sc["initial"]) and base and k < 10 * int(sc["initial"]):
            prog, warm = base[k % len(base)]
            k += 1
            got = self._child(st, prog, sp, rng)
            if got:
                items.append((got[0], None, "seed+" + got[1], warm and bool(sc["inherit"])))
        return items

    def _log_front(self, st: State, phase: str) -> None:
        self.log(f"== generation {st.generation} phase {phase} (phase generation {st.phase_gen}) population {len(st.population)}")
        for t, rc in _ranked_tiers(st.population, self.tiers).items():
            lo, hi = tier_bounds(**self.tiers)[t]
            pts = ", ".join(f"{c.cost:.1f}/{c.psnr:.2f}" for r, c in rc if r == 0)
            self.log(f"tier {t} [{lo:g}, {hi:g}): front (cost/PSNR) {pts}")

    def _new_pool(self, st: State) -> list[Program]:
        k = int(self.config["search"]["green_pool"])
        fr = front(st.population)
        if len(fr) > k:
            idx = np.unique(np.round(np.linspace(0, len(fr) - 1, k)).astype(int))
            fr = [fr[i] for i in idx]
        return [c.program for c in fr]

    def step(self, st: State, rng) -> None:
        """Run one generation (the next one due) and advance ``st``."""
        phase, n_gen = self.phases[st.phase_index]
        sc = self.config["search"]
        if st.phase_gen == 0:
            if phase == "chroma" and not st.green_pool:
                st.green_pool = self._new_pool(st)
                st.population = []
            items = self._initial(st, phase, rng)
        else:
            sp = self.space(phase, st.green_pool)
            parents = sample_parents(st.population, int(sc["children"]), rng, self.tiers, float(sc["pressure"]))
            items = []
            for par in parents:
                got = self._child(st, par.program, sp, rng)
                if got:
                    items.append((got[0], par, got[1], bool(sc["inherit"])))
        kids = self._train(st, items, phase, rng)
        st.population = select_survivors(st.population + kids, self.tiers, int(sc["tier_size"]))
        st.generation += 1
        st.phase_gen += 1
        self._log_front(st, phase)
        if st.phase_gen > n_gen:  # initial population + n_gen generations done
            if st.phase_index + 1 < len(self.phases):
                st.phase_index += 1
                st.phase_gen = 0
            else:
                st.done = True
        st.rng_state = rng.bit_generator.state

    def total_generations(self) -> int:
        return sum(n + 1 for _, n in self.phases)

    def run(self, st: State | None = None, stop_after: int | None = None) -> State:
        """Continue ``st`` (or start) until done or ``stop_after`` completed generations."""
        rng = np.random.default_rng(self.seed)
        if st is None:
            st = State()
        elif st.rng_state:
            rng.bit_generator.state = st.rng_state
        while not st.done and (stop_after is None or st.generation < stop_after):
            self.step(st, rng)
            save_state(self.run_dir, st)
        return st


def run(config: dict | str | Path, out: str | Path, cfa: CFA | str | None = None, seed: int | None = None, address: str | None = None, trainer=None, executor=None, stop_after: int | None = None, quiet: bool = False, config_text: str | None = None) -> State:
    """Start a run in ``out`` (which must not hold one already).

    ``config``: a path to a TOML file, or a parsed config. ``stop_after``: stop after that many
    completed generations (used by tests to simulate an interruption).
    """
    if not isinstance(config, dict):
        config_text = Path(config).read_text() if Path(config).is_file() else None
        config = load_config(config)  # names the file when it cannot be read or checked
    out = Path(out)
    if (out / "state.json").exists():
        raise FileExistsError(f"{out} already holds a run: use resume")
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a directory")
    if (out / "run.json").exists():
        raise FileExistsError(f"{out}: a run interrupted before its first generation: use resume")
    if out.is_dir() and any(out.iterdir()):
        raise FileExistsError(f"{out}: not empty and not a run (start a run in a new or empty directory)")
    cfa = CFA(cfa or config["search"].get("cfa", "bayer"))
    seed = int(config["search"]["seed"] if seed is None else seed)
    if seed < 0:
        raise ValueError(f"the seed must be >= 0, got {seed}")
    text = config_text if config_text is not None else _to_toml(config)
    if address:
        config = _merge(config, {"ray": {"address": address, "enabled": True}})
    s = Search(config, out, cfa, seed, trainer, executor, quiet)  # checks the mode and the trainer before anything is written
    out.mkdir(parents=True, exist_ok=True)
    _atomic_text(out / "config.toml", text)
    _atomic_text(out / "run.json", json.dumps({"cfa": cfa.value, "seed": seed, "ray_address": address or "", "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "argv": sys.argv}, indent=1) + "\n")
    s.log(f"# run {out} cfa={cfa.value} seed={seed} phases={s.phases} tiers={tier_bounds(**s.tiers)}")
    return s.run(None, stop_after)


def open_run(out: str | Path, trainer=None, executor=None, quiet: bool = False, address: str | None = None) -> Search:
    out = Path(out)
    if not out.is_dir():
        raise FileNotFoundError(f"{out}: no such run directory")
    info = _read_json(out / "run.json", "cfa", "seed")
    config = load_config(out / "config.toml")
    address = address or info.get("ray_address") or ""
    if address:
        config = _merge(config, {"ray": {"address": address, "enabled": True}})
    return Search(config, out, CFA(info["cfa"]), int(info["seed"]), trainer, executor, quiet)


def _read_json(path: Path, *keys: str) -> dict:
    """A run file's JSON object, with ``keys`` present.

    Raises
    ------
    FileNotFoundError
        ``path`` is missing (not a run directory).
    ValueError
        It is not JSON, not an object, or lacks one of ``keys`` (truncated or damaged): the message names it.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (not a run directory?)")
    try:
        doc = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: damaged run file ({e})") from None
    if not isinstance(doc, dict) or any(k not in doc for k in keys):
        raise ValueError(f"{path}: damaged run file (it needs the keys {', '.join(keys)})")
    return doc


def resume(out: str | Path, trainer=None, executor=None, stop_after: int | None = None, quiet: bool = False, address: str | None = None) -> State:
    """Continue the run in ``out`` from its last completed generation."""
    s = open_run(out, trainer, executor, quiet, address)
    st = load_state(out)
    if st is not None and st.done and st.phase_index < len(s.phases) and st.phase_gen <= s.phases[st.phase_index][1]:
        st.done = False  # the run's config.toml was given more generations: extend the finished run
        s.log(f"# extending the finished run to {s.phases[st.phase_index][1]} generations of phase {s.phases[st.phase_index][0]}")
    s.log(f"# resume at generation {st.generation if st else 0}")
    return s.run(st, stop_after)


def _to_toml(d: dict, prefix: str = "") -> str:
    """Minimal TOML writer for configs (tables of scalars and lists)."""
    lines, tables = [], []
    for k, v in d.items():
        if isinstance(v, dict):
            tables.append((k, v))
        else:
            lines.append(f"{k} = {json.dumps(v)}")
    out = "\n".join(lines) + ("\n" if lines else "")
    for k, v in tables:
        name = f"{prefix}.{k}" if prefix else k
        out += f"\n[{name}]\n" + _to_toml(v, name)
    return out
