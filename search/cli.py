"""``rawdemosaic search ...`` (also ``python -m rawdemosaic.search ...``).

Subcommands::

    run     --cfa bayer|xtrans --config FILE --out DIR [--seed N] [--ray-address ADDR]
    resume  DIR [--ray-address ADDR]
    export  DIR [--into DIR] [--top N | --ids ID ...] [--steps N] [--sets kodak24 mcmaster18] [--limit N]
            [--set KEY=VALUE ...] [--trained DIR [--train-only]] [--jobs N]
    prune   ENTRY --keep NODE=N ... [--models DIR] [--into DIR] [--name NAME] [--steps N] [--set KEY=VALUE ...]
            [--sets kodak24 mcmaster18] [--limit N] [--trained DIR [--train-only]]
    residual-chroma ENTRY [--radius R] [--eps E] [--models DIR] [--into DIR] [--name NAME] [--steps N] [--set KEY=VALUE ...]
            [--sets kodak24 mcmaster18] [--limit N] [--trained DIR [--train-only]]
    expand  ENTRY --wide NODE=N ... [--models DIR] [--into DIR] [--name NAME] [--steps N] [--set KEY=VALUE ...]
            [--sets kodak24 mcmaster18] [--limit N] [--trained DIR [--train-only]]
    fold    ENTRY [--models DIR] [--into DIR] [--name NAME] [--sets kodak24 mcmaster18] [--limit N]
    fit-linear --cfa bayer|xtrans --ops N [N ...] [--radius R] [--domain srgb|gamma2] [--color W] [--seed N] [--name NAME] [--into DIR] [--sets ...] [--limit N]
    report  [--models DIR] [--runs DIR ...] --out front.png

``--config`` takes a TOML path or the name of a packaged config (``smoke``, ``bayer``, ``xtrans``).
``export`` fully trains the finalists of the run's front, measures them through the Halide kernel and
adds them to the registry in ``--into`` (default: the registry the runtime uses, ``$RAWDEMOSAIC_MODELS``
or the installed package's ``models``); entries it does not replace are kept. Point the runtime at another registry with
``RAWDEMOSAIC_MODELS=DIR`` or ``rawdemosaic ... --models DIR``.
``prune`` narrows a searched entry's convolutions (:mod:`.channels`), fine-tunes it with the training
settings of the run recorded in its provenance and adds it as a new entry (``<entry>_p<cost>``).
``residual-chroma`` replaces a searched Bayer entry's learned chroma by residual interpolation
(:mod:`.rechroma`), fine-tunes its green through it the same way and adds ``<entry>_rc``.
``expand`` trains a searched entry over-parameterised (:func:`.fold.expand_linear`: each named convolution
widened and followed by a pointwise layer back to its width), with the same recipe as ``prune``, and adds
the result folded back to the entry's cost (``<entry>_w``).
``fold`` folds a registry entry's chains of affine convolutions into single layers (:mod:`.fold`: the same
function at a lower counted cost, no training) and adds ``<entry>_f``.
``fit-linear`` fits the sparse least-squares linear demosaicker of a given cost on the training split
(:mod:`.linear`) and adds it (``<cfa>_lsq<taps>``).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from pathlib import Path
from typing import Sequence

from ..errors import RawDemosaicError
from .linear import DOMAINS as _FIT_DOMAINS

__all__ = ["main", "config_path", "export_run", "prune_entry", "expand_entry", "residual_chroma_entry", "refine_chroma_entry", "fold_entry", "ensemble_entry", "fit_linear_entry", "parse_overrides"]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def config_path(name: str) -> Path:
    """A config file: a path, or the name of a packaged config (``smoke``, ``bayer``, ``xtrans``)."""
    p = Path(name)
    if p.is_file():
        return p
    q = CONFIG_DIR / (name if name.endswith(".toml") else name + ".toml")
    if q.exists():
        return q
    raise FileNotFoundError(f"no config {name!r} (not a file, nor one of {sorted(f.stem for f in CONFIG_DIR.glob('*.toml'))})")


def _spread(items: list, k: int) -> list:
    if len(items) <= k:
        return items
    import numpy as np

    idx = sorted(set(int(round(i)) for i in np.linspace(0, len(items) - 1, k)))
    return [items[i] for i in idx]


_EXPORT_TRAIN_KEYS = ("patch", "count", "val_count", "batch", "lr", "loss", "limit", "device", "synthetic", "color", "keep_zeros")


def parse_overrides(items: Sequence[str]) -> dict:
    """``["steps=60000", "batch=128", "device=cuda"]`` -> ``{"steps": 60000, "batch": 128, "device": "cuda"}``
    (values parsed as TOML scalars, bare words as strings)."""
    import tomllib

    out: dict = {}
    for it in items:
        k, sep, v = it.partition("=")
        k = k.strip()
        if not sep or not k:
            raise ValueError(f"--set {it!r}: expected KEY=VALUE")
        try:
            out[k] = tomllib.loads(f"v = {v.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            out[k] = v.strip()
    return out


#: ``--set`` keys of export and prune: the ``[export]`` table's
_OVERRIDE_KEYS = ("top", "steps", "sets", "prefix", *_EXPORT_TRAIN_KEYS)
_POSITIVE_INTS = ("top", "steps", "patch", "count", "val_count", "batch", "limit")


def _check_overrides(overrides: dict) -> None:
    """``--set`` values: known ``[export]`` keys, of the default's type, positive counts (before any training)."""
    from . import evolve as E

    bad = sorted(set(overrides) - set(_OVERRIDE_KEYS))
    if bad:
        raise ValueError(f"--set {bad[0]}: unknown key (known: {', '.join(sorted(_OVERRIDE_KEYS))})")
    if isinstance(overrides.get("sets"), str):
        overrides["sets"] = [overrides["sets"]]  # --set sets=kodak24: one set, not its letters
    E.check_config({"export": overrides}, "--set")
    for k in _POSITIVE_INTS:
        v = overrides.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"--set {k}={v!r}: expected a positive integer")
    for k in ("lr", "synthetic", "color"):
        v = overrides.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or (k == "lr" and v == 0)):
            raise ValueError(f"--set {k}={v!r}: expected a {'positive' if k == 'lr' else 'non-negative'} number")


