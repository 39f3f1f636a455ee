"""``rawdemosaic search``: bad configs, run directories, export arguments and damaged files are one-line
errors that name the file, found before anything is trained or written."""

from __future__ import annotations

import json
import math

import pytest

from rawdemosaic.errors import ProgramError
from rawdemosaic.search import evolve as E
from rawdemosaic.search import space as S
from rawdemosaic.search.cli import config_path, export_run, main

CFG = """
[search]
mode = "joint"
generations = 1
initial = 4
children = 3
[ray]
enabled = false
"""


def fake_trainer(program, seed, init_from):
    return program, 25.0 + 3.0 * math.log10(program.cost()) + (hash(S.structural_hash(program)) % 100) / 100.0


def must_not_train(program, seed, init_from):
    raise AssertionError("trained although the arguments were bad")


@pytest.fixture
def finished_run(tmp_path):
    run_dir = tmp_path / "run"
    E.run(E.load_config(text=CFG), run_dir, cfa="bayer", seed=3, trainer=fake_trainer, executor=E.SerialExecutor(), quiet=True)
    return run_dir


def _one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("rawdemosaic search: error: "), err
    return err


@pytest.mark.parametrize(
    "text, match",
    [
        ("[search]\ngeneratons = 1\n", "unknown key 'generatons' in \\[search\\] \\(did you mean 'generations'\\?\\)"),
        ("[serch]\nmode = 'joint'\n", "unknown table \\[serch\\]"),
        ("[space]\nchanels = [4]\n", "unknown key 'chanels' in \\[space\\]"),
        ("[ray]\nenabled = \"no\"\n", "\\[ray\\] enabled takes true or false"),
        ("[search]\ngenerations = \"two\"\n", "\\[search\\] generations takes an integer"),
        ("[search\n", "cannot read the config"),
    ],
)
def test_config_mistakes_are_refused_naming_the_file(tmp_path, text, match):
    f = tmp_path / "c.toml"
    f.write_text(text)
    with pytest.raises(ValueError, match=match) as ei:
        E.load_config(f)
    assert str(f) in str(ei.value)


def test_config_name_is_a_file_not_a_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "smoke").mkdir()  # a directory named like the packaged config does not shadow it
    assert config_path("smoke").name == "smoke.toml" and config_path("smoke").is_file()


def test_run_checks_everything_before_writing(tmp_path):
    bad = E.load_config(text=CFG.replace('"joint"', '"jont"'))
    with pytest.raises(ValueError, match="unknown search mode"):
        E.run(bad, tmp_path / "r1", trainer=fake_trainer, executor=E.SerialExecutor(), quiet=True)
    with pytest.raises(ValueError, match="seed must be >= 0"):
        E.run(E.load_config(text=CFG), tmp_path / "r1", seed=-5, trainer=fake_trainer, executor=E.SerialExecutor(), quiet=True)
    assert not (tmp_path / "r1").exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.toml").write_text("precious")
    with pytest.raises(FileExistsError, match="not empty and not a run"):
        E.run(E.load_config(text=CFG), other, trainer=fake_trainer, executor=E.SerialExecutor(), quiet=True)
    assert [p.name for p in other.iterdir()] == ["config.toml"] and (other / "config.toml").read_text() == "precious"


@pytest.mark.parametrize("damage", ["run.json", "state.json", "generation state"])
def test_damaged_run_files_are_named(finished_run, capsys, damage):
    if damage == "generation state":
        target = finished_run / json.loads((finished_run / "state.json").read_text())["current"] / "state.json"
        target.write_text(target.read_text()[:40])  # truncated
    else:
        target = finished_run / damage
        target.write_text("{}")
    err = _one_line_error(capsys, ["resume", str(finished_run)])
    assert str(target) in err and "damaged run file" in err


def test_resume_of_a_file_or_a_missing_directory(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert "no such run directory" in _one_line_error(capsys, ["resume", str(tmp_path / "afile")])
    assert "no such run directory" in _one_line_error(capsys, ["resume", str(tmp_path / "nope")])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"overrides": {"stepz": 5}}, "--set stepz: unknown key"),
        ({"overrides": {"steps": -1}}, "--set steps=-1: expected a positive integer"),
        ({"overrides": {"steps": "abc"}}, "\\[export\\] steps takes an integer"),
        ({"overrides": {"lr": 0}}, "expected a positive number"),
        ({"overrides": {"keep_zeros": "False"}}, "\\[export\\] keep_zeros takes true or false"),  # a [train] key: typed too
        ({"overrides": {"sets": "nosuchset"}}, "no quality set 'nosuchset'"),
        ({"sets": ["nosuchset"]}, "no quality set 'nosuchset'"),
        ({"limit": 0}, "--limit must be >= 1"),
        ({"top": 0}, "--top must be >= 1"),
        ({"jobs": 0}, "--jobs must be >= 1"),
        ({"into": "FILE"}, "exists and is not a directory \\(--into"),
        ({"trained_dir": "FILE", "train_only": True}, "exists and is not a directory \\(--trained"),
    ],
)
def test_export_arguments_are_checked_before_training(finished_run, tmp_path, kwargs, match):
    afile = tmp_path / "afile"
    afile.write_text("x")
    kwargs = {k: (str(afile) if v == "FILE" else v) for k, v in kwargs.items()}
    kwargs.setdefault("into", str(tmp_path / "models"))
    with pytest.raises(ValueError, match=match):
        export_run(finished_run, trainer=must_not_train, quiet=True, **kwargs)


def test_export_into_a_damaged_registry_trains_and_writes_nothing(finished_run, tmp_path):
    reg = tmp_path / "models"
    reg.mkdir()
    (reg / "registry.json").write_text('{"format": "rawdemosaic-registry/1", "entr')
    with pytest.raises(ProgramError, match="registry.json: malformed registry"):
        export_run(finished_run, into=reg, trainer=must_not_train, quiet=True)
    assert [p.name for p in reg.iterdir()] == ["registry.json"]


def test_export_fails_when_every_finalist_fails(finished_run, tmp_path):
    from rawdemosaic.evaluate import TEST_SETS, data_dir

    if not (data_dir() / TEST_SETS["kodak24"]).is_dir():
        pytest.skip("no test images")

    def diverges(program, seed, init_from):
        return program, float("nan")

    with pytest.raises(ValueError, match="every finalist failed to train"):
        export_run(finished_run, into=tmp_path / "models", trainer=diverges, quiet=True, limit=1, sets=["kodak24"])
    assert not (tmp_path / "models").exists()


def test_add_entry_leaves_a_damaged_registry_alone(tmp_path):
    from rawdemosaic.program.classical import bayer_bilinear
    from rawdemosaic.registry import add_entry

    (tmp_path / "registry.json").write_text("{}")
    with pytest.raises(ProgramError, match="malformed registry"):
        add_entry(bayer_bilinear(), tmp_path, {"kodak24": 1.0})
    assert [p.name for p in tmp_path.iterdir()] == ["registry.json"]


def test_report_path_and_set(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from rawdemosaic.search.report import plot_front

    out = plot_front(tmp_path / "front")
    assert out == tmp_path / "front.png" and out.stat().st_size > 10_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["front.png"]  # no temporary file left
    with pytest.raises(ValueError, match="is a directory"):
        plot_front(tmp_path)
    assert "no registry entry is measured on 'nosuchset'" in _one_line_error(capsys, ["report", "--out", str(tmp_path / "x.png"), "--set", "nosuchset"])
