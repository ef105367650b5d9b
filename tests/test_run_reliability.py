"""Untrusted records, roots that name nothing, errors from inside a notebook, and kernels started side by side."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import files_under, make_notebook, make_suite, private_copy

from vitequiv import __main__, figures, paths, runner
from vitequiv.run import cache, execute, index, records
from vitequiv.run.cluster import usable_cores
from vitequiv.run.suite import run_suite


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A fake checkout whose 01_good was published by an ok run (run record, manifest, cache key), and a sweep."""
    root = make_suite(tmp_path_factory.mktemp("published"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VITEQUIV_ROOT", str(root))
        assert run_suite(["01"], "tiny", root / "out").exit_status == records.EXIT_OK
    (root / "out" / "sweeps" / "s").mkdir(parents=True)
    (root / "out" / "sweeps" / "s" / "sweep.json").write_text(json.dumps({"profile": "tiny", "swept": {"X": [1]}}))
    return root


@pytest.fixture
def suite(published, tmp_path, monkeypatch):
    """A private copy of the published checkout."""
    return private_copy(published, tmp_path, monkeypatch)


def _set(relative: str, text: str):
    return lambda out: (out / relative).write_text(text)


def _edit(relative: str, change):
    def edit(out):
        data = json.loads((out / relative).read_text())
        change(data)
        (out / relative).write_text(json.dumps(data))
    return edit


RECORD, MANIFEST, KEY = ".runs/01_good.json", "01_good/manifest.json", ".runs/01_good.key.json"
# (case, how the file is spoiled, which file, what the index or the cache says about it)
RECORDS = [
    ("record: a field null", _edit(RECORD, lambda d: d.update(run_id=None)), RECORD, "'run_id' is NoneType null"),
    ("record: a list", _set(RECORD, "[]"), RECORD, "the file is list [], expected a JSON object"),
    ("record: unknown status", _edit(RECORD, lambda d: d.update(status="done")), RECORD, "'status' is str \"done\""),
    ("record: not JSON", _set(RECORD, '{"run_id": '), RECORD, "01_good.json cannot be read"),
    ("manifest: a list where a mapping belongs", _edit(MANIFEST, lambda d: d.update(figures=[])), MANIFEST,
     "'figures' is list [], expected a JSON object"),
    ("manifest: a claim that is text", _edit(MANIFEST, lambda d: d.update(claims={"c": "holds"})), MANIFEST,
     "'claims.c' is str"),
    ("manifest: run null fields", _edit(MANIFEST, lambda d: d["run"].update(status=None)), MANIFEST,
     "'run.status' is NoneType null"),
    ("key: environment a list", _edit(KEY, lambda d: d.update(environment=[])), KEY, "'environment' is list []"),
    ("key: weights a number", _edit(KEY, lambda d: d["environment"].update(weights=3)), KEY,
     "'environment.weights' is int 3"),
    ("sweep record: swept a list", _set("sweeps/s/sweep.json", '{"swept": [1], "counts": "x"}'),
     "sweeps/s/sweep.json", "'swept' is list [1]"),
]


@pytest.mark.parametrize("case, spoil, spoiled, problem", RECORDS, ids=[c[0] for c in RECORDS])
def test_a_record_of_the_wrong_shape_is_stale_not_a_crash(suite, case, spoil, spoiled, problem):
    out = suite / "out"
    spoil(out)
    before = files_under(out)
    index.write_index(out)  # the index is always written, and says what is wrong
    written = json.loads((out / "index.json").read_text())
    problems = [p for e in written["notebooks"] + written["sweeps"] for p in e["problems"]]
    found = cache.lookup(out, "01_good", {}, [])
    if spoiled != KEY and not spoiled.startswith("sweeps"):
        assert any(problem in p for p in problems), problems
    if not spoiled.startswith("sweeps"):  # the cache never trusts it: the notebook runs again, saying why
        assert not found.hit and Path(spoiled).name in found.reason and problem in found.reason, found
    else:
        assert any(problem in p for p in problems), problems
    assert sorted(set(files_under(out)) - set(before)) == []  # nothing left behind (README and index existed)
    assert not any(p.endswith(".part") for p in files_under(out))


def test_a_run_over_bad_records_runs_again_and_writes_the_index(suite, capsys):
    out = suite / "out"
    _edit(RECORD, lambda d: d.update(run_id=None, seconds="long"))(out)
    _edit(MANIFEST, lambda d: d.update(tables=[]))(out)
    _set("sweeps/s/sweep.json", "[1, 2]")(out)
    assert runner.main(["--profile", "tiny", "--output-dir", str(out), "01"]) == records.EXIT_OK
    printed = capsys.readouterr().out
    assert "01_good: runs again, its run record 01_good.json does not have the expected shape" in printed
    assert "01_good: ok in" in printed and "total" in printed
    written = json.loads((out / "index.json").read_text())
    assert written["notebooks"][0]["status"] == "ok" and written["sweeps"][0]["problems"]


def test_an_error_inside_a_notebook_keeps_its_type_message_and_cell(suite, capsys):
    make_notebook(suite / "notebooks" / "05_raises.ipynb", "x = 1\nraise ValueError('first line\\nsecond line')")
    assert runner.main(["--profile", "tiny", "--output-dir", str(suite / "out"), "05"]) == records.EXIT_FAILED
    printed = capsys.readouterr().out
    assert "ValueError: first line second line (in cell [3]: x = 1)" in printed, printed  # not just its last line


def test_a_swept_value_that_does_not_fit_its_parameter_is_refused_at_the_door(suite, capsys):
    make_notebook(suite / "notebooks" / "05_seed.ipynb", "pass", "SEED: int = 0  # a seed")
    out = suite / "fresh"
    argv = ["--profile", "tiny", "--output-dir", str(out), "--sweep", "SEED=[]", "05"]
    assert runner.main(argv) == records.EXIT_USAGE
    assert "SEED=[] (from the command line) does not fit 05_seed's parameter `SEED: int`" in capsys.readouterr().err
    assert not out.exists()
    assert runner.main([*argv[:-2], "SEED=0,1.5", "05"]) == records.EXIT_USAGE  # 1.5 is no int either


# ---- roots ------------------------------------------------------------------------------------------------------

def _cli(argv):
    return lambda: runner.main(argv)


# (case, variable, what it names: "missing" | "file" | "plain" (an empty folder) | "empty", the call, expected)
ROOTS = [
    ("root missing", "VITEQUIV_ROOT", "missing", _cli(["--list"]), "does not exist"),
    ("root not a checkout", "VITEQUIV_ROOT", "plain", _cli(["--list"]), "is not a vitequiv checkout"),
    ("root a file", "VITEQUIV_ROOT", "file", _cli(["--list"]), "is not a folder"),
    ("root empty", "VITEQUIV_ROOT", "empty", _cli(["--list"]), "is empty"),
    ("figures missing", "VITEQUIV_FIGURES", "missing", _cli(["--profile", "tiny", "01"]), "does not exist"),
    ("figures a file", "VITEQUIV_FIGURES", "file", _cli(["--profile", "tiny", "01"]), "is not a folder"),
    ("data missing", "VITEQUIV_DATA", "missing", lambda: __main__.main(["weights", "--check"]), "does not exist"),
]


@pytest.mark.parametrize("case, variable, names, call, expected", ROOTS, ids=[c[0] for c in ROOTS])
def test_a_variable_that_names_no_folder_is_an_error_and_nothing_is_created(
        suite, tmp_path, monkeypatch, capsys, case, variable, names, call, expected):
    target = {"missing": tmp_path / "typo", "file": tmp_path / "a-file", "plain": tmp_path / "plain",
              "empty": ""}[names]
    (tmp_path / "plain").mkdir()
    (tmp_path / "a-file").write_text("x")
    monkeypatch.chdir(suite / "notebooks")
    monkeypatch.setenv(variable, str(target))
    before = files_under(tmp_path)
    assert call() == 2
    error = capsys.readouterr().err
    assert f"error: {variable}=" in error and expected in error, error
    assert files_under(tmp_path) == before and not any((tmp_path / "plain").iterdir())
    assert not (tmp_path / "typo").exists()


def test_output_refuses_a_figures_variable_that_names_no_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("VITEQUIV_FIGURES", str(tmp_path / "typo"))
    with pytest.raises(paths.LocationError, match="VITEQUIV_FIGURES=.* does not exist"):
        figures.Output("01_good", root=None)
    assert not (tmp_path / "typo").exists()


def test_the_list_names_the_checkout_it_lists(suite, capsys):
    assert runner.main(["--list"]) == records.EXIT_OK
    assert "notebooks: 01_good, 02_bad, 03_sleep" in capsys.readouterr().out


# ---- kernels ----------------------------------------------------------------------------------------------------

def test_a_kernel_that_does_not_start_is_retried_once_then_reported_as_a_start_failure(suite, monkeypatch):
    calls = []

    def no_start(*args):
        calls.append(args)
        raise RuntimeError("Kernel died before replying to kernel_info")

    monkeypatch.setattr(execute, "_papermill", no_start)
    result = run_suite(["01"], "tiny", suite / "out", force=True)
    record = result.records[0]
    assert len(calls) == 2 and record.status == "start failed" and "did not start, twice" in record.error
    assert result.exit_status == records.EXIT_FAILED
    assert (suite / "out" / "01_good" / "line.png").exists()  # the earlier outputs stay published
    entry = json.loads((suite / "out" / "index.json").read_text())["notebooks"][0]
    assert entry["status"] == "start failed" and not entry["outputs_from_last_run"]

    calls.clear()

    def fails_once(*args):
        calls.append(args)
        if len(calls) == 1:
            raise RuntimeError("Kernel didn't respond in 60 seconds")

    monkeypatch.setattr(execute, "_papermill", fails_once)
    assert execute.execute(Path("in.ipynb"), Path("out.ipynb"), {}, {}, suite) == (records.RunStatus.OK, "")
    assert len(calls) == 2


KERNEL_REPORTS = ("import json, os, pathlib, ipykernel.connect\n"
                  "info = json.loads(ipykernel.connect.get_connection_info())\n"
                  "pathlib.Path(OUT).write_text(info['transport'])\n")
RUN_ONE = ("import sys, pathlib\nfrom vitequiv.run import execute\n"
           "nb, out, cwd = map(pathlib.Path, sys.argv[1:4])\n"
           "status, error = execute.execute(nb, out, {'OUT': sys.argv[4]}, {}, cwd)\n"
           "print(status.value, error)\nsys.exit(0 if status == 'ok' else 1)\n")


def test_many_kernels_started_at_once_all_run(tmp_path):
    """More kernels than cores, started in the same instant: none may lose its sockets to another."""
    notebook = tmp_path / "report.ipynb"
    make_notebook(notebook, KERNEL_REPORTS, "OUT = 'unset'  # where to write")
    count = usable_cores() + 2
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    children = [subprocess.Popen([sys.executable, "-c", RUN_ONE, str(notebook), str(tmp_path / f"out{i}.ipynb"),
                                  str(tmp_path), str(tmp_path / f"transport{i}")], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True) for i in range(count)]
    results = [(child.wait(timeout=600), child.stdout.read()) for child in children]
    assert all(code == 0 for code, _ in results), results
    transports = {(tmp_path / f"transport{i}").read_text() for i in range(count)}
    assert transports == ({"ipc"} if os.name == "posix" else {"tcp"})


@pytest.mark.parametrize("spoil, spoiled", [
    (_edit(MANIFEST, lambda d: d["claims"][next(iter(d["claims"]))].update(verdict="not")), "manifest.json"),
    (lambda out: (out / "01_good" / "values.csv").write_bytes((out / "01_good" / "values.csv").read_bytes()[:-2]),
     "values.csv"),
], ids=["a claim's verdict edited", "a table cut short"])
def test_a_published_output_changed_since_its_run_is_not_trusted(suite, spoil, spoiled):
    out = suite / "out"
    assert cache.lookup(out, "01_good", *_recorded(out)).hit  # as published: reusable
    spoil(out)
    found = cache.lookup(out, "01_good", *_recorded(out))
    assert not found.hit and f"published {spoiled} changed since that run (sha256 differs)" in found.reason, found


def _recorded(out):
    key = json.loads((out / KEY).read_text())
    return key["inputs"], [key["environment"]]