def _as_sets(sets) -> list[str]:
    return [sets] if isinstance(sets, str) else list(sets)


def _check_export_args(top=None, limit=None, jobs=1, steps=None, into=None, sets=(), trained_dir=None) -> None:
    """What export and prune are given, checked before they train (an error after an hour of training loses it)."""
    from ..evaluate import TEST_SETS, data_dir
    from ..registry import load_registry

    for name, v in (("--top", top), ("--limit", limit), ("--jobs", jobs), ("--steps", steps)):
        if v is not None and int(v) < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    for name, d in (("--into", into), ("--trained", trained_dir)):
        if d is not None and Path(d).exists() and not Path(d).is_dir():
            raise ValueError(f"{d}: exists and is not a directory ({name} takes a directory)")
    if into is not None and (Path(into) / "registry.json").exists():
        load_registry(into)  # a damaged registry: an error now, not after training
    for k in sets:
        if not (data_dir() / TEST_SETS.get(k, k)).is_dir():
            raise ValueError(f"no quality set {k!r} ({data_dir() / TEST_SETS.get(k, k)} is not a directory; known: {', '.join(TEST_SETS)})")


def export_run(run_dir: str | Path, into: str | Path | None = None, top: int | None = None, steps: int | None = None, sets: Sequence[str] | None = None, limit: int | None = None, trainer=None, executor=None, quiet: bool = False, prune: bool = True, overrides: dict | None = None, trained_dir: str | Path | None = None, train_only: bool = False, jobs: int = 1, ids: Sequence[int] | None = None, ensemble: Sequence[int] = ()) -> list:
    """Full-train the finalists of a run's front and add them to the registry ``into``.

    Finalists: the Pareto front of the final population (cost vs validation PSNR), up to ``top`` of
    them spread over the cost range; or the candidates of the final population numbered ``ids`` (a short
    selection's PSNR is a weak ranking of wide programs, which converge more slowly). With ``prune`` the registry is then pruned to a strictly monotone
    front (:func:`rawdemosaic.registry.prune_dominated`), so dominated finalists are not kept. ``trainer(program, seed, init_from) -> (program, psnr)`` overrides
    full training (tests); ``limit`` measures on the first ``limit`` images of each set only (then the
    quality keys are ``"<set>@<limit>"``, so they never pass for full-set numbers).

    ``overrides`` replaces keys of the run config's ``[export]`` table (``steps``, ``batch``, ``count``,
    ``lr``, ``device``, ...; recorded in each entry's provenance). With ``trained_dir`` every trained
    finalist is saved there (``c<id>.json`` + weights) as soon as it is trained and reused when present, so an
    interrupted export resumes, and training can run on one machine (``train_only``: no Halide needed,
    returns ``[]``) and the measurement on another. ``jobs`` trains that many finalists in parallel processes.
    Each size in ``ensemble`` (2 or 4) also writes ``<name>_x<n>``: the finalist averaged over ``n``
    reflections of the mosaic (:mod:`rawdemosaic.program.ensemble`), measured like any entry.
    """
    from ..registry import default_models_dir
    from . import evolve as E
    from . import space as S

    run_dir = Path(run_dir)
    s = E.open_run(run_dir, trainer=trainer or "unused", executor=executor, quiet=quiet)
    st = E.load_state(run_dir)
    if st is None:
        raise FileNotFoundError(f"{run_dir}: no completed generation to export")
    overrides = dict(overrides or {})
    _check_overrides(overrides)
    ec = {**s.config["export"], **overrides}
    top = int(top if top is not None else ec["top"])
    sets = _as_sets(sets if sets is not None else ec["sets"])
    limit = limit if limit is not None else ec.get("limit")
    into = Path(into) if into is not None else default_models_dir()
    _check_export_args(top=top, limit=limit, jobs=jobs, steps=steps, into=None if train_only else into, sets=() if train_only else sets, trained_dir=trained_dir)
    if ids:
        by_id = {c.id: c for c in st.population}
        missing = sorted(set(ids) - set(by_id))
        if missing:
            raise ValueError(f"{run_dir}: candidates {missing} are not in the final population ({sorted(by_id)})")
        finalists = [by_id[i] for i in ids]
    else:
        finalists = _spread(E.front(st.population), top)
    if trainer is None:
        tcfg = {**s.config["train"], **{k: ec[k] for k in _EXPORT_TRAIN_KEYS if k in ec}}
        tcfg["steps"] = int(steps if steps is not None else ec["steps"])
        trainer = FullTrainer(tcfg, s.cfa, s.seed)
    from ..program.graph import Program

    tdir = Path(trained_dir) if trained_dir is not None else None
    results: dict[int, dict] = {}
    if tdir is not None:  # finalists trained before (an interrupted export, or another machine)
        for c in finalists:
            f = tdir / f"c{c.id}.json"
            if f.exists():
                p = Program.load(f)
                if S.structural_hash(p) != (c.hash or S.structural_hash(c.program)):  # the state records each candidate's hash
                    raise ValueError(f"{f}: not candidate {c.id} of {run_dir} (another program: a trained directory of another run?)")
                done = p.meta["full_train"]
                want = getattr(trainer, "steps", None)
                if done.get("overrides", {}) != overrides or (want is not None and done.get("steps") not in (None, want)):
                    raise ValueError(f"{f}: trained with {done.get('steps')} steps and {done.get('overrides', {})}, not the {want} steps and {overrides} asked for")
                results[c.id] = {"id": c.id, "program": p, "psnr": float(done["val_psnr"]), "full_train": done}
                if not quiet:
                    print(f"export: candidate {c.id}: trained program from {f}")
    todo = [E.Job(c.id, c.program, s.seed * 1_000_003 + c.id + 500_000, None) for c in finalists if c.id not in results]

    def keep(r: dict) -> None:  # as soon as a finalist is trained: an interruption loses only those in flight
        if "error" not in r and math.isfinite(r["psnr"]):
            p = r["program"]
            r["full_train"] = {"val_psnr": r["psnr"], **p.meta.get("full_train", {}), "overrides": overrides}
            if tdir is not None:
                Program(p.name, p.cfa, p.nodes, p.output, p.weights, {**p.meta, "full_train": r["full_train"]}, p.ensemble).save(tdir / f"c{r['id']}.json")
        results[r["id"]] = r

    if executor is None:
        if jobs > 1 and len(todo) > 1:
            executor = E.ProcessExecutor(jobs)
        elif len(todo) > 1 and s.config["ray"].get("enabled", True):
            executor = E.make_executor(s.config)
        else:
            executor = E.SerialExecutor()
    executor.map(trainer, todo, on_result=keep)
    failed = [c.id for c in finalists if "error" in results.get(c.id, {"error": "no result"}) or not math.isfinite(results[c.id]["psnr"])]
    for cid in failed:
        print(f"export: candidate {cid} failed to train: {results.get(cid, {}).get('error', 'no result')}", file=sys.stderr)
    if failed and len(failed) == len(finalists):
        raise ValueError(f"{run_dir}: every finalist failed to train ({len(failed)})")
    if train_only:
        return []
    from .export import export_entry

    info_run = json.loads((run_dir / "run.json").read_text())
    images = _limited_images(sets, limit) if limit else None
    written = []
    prefix = ec.get("prefix", "search")
    for c in finalists:
        if c.id in failed:
            continue
        r = results[c.id]
        prog = r["program"]
        name = f"{prefix}_{s.cfa.value}_{run_dir.name}_c{c.id}".replace("-", "_")

        prog = Program(name, prog.cfa, prog.nodes, prog.output, prog.weights, {"description": f"searched {s.cfa.value} program (run {run_dir.name}, candidate {c.id})"})
        # the data it was trained on: the converter encodes/decodes around kernels trained on sRGB data
        prog = prog.with_domain("linear" if s.config["train"].get("linear", True) else "srgb")
        run_info = {
            "run": str(run_dir),
            "run_name": run_dir.name,
            "seed": s.seed,
            "config": (run_dir / "config.toml").read_text(),
            "candidate": c.id,
            "generation": c.gen,
            "phase": c.phase,
            "search_val_psnr": c.psnr,
            "full_train_val_psnr": r["psnr"],
            "full_train_steps": r.get("full_train", {}).get("steps") or getattr(trainer, "steps", None),
        }
        if overrides:
            run_info["export_overrides"] = overrides
        if r.get("full_train", {}).get("device"):
            run_info["full_train_device"] = r["full_train"]["device"]
        variants = [(prog, run_info)] + [
            (prog.with_ensemble(n, name=f"{name}_x{n}"), {**run_info, "ensemble": n, "ensemble_of": name}) for n in ensemble
        ]
        for vprog, vinfo in variants:
            q = _limited_quality(vprog, sets, limit, images) if limit else None
            info = export_entry(vprog, vinfo, into, sets, quality=q)
            written.append(info)
            if not quiet:
                print(f"exported {info.name}: cost {info.cost:g}, " + ", ".join(f"{k} {v:.2f}" for k, v in info.quality.items()))
    if prune and not limit:
        dropped = _prune_front(into, quiet, "export")
        written = [w for w in written if w.name not in dropped]
    return written


