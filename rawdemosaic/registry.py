"""The cost-budget registry of demosaicking kernels.

A registry is a directory holding ``registry.json`` plus each entry's program (JSON) and weights (npz)::

    {"format": "rawdemosaic-registry/1",
     "entries": [{"name": "bayer_bilinear", "cfa": "bayer", "cost": 6.0,
                  "quality": {"kodak24": 30.1, "mcmaster18": 32.3},
                  "program": "bayer_bilinear.json", "description": "...", "provenance": {...}}]}

Entries come from the built-in registry (``models/``, or ``$RAWDEMOSAIC_MODELS``, or a directory passed
as ``models=``), plus kernel packs that third-party packages declare under the entry-point group
``rawdemosaic.kernels`` (each entry point resolves to a registry directory, or a callable returning one).
Selection (:func:`select`) is a pure function of the entries.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .cfa import CFA
from .errors import BudgetError, KernelNotFoundError, ProgramError

__all__ = ["KernelInfo", "kernels", "select", "default_models_dir", "load_registry", "add_entry", "prune_dominated", "REGISTRY_FORMAT", "ENTRY_POINT_GROUP"]

REGISTRY_FORMAT = "rawdemosaic-registry/1"
ENTRY_POINT_GROUP = "rawdemosaic.kernels"
QUALITY_SETS = ("kodak24", "mcmaster18")


@dataclass(frozen=True)
class KernelInfo:
    """One registry entry (data only; :meth:`program` loads the program it points to)."""

    name: str
    cfa: CFA
    cost: float
    quality: Mapping[str, float]
    program_path: Path
    description: str = ""
    source: str = "builtin"
    provenance: Mapping[str, Any] = field(default_factory=dict)

    @property
    def score(self) -> float:
        """Mean CPSNR over the standard test sets present (higher is better); -inf when unmeasured."""
        vals = [self.quality[k] for k in QUALITY_SETS if k in self.quality]
        return sum(vals) / len(vals) if vals else float("-inf")

    def program(self):
        from .program.graph import Program

        return Program.load(self.program_path)


def default_models_dir() -> Path:
    """``$RAWDEMOSAIC_MODELS`` if set, else the registry shipped with the package."""
    env = os.environ.get("RAWDEMOSAIC_MODELS")
    if env:
        return Path(env)
    from importlib import resources

    try:
        return Path(str(resources.files("rawdemosaic.models")))
    except (ModuleNotFoundError, TypeError):  # running from a source tree without installing
        return Path(__file__).resolve().parent.parent / "models"


def load_registry(directory: str | Path, source: str = "builtin") -> list[KernelInfo]:
    """Read ``directory/registry.json`` (missing file: empty registry)."""
    directory = Path(directory)
    path = directory / "registry.json"
    if not path.exists():
        return []
    try:
        doc = json.loads(path.read_text())
        if doc.get("format") != REGISTRY_FORMAT:
            raise ValueError(f"format is {doc.get('format')!r}")
        return [
            KernelInfo(
                name=e["name"],
                cfa=CFA(e["cfa"]),
                cost=float(e["cost"]),
                quality={k: float(v) for k, v in e.get("quality", {}).items()},
                program_path=directory / e["program"],
                description=e.get("description", ""),
                source=source,
                provenance=e.get("provenance", {}),
            )
            for e in doc["entries"]
        ]
    except (ValueError, KeyError, TypeError) as e:
        raise ProgramError(f"{path}: malformed registry: {e}") from None


def _plugin_registries() -> list[KernelInfo]:
    """Kernel packs from installed distributions; a broken pack is reported and skipped.

    Not cached: installing a pack takes effect at once (the scan costs a few milliseconds).
    """
    from importlib.metadata import entry_points

    found: list[KernelInfo] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            directory = Path(str(obj() if callable(obj) else obj))
            if not (directory / "registry.json").is_file():
                raise FileNotFoundError(f"{directory} holds no registry.json")
            found.extend(load_registry(directory, source=f"plugin:{ep.name}"))
        except Exception as e:  # noqa: BLE001 - any failure of third-party code is contained
            warnings.warn(f"rawdemosaic: kernel pack {ep.name!r} skipped: {e}", stacklevel=2)
    return found


def kernels(cfa: CFA | str | None = None, models: str | Path | None = None, plugins: bool = True) -> list[KernelInfo]:
    """All registry entries (optionally of one CFA family), cheapest first.

    Parameters
    ----------
    cfa
        ``"bayer"``, ``"xtrans"``, a :class:`~rawdemosaic.CFA`, or ``None`` for both.
    models
        Registry directory to use instead of the default (see :func:`default_models_dir`).
    plugins
        Include kernel packs from the ``rawdemosaic.kernels`` entry-point group.

    Raises
    ------
    KernelNotFoundError
        The registry directory (``models`` or ``$RAWDEMOSAIC_MODELS``) holds no ``registry.json``.
    """
    directory = Path(models) if models is not None else default_models_dir()
    if not (directory / "registry.json").is_file():  # a directory the user named (the shipped one has it)
        what = "no such directory" if not directory.is_dir() else "no registry.json in it"
        raise KernelNotFoundError(f"{directory}: not a kernel registry ({what})")
    entries = load_registry(directory)
    if plugins:
        names = {e.name for e in entries}
        for e in _plugin_registries():
            if e.name in names:
                warnings.warn(f"rawdemosaic: kernel {e.name!r} from {e.source} skipped: the name is already taken", stacklevel=2)
                continue
            names.add(e.name)
            entries.append(e)
    if cfa is not None:
        fam = CFA(cfa.value if isinstance(cfa, CFA) else str(cfa).lower().replace("-", ""))
        entries = [e for e in entries if e.cfa is fam]
    return sorted(entries, key=lambda e: (e.cfa.value, e.cost, e.name))


def select(entries: Sequence[KernelInfo], cfa: CFA, budget: float | None = None, name: str | None = None) -> KernelInfo:
    """Pick an entry: by ``name``, else the best-quality entry of ``cfa`` whose cost fits ``budget``.

    With neither, the best-quality entry of the family. Ties go to the cheaper entry.

    Raises
    ------
    KernelNotFoundError
        Unknown name, a name serving another CFA, or no entry at all for the family.
    BudgetError
        The budget is below the cheapest entry; the message lists the available costs.
    """
    fam = [e for e in entries if e.cfa is cfa]
    if name is not None:
        for e in entries:
            if e.name == name:
                if e.cfa is not cfa:
                    raise KernelNotFoundError(f"kernel {name!r} serves {e.cfa.value}, not {cfa.value}")
                return e
        raise KernelNotFoundError(f"no kernel named {name!r} (known for {cfa.value}: {', '.join(e.name for e in fam) or 'none'})")
    if not fam:
        raise KernelNotFoundError(f"the registry holds no {cfa.value} kernel")
    if budget is not None:
        if not budget > 0:
            raise BudgetError(f"budget must be a positive number of ops/pixel, got {budget}")
        fits = [e for e in fam if e.cost <= budget]
        if not fits:
            costs = ", ".join(f"{e.name}={e.cost:g}" for e in sorted(fam, key=lambda e: e.cost))
            raise BudgetError(f"no {cfa.value} kernel fits a budget of {budget:g} ops/pixel (available: {costs})")
        fam = fits
    return max(fam, key=lambda e: (e.score, -e.cost))


def _write_registry(path: Path, doc: Mapping[str, Any]) -> None:
    """Rewrite ``registry.json`` atomically."""
    fd, tmp = tempfile.mkstemp(prefix=".registry.json.", suffix=".tmp", dir=path.parent)  # own name: no two writers share it
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(doc, indent=1) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")  # entry names: also the program's file names in the registry


def add_entry(program, directory: str | Path, quality: Mapping[str, float], description: str = "", provenance: Mapping[str, Any] | None = None) -> KernelInfo:
    """Save ``program`` into registry ``directory`` and add (or replace) its entry in ``registry.json``.

    Entries with other names are kept. The registry file is rewritten atomically.

    Raises
    ------
    ProgramError
        ``registry.json`` exists but is damaged (nothing is written then).
    """
    if not _NAME.fullmatch(program.name):
        raise ValueError(f"{program.name!r}: not a registry entry name (letters, digits and _ . + -, no path; it names the program's files)")
    directory = Path(directory)
    path = directory / "registry.json"
    doc = {"format": REGISTRY_FORMAT, "entries": []}
    if path.exists():
        load_registry(directory)  # a damaged registry is an error before anything is written into it
        doc = json.loads(path.read_text())
    directory.mkdir(parents=True, exist_ok=True)
    program.save(directory / f"{program.name}.json")
    entry = {
        "name": program.name,
        "cfa": program.cfa.value,
        "cost": round(program.cost(), 4),
        "quality": {k: round(float(v), 3) for k, v in quality.items()},
        "program": f"{program.name}.json",
        "description": description or program.meta.get("description", ""),
        "provenance": dict(provenance or {}),
    }
    doc["entries"] = [e for e in doc["entries"] if e["name"] != program.name] + [entry]
    doc["entries"].sort(key=lambda e: (e["cfa"], e["cost"], e["name"]))
    _write_registry(path, doc)
    return load_registry(directory)[[e["name"] for e in doc["entries"]].index(program.name)]


def prune_dominated(directory: str | Path, sets: Sequence[str] = QUALITY_SETS) -> list[str]:
    """Drop entries of registry ``directory`` that do not beat every cheaper entry of their CFA on every
    one of ``sets`` (so quality rises strictly with cost); returns the removed names.

    Entries missing a set's number are left alone. Their program files are removed with them.
    """
    directory = Path(directory)
    path = directory / "registry.json"
    doc = json.loads(path.read_text())
    keep, removed = [], []
    best: dict[str, dict[str, float]] = {}
    def order(e: dict) -> tuple:  # by cost; at equal cost the better first, so that it is the one kept
        q = e.get("quality", {})
        return (e["cfa"], e["cost"], -sum(q.get(k, float("-inf")) for k in sets), e["name"])

    for e in sorted(doc["entries"], key=order):
        q = e.get("quality", {})
        b = best.setdefault(e["cfa"], {})
        if all(k in q for k in sets) and b and any(q[k] <= b.get(k, float("-inf")) for k in sets):
            removed.append(e["name"])
            continue
        keep.append(e)
        for k in sets:
            if k in q:
                b[k] = max(b.get(k, float("-inf")), q[k])
    if removed:
        doc["entries"] = keep
        _write_registry(path, doc)
        for name in removed:
            for f in (directory / f"{name}.json", directory / f"{name}.npz"):
                if f.exists() and not any(k["program"] == f.name for k in keep):
                    f.unlink()
    return removed


def _iter_names(entries: Iterable[KernelInfo]) -> list[str]:  # pragma: no cover - debugging aid
    return [e.name for e in entries]


if __name__ == "__main__":  # pragma: no cover
    for e in kernels():
        print(e.name, e.cfa.value, e.cost, dict(e.quality), file=sys.stdout)
