"""The headless runner: profiles, parameter selection, checks at the door, failure handling and the index."""
import json

import nbformat
import pytest
from helpers import files_under, make_suite

from vitequiv import runner
from vitequiv.run import profiles, records
from vitequiv.run.suite import run_suite


@pytest.fixture
def suite(tmp_path, monkeypatch):
    monkeypatch.setenv("VITEQUIV_ROOT", str(tmp_path))
    return make_suite(tmp_path)


def test_parameters_are_filtered_to_what_a_notebook_declares(suite):
    profile = profiles.load_profile("tiny")
    assert profiles.parameters_for(suite / "notebooks" / "01_good.ipynb", profile, "tiny") == {"X": 3}
    assert profiles.parameters_for(suite / "notebooks" / "03_sleep.ipynb", profile, "tiny") == {}


def test_suite_keeps_going_past_a_failure_and_writes_the_index(suite, capsys):
    out = suite / "out"
    code = runner.main(["--profile", "tiny", "--output-dir", str(out), "01", "02"])
    assert code == records.EXIT_FAILED
    printed = capsys.readouterr().out
    assert "01_good" in printed and "02_bad" in printed and "failed" in printed and "boom" in printed
    assert (out / "01_good" / "line.png").exists() and (out / "01_good" / "line.pdf").exists()
    assert (out / "01_good" / "01_good.ipynb").exists() and (out / "02_bad" / "02_bad.ipynb").exists()
    nbformat.validate(nbformat.read(out / "01_good" / "01_good.ipynb", as_version=4))
    assert not (out / ".staging").exists() or not any((out / ".staging").iterdir())

    manifest = json.loads((out / "01_good" / "manifest.json").read_text())
    assert manifest["profile"] == "tiny" and manifest["parameters"]["X"] == 3 and manifest["parameters"]["MODEL"] == "a"
    assert manifest["run"]["status"] == "ok" and manifest["run"]["parameters"] == {"X": 3}
    assert manifest["vitequiv_version"] and manifest["library_versions"]["torch"]
    assert json.loads((out / "02_bad" / "manifest.json").read_text())["run"]["status"] == "failed"

    readme = (out / "README.md").read_text()
    assert "## 01_good (ok)" in readme and "## 02_bad (failed)" in readme and "boom" in readme
    assert "line.png" in readme and "a line at X" in readme and "values.md" in readme
    assert "| X is three | none | X=3 | 1 | 3 (exact) | >= 3 | **holds** | 01_good | ok, profile tiny |" in readme
    assert "`X=3`" in readme and "vitequiv 0.1.0" in readme

    index = {e["notebook"]: e for e in json.loads((out / "index.json").read_text())["notebooks"]}
    good = index["01_good"]
    assert good["status"] == "ok" and good["outputs_from_last_run"] and good["profile"] == "tiny"
    assert good["seconds"] > 0 and good["started"] <= good["finished"] and good["parameters"]["X"] == 3
    assert good["figures"] == [{"name": "line", "caption": "a line at X", "files": ["line.png", "line.pdf"]}]
    assert good["tables"][0]["files"] == ["values.csv", "values.md"]
    assert good["claims"] == [{"claim": "X is three", "paper": "none", "ours": "X=3", "verdict": "holds",
                               "statistic": "exact", "value": 3.0, "n": 1, "low": 3.0, "high": 3.0,
                               "method": "exact", "threshold": 3.0, "direction": ">=", "parts": []}]
    assert good["notebook_file"] == "01_good.ipynb" and good["library_versions"]["torch"]
    assert index["02_bad"]["status"] == "failed" and "boom" in index["02_bad"]["error"]


def _bad_yaml(suite):
    (suite / "notebooks" / "profiles" / "tiny.yaml").write_text("defaults:\n  X: 2\n  MODEL: [a, b\nnotebooks: {}\n")


def _duplicate_key(suite):
    (suite / "notebooks" / "profiles" / "tiny.yaml").write_text("defaults:\n  X: 2\n  X: 3\n")


def _profile(text):
    return lambda suite: (suite / "notebooks" / "profiles" / "tiny.yaml").write_text(text)


def _other_checkout_notebook(suite):
    make_suite(suite / "elsewhere")