def _limited_images(sets: Sequence[str], limit: int) -> dict:
    from ..evaluate import TEST_SETS, load_images

    return {k: load_images(TEST_SETS.get(k, k), limit=int(limit)) for k in sets}


def _limited_quality(prog, sets: Sequence[str], limit: int, images: dict | None = None) -> dict:
    """Quality on the first ``limit`` images of each set (``images``: those, loaded once by the caller),
    under names that say so (``kodak24@2``)."""
    from .export import measure_quality

    images = images if images is not None else _limited_images(sets, limit)
    q0 = measure_quality(prog, sets, images=images, validation=False)
    return {(f"{k.removesuffix('_linear')}@{limit}" + ("_linear" if k.endswith("_linear") else "")): v for k, v in q0.items()}


def _prune_front(into: Path, quiet: bool, cmd: str) -> set:
    """Drop dominated entries of the registry ``into`` (:func:`rawdemosaic.registry.prune_dominated`)."""
    from ..registry import prune_dominated

    dropped = set(prune_dominated(into))
    if dropped and not quiet:
        print(f"{cmd}: dropped (a cheaper entry is as good on some test set): " + ", ".join(sorted(dropped)))
    return dropped


def prune_entry(entry: str, keep: dict, models: str | Path | None = None, into: str | Path | None = None, name: str | None = None, steps: int | None = None, sets: Sequence[str] | None = None, limit: int | None = None, overrides: dict | None = None, trainer=None, trained_dir: str | Path | None = None, train_only: bool = False, quiet: bool = False, prune: bool = True):
    """Prune channels of the searched registry entry ``entry`` and fine-tune it into a new entry.

    ``keep`` maps convolution node ids to the output channels they keep
    (:func:`rawdemosaic.search.channels.prune_channels`). The fine-tuning is a full training
    (:func:`rawdemosaic.search.train.full_train`, from the pruned weights) with the ``[train]`` and
    ``[export]`` settings of the run config recorded in the entry's provenance, ``overrides`` replacing keys
    of ``[export]`` (``steps``, ``lr``, ``batch``, ...). The new entry's provenance is the parent's plus what
    was pruned and how it was fine-tuned; ``trained_dir`` keeps the fine-tuned program (``<name>.json``) and
    reuses it, like :func:`export_run`. Returns the written :class:`~rawdemosaic.registry.KernelInfo`
    (``None`` with ``train_only``, or when the registry's pruning to a monotone front dropped it).
    """
    from .channels import prune_channels
    from .fold import deployed

    return _derive_entry(
        entry, lambda parent: prune_channels(parent, keep), "prune", f"pruned to {keep}",
        default_name=lambda derived: f"{entry}_p{int(round(deployed(derived).cost()))}",  # the cost as written: folded
        description=f"channels pruned ({', '.join(f'{k} {v}' for k, v in keep.items())}) and fine-tuned",
        record=lambda derived: {"keep": dict(keep), "kept_channels": derived.meta["pruned"]}, from_key="pruned_from",
        command=["--keep", *(f"{k}={v}" for k, v in keep.items())],
        models=models, into=into, name=name, steps=steps, sets=sets, limit=limit, overrides=overrides, trainer=trainer,
        trained_dir=trained_dir, train_only=train_only, quiet=quiet, prune=prune,
    )


def residual_chroma_entry(entry: str, radius: int = 1, eps: float = 1e-3, prior: float = 1.0, models: str | Path | None = None, into: str | Path | None = None, name: str | None = None, steps: int | None = None, sets: Sequence[str] | None = None, limit: int | None = None, overrides: dict | None = None, trainer=None, trained_dir: str | Path | None = None, train_only: bool = False, quiet: bool = False, prune: bool = True):
    """Replace the learned chroma of the searched Bayer entry ``entry`` by residual interpolation
    (:func:`rawdemosaic.search.rechroma.with_residual_chroma`), fine-tune its green through it and add it
    as a new entry (``<entry>_rc``). Training, reuse of ``trained_dir`` and the result are as in :func:`prune_entry`.
    """
    from .rechroma import with_residual_chroma

    return _derive_entry(
        entry, lambda parent: with_residual_chroma(parent, radius, eps, prior), "residual-chroma", f"{entry} with residual chroma (radius {radius}, eps {eps!r}, prior {prior!r})",
        # parameters other than the defaults name the entry, so runs with other settings do not replace it
        default_name=lambda derived: f"{entry}_rc" + (f"{radius}" if radius != 1 else "") + (f"_e{float(eps)!r}" if eps != 1e-3 else "") + (f"_p{float(prior)!r}" if prior != 1.0 else ""),
        description=f"learned chroma replaced by residual interpolation (radius {radius}, eps {eps:g}, prior {prior:g}), green fine-tuned through it",
        record=lambda derived: {"residual_chroma": derived.meta["residual_chroma"]}, from_key="residual_chroma_from",
        command=["--radius", str(radius), "--eps", repr(float(eps)), "--prior", repr(float(prior))],  # exact: the command rebuilds the same program
        models=models, into=into, name=name, steps=steps, sets=sets, limit=limit, overrides=overrides, trainer=trainer,
        trained_dir=trained_dir, train_only=train_only, quiet=quiet, prune=prune,
    )


def refine_chroma_entry(entry: str, width: int = 8, models: str | Path | None = None, into: str | Path | None = None, name: str | None = None, steps: int | None = None, sets: Sequence[str] | None = None, limit: int | None = None, overrides: dict | None = None, trainer=None, trained_dir: str | Path | None = None, train_only: bool = False, quiet: bool = False, prune: bool = True):
    """Add a learned correction of the residual interpolation's red and blue to the entry ``entry``
    (:func:`rawdemosaic.search.rechroma.with_chroma_refinement`), fine-tune the whole program and add it as
    ``<entry>_cr<width>``. Training, reuse of ``trained_dir`` and the result are as in :func:`prune_entry`.
    """
    from .rechroma import with_chroma_refinement

    return _derive_entry(
        entry, lambda parent: with_chroma_refinement(parent, width), "refine-chroma", f"{entry} with a chroma refinement of width {width}",
        default_name=lambda derived: f"{entry}_cr{width}",
        description=f"residual-interpolated chroma refined by a learned correction (width {width}), fine-tuned",
        record=lambda derived: {"chroma_refinement": derived.meta["chroma_refinement"]}, from_key="chroma_refined_from",
        command=["--width", str(width)],
        models=models, into=into, name=name, steps=steps, sets=sets, limit=limit, overrides=overrides, trainer=trainer,
        trained_dir=trained_dir, train_only=train_only, quiet=quiet, prune=prune,
    )


def expand_entry(entry: str, wide: dict, models: str | Path | None = None, into: str | Path | None = None, name: str | None = None, steps: int | None = None, sets: Sequence[str] | None = None, limit: int | None = None, overrides: dict | None = None, trainer=None, trained_dir: str | Path | None = None, train_only: bool = False, quiet: bool = False, prune: bool = True):
    """Fine-tune the searched registry entry ``entry`` over-parameterised: each convolution of ``wide`` widened
    to that many outputs and followed by a pointwise layer back to its width
    (:func:`rawdemosaic.search.fold.expand_linear`; the same function to start with). The entry is written
    folded (:func:`rawdemosaic.search.export.export_entry`), at the parent's cost, as ``<entry>_w``.
    Training, reuse of ``trained_dir`` and the result are as in :func:`prune_entry`.
    """
    from .fold import expand_linear

    return _derive_entry(
        entry, lambda parent: expand_linear(parent, wide), "expand", f"expanded to {wide}",
        default_name=lambda derived: f"{entry}_w",
        description=f"trained over-parameterised ({', '.join(f'{k} {v}' for k, v in wide.items())} wide) and folded back",
        record=lambda derived: {"expanded": dict(derived.meta["expanded"])}, from_key="expanded_from",
        command=["--wide", *(f"{k}={v}" for k, v in wide.items())],
        models=models, into=into, name=name, steps=steps, sets=sets, limit=limit, overrides=overrides, trainer=trainer,
        trained_dir=trained_dir, train_only=train_only, quiet=quiet, prune=prune,
    )


def _parent_entry(entry: str, models, into, name):
    """``(where, src, info)`` for a command deriving an entry from ``entry``: the registry options as given
    (for the recorded command line: a parent may leave the registry later), the registry holding the
    parent, and the parent's :class:`~rawdemosaic.registry.KernelInfo`."""
    from ..registry import default_models_dir, load_registry

    where = [*(["--models", str(models)] if models is not None else []), *(["--into", str(into)] if into is not None else []), *(["--name", name] if name else [])]
    src = Path(models) if models is not None else default_models_dir()
    infos = {e.name: e for e in load_registry(src)}
    if entry not in infos:
        raise ValueError(f"{src}: no registry entry {entry!r}")
    if name == entry and (into is None or Path(into).resolve() == src.resolve()):
        raise ValueError(f"--name {name}: the entry it derives from; the new entry would replace it (give another name, or --into another registry)")
    return where, src, infos[entry]