# (case, how to break the suite, command line, error type, fragments the message must hold)
DOOR_ERRORS = [
    ("YAML error", _bad_yaml, ["--profile", "tiny"], records.ProfileError, ["tiny.yaml", "line 4, column 1"]),
    ("duplicate key", _duplicate_key, ["--profile", "tiny"], records.ProfileError, ["tiny.yaml", "line 3", "'X'"]),
    ("misspelt default", _profile("defaults:\n  MODLE: b\n"), ["--profile", "tiny"], records.ProfileError,
     ["defaults.MODLE is declared by no notebook", "did you mean MODEL?", "notebooks declare: MODEL, SLEEP, X"]),
    ("undeclared per-notebook key", _profile("notebooks:\n  02_bad:\n    MODEL: b\n"), ["--profile", "tiny"],
     records.ProfileError, ["notebooks.02_bad.MODEL is not a parameter of 02_bad", "it declares: X"]),
    ("section naming no notebook", _profile("notebooks:\n  01_goood:\n    X: 1\n"), ["--profile", "tiny"],
     records.ProfileError, ["notebooks.01_goood names no notebook", "did you mean 01_good?"]),
    ("unselected notebook's section still checked", _profile("notebooks:\n  03_sleep:\n    SLEPE: 1\n"),
     ["--profile", "tiny", "01"], records.ProfileError, ["notebooks.03_sleep.SLEPE", "it declares: SLEEP"]),
    ("PROFILE in a profile", _profile("defaults:\n  PROFILE: x\n"), ["--profile", "tiny"], records.ProfileError,
     ["defaults.PROFILE", "set by the runner"]),
    ("top-level typo", _profile("default:\n  X: 1\n"), ["--profile", "tiny"], records.ProfileError,
     ["unknown top-level key 'default'", "did you mean defaults?"]),
    ("not a mapping", _profile("- X\n"), ["--profile", "tiny"], records.ProfileError, ["tiny.yaml", "got a list"]),
    ("unknown profile", None, ["--profile", "nope"], records.ProfileError, ["no profile 'nope'", "slow, tiny"]),
    ("reserved profile", None, ["--profile", "interactive"], records.ProfileError, ["'interactive' is reserved"]),
    ("profile path", None, ["--profile", "../tiny"], records.ProfileError, ["--profile '../tiny'"]),
    ("selection matching nothing beside one that matches", None, ["--profile", "tiny", "01", "09"],
     records.SelectionError, ["'09' matches no notebook", "01_good, 02_bad, 03_sleep"]),
    ("empty selection item", None, ["--profile", "tiny", ""], records.SelectionError, ["'' is empty"]),
    ("another checkout's notebook", _other_checkout_notebook,
     ["--profile", "tiny", "elsewhere/notebooks/01_good.ipynb"], records.SelectionError,
     ["not a notebook of this checkout"]),
]


@pytest.mark.parametrize("case, breaks, argv, error, fragments", DOOR_ERRORS, ids=[c[0] for c in DOOR_ERRORS])
def test_bad_profiles_and_selections_stop_before_anything_runs(suite, monkeypatch, capsys, case, breaks, argv, error,
                                                               fragments):
    monkeypatch.chdir(suite)
    if breaks:
        breaks(suite)
    out = suite / "out"
    with pytest.raises(error) as caught:
        run_suite(argv[2:], argv[1], out)
    assert all(f in str(caught.value) for f in fragments), str(caught.value)
    assert runner.main([*argv, "--output-dir", str(out)]) == records.EXIT_USAGE
    printed = capsys.readouterr().err
    assert all(f in printed for f in fragments), printed
    assert not out.exists() and not (suite / "figures").exists()  # nothing written, not even the folder
    assert not (suite / "notebooks" / "kernel.pid").exists()  # nothing ran


def test_output_dir_that_is_a_file_is_refused(suite, capsys):
    (suite / "out").write_text("a file")
    assert runner.main(["--profile", "tiny", "--output-dir", str(suite / "out")]) == records.EXIT_USAGE
    assert f"--output-dir {suite / 'out'}: exists and is not a folder" in capsys.readouterr().err


@pytest.mark.parametrize("content, fragments", [
    ('{"cells": [', ["02_bad.ipynb", "line 1, column 12", "not valid JSON"]),
    ('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5, "extra": 1}',
     ["02_bad.ipynb", "not a valid notebook"]),
], ids=["truncated JSON", "schema"])
def test_a_malformed_notebook_fails_with_its_line_and_the_others_run(suite, capsys, content, fragments):
    out = suite / "out"
    (out / "02_bad").mkdir(parents=True)
    (out / "02_bad" / "kept.png").write_text("published earlier")
    (suite / "notebooks" / "02_bad.ipynb").write_text(content)
    code = runner.main(["--profile", "tiny", "--output-dir", str(out), "02", "03"])
    assert code == records.EXIT_FAILED
    printed = capsys.readouterr().out
    assert all(f in printed for f in fragments)
    assert (out / "03_sleep" / "new.pdf").exists()  # the valid notebook ran
    assert files_under(out / "02_bad") == ["kept.png"]  # an invalid notebook publishes nothing
    index = {e["notebook"]: e for e in json.loads((out / "index.json").read_text())["notebooks"]}
    assert index["02_bad"]["status"] == "failed" and not index["02_bad"]["outputs_from_last_run"]
    assert index["03_sleep"]["status"] == "ok"


def test_an_unselected_malformed_notebook_only_warns(suite, capsys):
    (suite / "notebooks" / "02_bad.ipynb").write_text("{")
    assert runner.main(["--profile", "tiny", "--output-dir", str(suite / "out"), "03"]) == records.EXIT_OK
    assert "warning: notebook" in capsys.readouterr().err


def test_selection_and_listing(suite, capsys):
    assert [p.stem for p in profiles.discover(["02"])] == ["02_bad"]
    assert [p.stem for p in profiles.discover(["02_bad.ipynb", "0"])] == ["01_good", "02_bad", "03_sleep"]
    assert runner.main(["--list"]) == 0
    assert "01_good, 02_bad, 03_sleep" in capsys.readouterr().out