def _toml(v) -> str:
    """A ``--set`` value as TOML, the way :func:`parse_overrides` reads it back."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return json.dumps(v) if isinstance(v, str) else repr(v)


def _command(verb: str, entry: str, where: Sequence[str], *args: str, sets=None, limit=None, overrides: dict | None = None) -> str:
    """The command line that makes an entry again (shell-quoted): the subcommand, its entry, the registry options
    as given, its own arguments, and ``--sets`` / ``--limit`` / ``--set`` where they were given."""
    return shlex.join([
        "rawdemosaic", "search", verb, entry, *where, *args,
        *(["--sets", *_as_sets(sets)] if sets is not None else []), *(["--limit", str(limit)] if limit else []),
        *(a for k, v in (overrides or {}).items() for a in ("--set", f"{k}={_toml(v)}")),
    ])


def _derive_entry(entry: str, derive, verb: str, what: str, *, default_name, description: str, record, from_key: str, command: list[str], models, into, name, steps, sets, limit, overrides, trainer, trained_dir, train_only: bool, quiet: bool, prune: bool):
    """A new registry entry from the searched entry ``entry``: ``derive(parent)`` fine-tuned with the settings
    of the run recorded in the parent's provenance (``prune`` and ``residual-chroma``). ``what`` names the
    derived program in messages, ``record(derived)`` adds to the provenance, as do ``from_key`` (the parent's
    name) and ``<from_key>_digest``; ``command`` are the subcommand's own arguments (for the provenance's
    command line)."""
    from ..program.graph import Program
    from . import evolve as E
    from . import space as S

    where, src, info = _parent_entry(entry, models, into, name)
    prov = dict(info.provenance or {})
    if "config" not in prov:
        raise ValueError(f"{entry}: its provenance records no search config (only searched entries are fine-tuned by {verb})")
    config = E.load_config(text=prov["config"], source=f"{entry}'s recorded config")
    overrides = dict(overrides or {})
    _check_overrides(overrides)
    ec = {**config["export"], **overrides}
    tcfg = {**config["train"], **{k: ec[k] for k in _EXPORT_TRAIN_KEYS if k in ec}}
    tcfg["steps"] = int(steps if steps is not None else ec["steps"])
    seed = int(prov.get("seed", config["search"]["seed"]))
    sets_given, sets = sets, _as_sets(sets if sets is not None else ec["sets"])
    into = Path(into) if into is not None else src
    _check_export_args(limit=limit, steps=steps, into=None if train_only else into, sets=() if train_only else sets, trained_dir=trained_dir)
    parent = info.program()
    derived = derive(parent)
    name = name or default_name(derived)
    tfile = Path(trained_dir) / f"{name}.json" if trained_dir is not None else None
    if tfile is not None and tfile.exists():
        prog = Program.load(tfile)
        if S.structural_hash(prog) != S.structural_hash(derived):
            raise ValueError(f"{tfile}: not {what} (another program)")
        done = prog.meta.get("full_train", {})
        if (done.get("steps"), done.get("overrides", {})) != (tcfg["steps"], overrides):
            raise ValueError(f"{tfile}: fine-tuned with {done.get('steps')} steps and {done.get('overrides', {})}, not the {tcfg['steps']} steps and {overrides} asked for")
        if not quiet:
            print(f"{verb}: fine-tuned program from {tfile}")
    else:
        trainer = trainer or FullTrainer(tcfg, parent.cfa, seed)
        prog, psnr = trainer(derived, seed * 1_000_003 + 900_000, None)
        if not math.isfinite(psnr):
            raise ValueError(f"{entry}: fine-tuning {what} diverged")
        prog = Program(prog.name, prog.cfa, prog.nodes, prog.output, prog.weights, {**derived.meta, **prog.meta, "full_train": {"val_psnr": psnr, "steps": tcfg["steps"], **prog.meta.get("full_train", {}), "overrides": overrides}}, derived.ensemble)
        if tfile is not None:
            prog.save(tfile)
    if train_only:
        return None
    from .export import export_entry

    ft = prog.meta.get("full_train", {})
    prog = Program(name, prog.cfa, prog.nodes, prog.output, prog.weights, {"description": f"{info.description.rstrip('.')}; {description}"}, prog.ensemble)
    prog = prog.with_domain(parent.domain)
    run_info = {k: v for k, v in prov.items() if k not in ("source", "digest", "export_overrides", "full_train_device", "full_train_val_psnr", "full_train_steps", "search_val_psnr")}
    run_info.update({from_key: entry, f"{from_key}_digest": prov.get("digest") or parent.digest(), **record(derived)})
    run_info.update({
        "finetune": {"steps": tcfg["steps"], "lr": tcfg["lr"], "batch": tcfg["batch"], "count": tcfg.get("count"), "loss": tcfg.get("loss", "l2"), "seed": seed, "overrides": overrides},
        "full_train_val_psnr": ft.get("val_psnr"),
        "full_train_device": ft.get("device"),
        "command": _command(verb, entry, where, *command, "--steps", str(tcfg["steps"]), sets=sets_given, limit=limit, overrides=overrides),
    })
    q = None
    if limit:
        q = _limited_quality(prog, sets, int(limit))
    written = export_entry(prog, run_info, into, sets, quality=q)
    if not quiet:
        print(f"{verb}: {entry} ({parent.cost():g} ops/pixel) -> {written.name}: cost {written.cost:g}, " + ", ".join(f"{k} {v:.2f}" for k, v in written.quality.items()))
    if prune and not limit and written.name in _prune_front(into, quiet, verb):
        return None
    return written


def _rewrite_entry(entry: str, rewrite, verb: str, key: str, *, default_name: str, describe, record, command: list[str], models, into, name, sets, limit, quiet: bool, prune: bool):
    """A new registry entry from ``entry`` without training: ``rewrite(parent, name)`` (``fold``, ``ensemble``).
    The provenance is the parent's (run, seed, config, fine-tuning: they made the weights) plus ``key`` (the
    parent's name), ``<key>_digest``, ``<key>_command`` (the parent's own command, when it has one),
    ``record(new)`` and this command. The description is the parent's plus ``describe(new)``.
    Returns the written entry (``None`` when the registry's monotone front dropped it)."""
    from .export import export_entry

    where, src, info = _parent_entry(entry, models, into, name)
    sets_given, sets = sets, _as_sets(sets if sets is not None else ("kodak24", "mcmaster18"))
    into = Path(into) if into is not None else src
    _check_export_args(limit=limit, into=into, sets=sets)
    parent = info.program()
    name = name or default_name
    new = rewrite(parent, name)
    prog = type(parent)(name, new.cfa, new.nodes, new.output, new.weights, {"description": f"{info.description.rstrip('.')}; {describe(new)}"}, new.ensemble)
    prog = prog.with_domain(parent.domain)
    prov = dict(info.provenance or {})
    run_info = {k: v for k, v in prov.items() if k not in ("source", "digest", "command")}
    run_info.update({
        key: entry, f"{key}_digest": prov.get("digest") or parent.digest(), **record(new),
        **({f"{key}_command": prov["command"]} if "command" in prov else {}),
        "command": _command(verb, entry, where, *command, sets=sets_given, limit=limit),
    })
    q = _limited_quality(prog, sets, int(limit)) if limit else None
    written = export_entry(prog, run_info, into, sets, quality=q)
    if not quiet:
        print(f"{verb}: {entry} ({parent.cost():g} ops/pixel) -> {written.name}: cost {written.cost:g}, " + ", ".join(f"{k} {v:.2f}" for k, v in written.quality.items()))
    if prune and not limit and written.name in _prune_front(into, quiet, verb):
        return None
    return written


def fold_entry(entry: str, models: str | Path | None = None, into: str | Path | None = None, name: str | None = None, sets: Sequence[str] | None = None, limit: int | None = None, quiet: bool = False, prune: bool = True):
    """Fold the chains of affine convolutions of registry entry ``entry`` (:func:`rawdemosaic.search.fold.fold_linear`)
    and add the result as ``<entry>_f``: the same function at a lower cost, measured again, no training.
    Returns the written entry (``None`` when the registry's monotone front dropped it)."""
    from .fold import fold_linear

    return _rewrite_entry(entry, lambda p, n: fold_linear(p, name=n), "fold", "folded_from", default_name=f"{entry}_f",
                          describe=lambda f: f"affine chains folded ({', '.join('+'.join(p) for p in f.meta['folded'])})",
                          record=lambda f: {"folded": f.meta["folded"]}, command=[],
                          models=models, into=into, name=name, sets=sets, limit=limit, quiet=quiet, prune=prune)


def ensemble_entry(entry: str, n: int = 2, models: str | Path | None = None, into: str | Path | None = None, name: str | None = None, sets: Sequence[str] | None = None, limit: int | None = None, quiet: bool = False, prune: bool = True):
    """Add registry entry ``entry`` averaged over ``n`` reflections of the mosaic (:mod:`rawdemosaic.program.ensemble`)
    as ``<entry>_x<n>``: ``n`` times the cost, the same weights, measured again, no training.
    Returns the written entry (``None`` when the registry's monotone front dropped it)."""
    if n not in (2, 4):
        raise ValueError(f"--n must be 2 or 4 (reflections of the mosaic), got {n}")

    def rewrite(p, nm):
        if p.ensemble != 1:
            raise ValueError(f"{entry}: already a self-ensemble of {p.ensemble}")
        return p.with_ensemble(n, name=nm)

    return _rewrite_entry(entry, rewrite, "ensemble", "ensemble_of", default_name=f"{entry}_x{n}",
                          describe=lambda e: f"self-ensemble of {n} reflections", record=lambda e: {"ensemble": n}, command=["--n", str(n)],
                          models=models, into=into, name=name, sets=sets, limit=limit, quiet=quiet, prune=prune)


def fit_linear_entry(cfa: str, ops: float, into: str | Path | None = None, name: str | None = None, radius: int = 2, color: float = 0.25, seed: int = 0,
                     sets: Sequence[str] | None = None, limit: int | None = None, images=None, quiet: bool = False, prune: bool = True, normal=None,
                     domain: str = "srgb"):
    """Fit the sparse least-squares linear demosaicker of ``ops`` ops/pixel (:func:`.linear.fit_linear`) on the
    training split, measure it and add it to the registry ``into``. ``images`` replaces the corpus (tests);
    ``normal``: its normal equations, already accumulated (:func:`.linear.training_equations`).
    Returns the written entry (``None`` when the registry's monotone front dropped it)."""
    from ..registry import default_models_dir
    from .export import export_entry
    from .linear import fit_linear

    prog = fit_linear(cfa, ops, name=name, radius=radius, color=color, seed=seed, images=images, normal=normal, domain=domain)
    fit = prog.meta["fit"]
    run_info = {
        "method": "sparse least squares (forward selection and swaps over all filters, exact weights)",
        "corpus": "given images" if images is not None else "training split of the default corpus",
        **fit,
        "command": f"rawdemosaic search fit-linear --cfa {prog.cfa.value} --ops {ops:g} --radius {fit['radius']} --domain {fit['domain']} --color {fit['color']:g} --seed {fit['seed']}" + (f" --name {name}" if name else ""),
    }
    sets = list(sets if sets is not None else ("kodak24", "mcmaster18"))
    q = None
    if limit:
        q = _limited_quality(prog, sets, int(limit))
    into = Path(into) if into is not None else default_models_dir()
    written = export_entry(prog, run_info, into, sets, quality=q, validation=images is None)
    if not quiet:
        print(f"fitted {written.name}: cost {written.cost:g}, " + ", ".join(f"{k} {v:.2f}" for k, v in written.quality.items()))
    if prune and not limit and written.name in _prune_front(into, quiet, "fit-linear"):
        return None
    return written


class FullTrainer:
    """Full training of a finalist (:func:`rawdemosaic.search.train.full_train`) from its own weights."""

    def __init__(self, train_cfg: dict, cfa, seed: int):
        from . import evolve as E

        self.base = E.TorchTrainer(train_cfg, cfa, seed)
        self.steps = int(train_cfg["steps"])

    def __call__(self, program, seed, init_from):
        from .train import full_train

        tr, va = self.base.datasets()
        cfg = self.base.cfg
        device = None if cfg.get("device", "auto") == "auto" else cfg["device"]
        from ..program.graph import Program
        from .train import default_device

        res = full_train(program, tr, va, steps=self.steps, lr=cfg["lr"], batch=cfg["batch"], seed=seed, device=device, loss=cfg.get("loss", "l2"),
                         keep_zeros=bool(cfg.get("keep_zeros", False)))
        info = {"val_psnr": float(res.val_psnr), "steps": self.steps, "seconds": round(res.seconds, 1), "device": str(default_device(device))}
        print(f"full training of {program.name}: {self.steps} steps in {res.seconds:.0f} s on {info['device']}, validation {res.val_psnr:.2f} dB", file=sys.stderr, flush=True)
        p = res.program
        return Program(p.name, p.cfa, p.nodes, p.output, p.weights, {**p.meta, "full_train": info}, program.ensemble), float(res.val_psnr)


def _entry_options(ap: argparse.ArgumentParser, what: str, default_name: str) -> None:
    """The options of the subcommands that add an entry derived from another one (``fold`` and those below)."""
    ap.add_argument("--models", default=None, help="registry holding the entry (default: the runtime's)")
    ap.add_argument("--into", default=None, help=f"registry to add {what} to (default: --models)")
    ap.add_argument("--name", default=None, help=f"name of the new entry (default: {default_name})")
    ap.add_argument("--sets", nargs="+", default=None)
    ap.add_argument("--limit", type=int, default=None, help="measure on the first N images of each set only")
    ap.add_argument("--quiet", action="store_true")


def _derive_options(ap: argparse.ArgumentParser, what: str, default_name: str) -> None:
    """The options of the subcommands that derive an entry from a searched one and fine-tune it."""
    _entry_options(ap, what, default_name)
    ap.add_argument("--steps", type=int, default=None, help="fine-tuning steps (default: the run config's [export] steps)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a key of the run config's [export] table (lr, batch, count, ...)")
    ap.add_argument("--trained", default=None, metavar="DIR", help="save the fine-tuned program here, and reuse it when present")
    ap.add_argument("--train-only", action="store_true", help="stop after fine-tuning (needs --trained)")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="rawdemosaic search", description="Search demosaicking programs and export them to a registry.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="start a search run")
    r.add_argument("--cfa", choices=["bayer", "xtrans"], default=None, help="CFA family (default: the config's, else bayer)")
    r.add_argument("--config", required=True, help="TOML file or packaged config name (smoke, bayer, xtrans)")
    r.add_argument("--out", required=True, help="run directory")
    r.add_argument("--seed", type=int, default=None)
    r.add_argument("--ray-address", default=None, help="Ray cluster address (default: a local Ray)")
    r.add_argument("--stop-after", type=int, default=None, help="stop after this many completed generations (resume continues)")
    r.add_argument("--quiet", action="store_true")
    s = sub.add_parser("resume", help="continue an interrupted run")
    s.add_argument("dir")
    s.add_argument("--ray-address", default=None)
    s.add_argument("--stop-after", type=int, default=None)
    s.add_argument("--quiet", action="store_true")
    e = sub.add_parser("export", help="full-train the front's finalists and write registry entries")
    e.add_argument("dir")
    e.add_argument("--into", default=None, help="registry directory (default: the runtime's, $RAWDEMOSAIC_MODELS or the installed package's models)")
    e.add_argument("--top", type=int, default=None)
    e.add_argument("--ids", type=int, nargs="+", default=None, help="export these candidates of the final population instead of the front")
    e.add_argument("--steps", type=int, default=None, help="full-training steps (default: the config's [export] steps)")
    e.add_argument("--sets", nargs="+", default=None)
    e.add_argument("--limit", type=int, default=None, help="measure on the first N images of each set only")
    e.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of the run config's [export] table (steps, batch, count, lr, device, ...); repeatable")
    e.add_argument("--trained", default=None, metavar="DIR", help="save each trained finalist here, and reuse those already there")
    e.add_argument("--train-only", action="store_true", help="stop after training (with --trained: measure and export later, elsewhere)")
    e.add_argument("--jobs", type=int, default=1, help="train this many finalists in parallel processes")
    e.add_argument("--ensemble", type=int, nargs="+", default=[], choices=(2, 4), help="also write each finalist averaged over this many reflections of the mosaic (<name>_x<n>)")
    e.add_argument("--quiet", action="store_true")
    q = sub.add_parser("prune", help="prune channels of a searched entry, fine-tune it and add it to the registry")
    q.add_argument("entry", help="registry entry name")
    q.add_argument("--keep", nargs="+", required=True, metavar="NODE=N", help="output channels each convolution node keeps")
    _derive_options(q, "the pruned entry", "<entry>_p<cost>")
    rc = sub.add_parser("residual-chroma", help="replace a searched Bayer entry's chroma by residual interpolation, fine-tune it and add it to the registry")
    rc.add_argument("entry", help="registry entry name")
    rc.add_argument("--radius", type=int, default=1, help="fit window: (2R+1)^2 samples of each of red and blue (default 1)")
    rc.add_argument("--eps", type=float, default=1e-3, help="regularisation: added to the local variance of green (default 1e-3)")
    rc.add_argument("--prior", type=float, default=1.0, help="slope the fit falls back to where green is flat: 1 colour differences (default), 0 plain interpolation")
    _derive_options(rc, "the new entry", "<entry>_rc, then R with --radius R, _e<eps> and _p<prior> when not the defaults")
    cr = sub.add_parser("refine-chroma", help="add a learned correction to a residual-chroma entry's red and blue, fine-tune it and add it to the registry")
    cr.add_argument("entry", help="registry entry name (its output a ResidualChroma)")
    cr.add_argument("--width", type=int, default=8, help="channels of the correction's hidden layer (default 8)")
    _derive_options(cr, "the refined entry", "<entry>_cr<width>")
    x = sub.add_parser("expand", help="fine-tune a searched entry over-parameterised (wider layers plus pointwise ones) and add it folded back to its cost")
    x.add_argument("entry", help="registry entry name")
    x.add_argument("--wide", nargs="+", required=True, metavar="NODE=N", help="outputs each convolution node is widened to while training")
    _derive_options(x, "the new entry", "<entry>_w")
    en = sub.add_parser("ensemble", help="add an entry averaged over reflections of the mosaic (a self-ensemble: n times the cost, no training)")
    en.add_argument("entry", help="registry entry name")
    en.add_argument("--n", type=int, choices=(2, 4), default=2, help="reflections averaged (default 2)")
    _entry_options(en, "the self-ensemble", "<entry>_x<n>")
    fo = sub.add_parser("fold", help="fold an entry's chains of affine convolutions into single layers (same function, lower cost) and add it to the registry")
    fo.add_argument("entry", help="registry entry name")
    _entry_options(fo, "the folded entry", "<entry>_f")
    f = sub.add_parser("fit-linear", help="fit the sparse least-squares linear demosaicker of a given cost and add it to the registry")
    f.add_argument("--cfa", required=True, choices=["bayer", "xtrans"])
    f.add_argument("--ops", type=float, nargs="+", required=True, help="multiply-adds per pixel (taps per tile / tile pixels); several: one entry each, from one pass over the corpus")
    f.add_argument("--radius", type=int, default=2, help="filter reach in pixels (default 2: 5x5 windows)")
    f.add_argument("--domain", default="srgb", choices=_FIT_DOMAINS,
                   help="encoding the filters work in: srgb (default) or gamma2 (square root of linear light: a cheaper transfer)")
    f.add_argument("--color", type=float, default=0.25, help="weight of colour-augmented copies of the images (default 0.25, as the search configs)")
    f.add_argument("--seed", type=int, default=0, help="draws the colour augmentation")
    f.add_argument("--name", default=None, help="entry name (default <cfa>_lsq<taps>)")
    f.add_argument("--into", default=None, help="registry to add it to (default: the runtime's)")
    f.add_argument("--sets", nargs="+", default=None)
    f.add_argument("--limit", type=int, default=None, help="measure on the first N images of each set only")
    f.add_argument("--quiet", action="store_true")
    p = sub.add_parser("report", help="plot the cost/quality front (PNG)")
    p.add_argument("--models", default=None, help="registry directory (default: the runtime's)")
    p.add_argument("--runs", nargs="*", default=[], help="run directories whose search fronts to add")
    p.add_argument("--out", required=True)
    p.add_argument("--set", default="kodak24", help="quality set on the y axis")
    return ap


def _channels(flag: str, items: Sequence[str]) -> dict:
    """``--keep`` / ``--wide`` values: ``NODE=CHANNELS`` each."""
    out = {}
    for it in items:
        k, sep, v = it.partition("=")
        if not sep or not v.strip().isdigit():
            raise ValueError(f"{flag} {it!r}: expected NODE=CHANNELS")
        out[k.strip()] = int(v)
    return out


def _residual_chroma_args(args, common: dict):
    if args.radius < 1 or not (math.isfinite(args.eps) and args.eps > 0) or not math.isfinite(args.prior):
        raise ValueError(f"--radius must be >= 1, --eps > 0 and --prior finite, got {args.radius}, {args.eps:g} and {args.prior:g}")
    return residual_chroma_entry(args.entry, args.radius, args.eps, args.prior, **common)


def _refine_chroma_args(args, common: dict):
    if args.width < 1:
        raise ValueError(f"--width must be >= 1, got {args.width}")
    return refine_chroma_entry(args.entry, args.width, **common)


# the subcommands that add an entry made from another one: (parsed arguments, common options) -> entry or None
_DERIVE = {
    "prune": lambda a, c: prune_entry(a.entry, _channels("--keep", a.keep), **c),
    "expand": lambda a, c: expand_entry(a.entry, _channels("--wide", a.wide), **c),
    "residual-chroma": _residual_chroma_args,
    "refine-chroma": _refine_chroma_args,
    "fold": lambda a, c: fold_entry(a.entry, **c),
    "ensemble": lambda a, c: ensemble_entry(a.entry, a.n, **c),
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        if args.cmd == "run":
            from . import evolve as E

            st = E.run(config_path(args.config), args.out, cfa=args.cfa, seed=args.seed, address=args.ray_address, stop_after=args.stop_after, quiet=args.quiet)
            print(f"{args.out}: {st.generation} generation(s) done{' (finished)' if st.done else ''}")
        elif args.cmd == "resume":
            from . import evolve as E

            st = E.resume(args.dir, stop_after=args.stop_after, quiet=args.quiet, address=args.ray_address)
            print(f"{args.dir}: {st.generation} generation(s) done{' (finished)' if st.done else ''}")
        elif args.cmd == "export":
            if args.train_only and not args.trained:
                raise ValueError("--train-only needs --trained DIR (where the trained finalists go)")
            written = export_run(args.dir, args.into, args.top, args.steps, args.sets, args.limit, quiet=args.quiet,
                                 overrides=parse_overrides(args.overrides), trained_dir=args.trained, train_only=args.train_only, jobs=args.jobs, ids=args.ids, ensemble=args.ensemble)
            if args.train_only:
                print(f"trained finalists in {args.trained}")
            else:
                print(f"{len(written)} entr{'y' if len(written) == 1 else 'ies'} written")
        elif args.cmd in _DERIVE:
            if getattr(args, "train_only", False) and not args.trained:
                raise ValueError("--train-only needs --trained DIR (where the fine-tuned program goes)")
            common = {"models": args.models, "into": args.into, "name": args.name, "sets": args.sets, "limit": args.limit, "quiet": args.quiet}
            if args.cmd in ("prune", "expand", "residual-chroma", "refine-chroma"):
                common.update(steps=args.steps, overrides=parse_overrides(args.overrides), trained_dir=args.trained, train_only=args.train_only)
            info = _DERIVE[args.cmd](args, common)
            if getattr(args, "train_only", False):
                print(f"fine-tuned program in {args.trained}")
            elif info is None:
                print("no entry written (dominated by a cheaper entry)")
        elif args.cmd == "fit-linear":
            from .linear import training_equations

            if args.name and len(args.ops) > 1:
                raise ValueError("--name names one entry: give one --ops with it")
            from ..registry import default_models_dir

            _check_export_args(limit=args.limit, into=args.into or default_models_dir(), sets=_as_sets(args.sets or ("kodak24", "mcmaster18")))
            ne = training_equations(args.cfa, args.radius, args.color, args.seed, ops=args.ops, domain=args.domain)  # once for every cost
            for ops in args.ops:
                info = fit_linear_entry(args.cfa, ops, into=args.into, name=args.name, radius=args.radius, color=args.color, seed=args.seed,
                                        sets=args.sets, limit=args.limit, quiet=args.quiet, normal=ne)
                if info is None:
                    print(f"--ops {ops:g}: no entry written (dominated by a cheaper entry)")
        elif args.cmd == "report":
            from .report import plot_front

            out = plot_front(args.out, models=args.models, runs=args.runs, quality_set=args.set)
            print(out)
    except (OSError, ValueError, RawDemosaicError) as e:  # OSError: missing, existing, not a directory, permission
        print(f"rawdemosaic search: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
