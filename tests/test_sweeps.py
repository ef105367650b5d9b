"""Sweeps and the cache: every combination of swept values, in-process and on a local Dask cluster, never a finished
run computed twice. Tiny fake notebooks in a fake repository (as tests/test_runner.py's suite), not the real suite."""
import contextlib
import io
import json
import signal
from pathlib import Path

import pandas as pd
import pytest
from helpers import make_notebook, make_suite, start_runner, wait_for

from vitequiv import runner
from vitequiv.run import cache, index, profiles, records, sweep_report, sweeps
from vitequiv.run.suite import run_suite, run_sweep

# 04 records two claims and a table from SEED and MODEL; 05 kills its Dask worker (its kernel's parent) once for
# SEED == KILL_ONCE and every time for SEED == KILL_ALWAYS; 06 blocks for SEED == BLOCK_SEED while the file BLOCK
# exists. None imports vitequiv: their kernels start in about a second.
CLAIMS = """import json, os, pathlib
folder = pathlib.Path(os.environ.get("VITEQUIV_FIGURES", "scratch")) / "04_claims"
folder.mkdir(parents=True, exist_ok=True)
(folder / "values.csv").write_text(f"pair,value,steps\\np1,{2 * SEED + (MODEL == 'b')},10\\np2,{SEED + 0.5},10\\n")
claims = {"seed is even": {"paper": "p", "ours": f"SEED={SEED}", "verdict": "holds" if SEED % 2 == 0 else "not"},
          "model is a": {"paper": "p", "ours": f"MODEL={MODEL}", "verdict": "holds" if MODEL == "a" else "partly"}}
tables = {"values": {"files": ["values.csv"], "caption": "two numbers per pair"}}
(folder / "manifest.json").write_text(json.dumps({"notebook": "04_claims", "tables": tables, "claims": claims}))"""
KILLER = """import os, pathlib, signal
if SEED == KILL_ONCE and not pathlib.Path(MARKER).exists():
    pathlib.Path(MARKER).write_text(str(os.getppid()))
    os.kill(os.getppid(), signal.SIGKILL)
if SEED == KILL_ALWAYS:
    os.kill(os.getppid(), signal.SIGKILL)"""
BLOCKER = """import os, pathlib, time
if SEED == BLOCK_SEED:
    pathlib.Path("kernel.pid").write_text(str(os.getpid()))
    deadline = time.time() + 60
    while pathlib.Path(BLOCK).exists() and time.time() < deadline:
        time.sleep(0.1)"""
TIME_COLUMNS = ["seconds", "finished"]


def make_sweep_suite(root: Path) -> Path:
    make_suite(root)
    notebooks = root / "notebooks"
    make_notebook(notebooks / "04_claims.ipynb", CLAIMS, "SEED = 0  # seed\nMODEL = 'a'  # model")
    make_notebook(notebooks / "05_kill.ipynb", KILLER, "SEED = 0\nKILL_ONCE = -1\nKILL_ALWAYS = -1\nMARKER = ''")
    make_notebook(notebooks / "06_block.ipynb", BLOCKER, "SEED = 0\nBLOCK_SEED = -1\nBLOCK = ''")
    profiles = notebooks / "profiles"
    (profiles / "kill.yaml").write_text(json.dumps({"defaults": {"KILL_ONCE": 1, "KILL_ALWAYS": 2,
                                                                 "MARKER": str(root / "marker")}}))
    (profiles / "block.yaml").write_text(json.dumps({"defaults": {"BLOCK_SEED": 1, "BLOCK": str(root / "block")}}))
    return root


@pytest.fixture
def suite(tmp_path, monkeypatch):
    monkeypatch.setenv("VITEQUIV_ROOT", str(tmp_path))
    return make_sweep_suite(tmp_path)


def sweep_of(**axes) -> sweeps.Sweep:
    return sweeps.Sweep(axes, profile="tiny", selection=["04"])


def read_table(out: Path, name: str = "tiny-SEED+MODEL") -> pd.DataFrame:
    return pd.read_csv(out / "sweeps" / name / "table.csv", keep_default_na=False)


# ---- reading --sweep values, sweep files and combination names ----------------------------------------------------

@pytest.mark.parametrize("option, name, values", [
    ("SEED=0,1,2", "SEED", [0, 1, 2]),
    ("MODEL=embedded,random:vit_small_patch14_dinov2", "MODEL", ["embedded", "random:vit_small_patch14_dinov2"]),
    ("PHOTOS=[cat],[cat,coffee]", "PHOTOS", [["cat"], ["cat", "coffee"]]),
    ('NAME="a, b",c', "NAME", ["a, b", "c"]),
    ("LR=1e-3,0.5, null,true", "LR", [0.001, 0.5, None, True]),  # 1e-3 a number, as in YAML 1.2
])
def test_sweep_values_are_yaml(option, name, values):
    assert sweeps.parse_axis(option) == (name, values)


@pytest.mark.parametrize("option, fragments", [
    ("SEED", ["--sweep 'SEED'", "expected NAME=V1,V2"]),
    ("SEED=", ["no values after SEED=", "PHOTOS=[cat],[cat,coffee]"]),
    ("seed=1", ["'seed' is not a parameter name", "UPPER_CASE"]),
    ("PROFILE=a,b", ["PROFILE is set by the runner"]),
    ("SEED=0,,1", ["cannot be read as YAML", "at character 3", "a list value in brackets"]),
    ("PHOTOS=[cat", ["cannot be read as YAML"]),
    ("SEED=0,1,0", ["the value 0 of SEED is given twice"]),
    ("DAY=2026-01-01", ["is not a number, string, list or mapping", "quote it"]),
])
def test_bad_sweep_values_are_named(option, fragments):
    with pytest.raises(sweeps.SweepError) as caught:
        sweeps.parse_axis(option)
    assert all(f in str(caught.value) for f in fragments), str(caught.value)


def test_combination_folders_are_readable_safe_and_unique():
    assert sweeps.combination_folder({"SEED": 1, "MODEL": "embedded"}) == "SEED=1,MODEL=embedded"
    assert sweeps.combination_folder({"MODEL": "random:vit_small_patch14_dinov2"}) == \
        "MODEL=random%3Avit_small_patch14_dinov2"
    assert sweeps.combination_folder({"PHOTOS": ["cat", "coffee"]}) == "PHOTOS=[cat,coffee]"
    tricky = [1, "1", 1.0, True, "true", None, "null", "", "a,b", ["a", "b"], ["a,b"], "a/b", "a\\b", "a b", "a%3Ab",
              "a:b", {"a": 1}, "{a:1}", "é", list(range(100)), list(range(101))]
    folders = [sweeps.combination_folder({"X": value}) for value in tricky]
    assert len(set(folders)) == len(tricky), folders
    for folder in folders:
        assert len(folder) <= sweeps.MAX_FOLDER and not set(folder) & set('/\\:*?"<>| ') and folder.isascii()


def test_a_sweep_file_and_the_command_line_combine(suite):
    (suite / "notebooks" / "sweeps").mkdir()
    (suite / "notebooks" / "sweeps" / "seeds.yaml").write_text(
        "description: two seeds\nprofile: tiny\nnotebooks: [04_claims]\nparameters: {MODEL: b}\n"
        "sweep:\n  SEED: [0, 1]\n")
    sweep = sweeps.from_arguments([], "seeds", None, None, [])
    assert (sweep.name, sweep.profile, sweep.selection, sweep.axes, sweep.parameters) == \
        ("seeds", "tiny", ["04_claims"], {"SEED": [0, 1]}, {"MODEL": "b"})
    both = sweeps.from_arguments(["X=1,2"], "seeds", None, "slow", ["01", "04"])
    assert (both.name, both.profile, both.selection, both.axes) == \
        ("seeds+X", "slow", ["01", "04"], {"SEED": [0, 1], "X": [1, 2]})
    with pytest.raises(sweeps.SweepError, match="SEED is already swept by sweep file"):
        sweeps.from_arguments(["SEED=3"], "seeds", None, None, [])
    assert sweeps.available_sweeps() == ["seeds"]


@pytest.mark.parametrize("text, fragments", [
    ("sweep: {SEED: [0]}\nnotebook: ['04']\n", ["unknown key 'notebook'", "did you mean notebooks?"]),
    ("sweep: {SEED: [0]}\nnotebooks: [04]\n", ["got [4]", "write '07' or 07_models_and_layers"]),
    ("profile: tiny\n", ["'sweep' (parameter names -> lists of values", "or 'combinations'"]),
    ("combinations: [{SEED: 1}, {SEED: 1}]\n", ["combinations[1] repeats combinations[0]"]),
    ("combinations: [SEED]\n", ["'combinations' must list mappings of parameter names to values, got ['SEED']"]),
    ("sweep: {SEED: [0]}\ncombinations: [{SEED: 1}]\n", ["combinations[0] sets SEED, which 'sweep' sweeps too"]),
    ("sweep: {SEED: 3}\n", ["sweep.SEED", "expected a non-empty list of values for SEED, got 3"]),
    ("sweep: {SEED: [0, 0]}\n", ["the value 0 of SEED is given twice"]),
    ("sweep: {SEED: [0]}\nsweep: {SEED: [1]}\n", ["line 2", "duplicate key 'sweep'"]),
    ("sweep: {SEED: [0]}\nparameters: {PROFILE: x}\n", ["parameters.PROFILE"]),
], ids=["typo", "number", "no sweep", "repeated combination", "bad combinations", "listed and swept", "not a list",
        "repeat", "duplicate key", "PROFILE"])
def test_bad_sweep_files_are_named(suite, text, fragments):
    path = suite / "notebooks" / "sweeps" / "bad.yaml"
    path.parent.mkdir()
    path.write_text(text)
    with pytest.raises(sweeps.SweepError) as caught:
        sweeps.from_arguments([], str(path), None, None, [])
    assert str(path) in str(caught.value) and all(f in str(caught.value) for f in fragments), str(caught.value)


def test_listed_combinations_cross_the_axes_and_their_folders_show_what_tells_them_apart(suite):
    (suite / "notebooks" / "sweeps").mkdir()
    (suite / "notebooks" / "sweeps" / "pairs.yaml").write_text(
        "profile: tiny\nnotebooks: ['01']\ncombinations:\n  - {MODEL: a, X: 0}\n  - {MODEL: b, X: 5}\n")
    sweep = sweeps.from_arguments([], "pairs", None, None, [])
    planned, notes = sweeps.plan(sweep, profiles.load_profile("tiny"), profiles.discover(["01"]),
                                 profiles.inspect_all()[0])
    assert [(p.folder, p.parameters) for p in planned] == [("MODEL=a", {"X": 0, "MODEL": "a"}),
                                                           ("MODEL=b", {"X": 5, "MODEL": "b"})] and not notes
    assert sweep.swept == {"MODEL": ["a", "b"], "X": [0, 5]}
    with pytest.raises(sweeps.SweepError, match="X is already swept by sweep file"):
        sweeps.from_arguments(["X=1,2"], "pairs", None, None, [])
    (suite / "notebooks" / "sweeps" / "pairs.yaml").write_text(
        "profile: tiny\nnotebooks: ['01']\ncombinations:\n  - {MODEL: a}\n  - {MODEL: b}\n")
    crossed = sweeps.from_arguments(["X=1,2"], str(suite / "notebooks" / "sweeps" / "pairs.yaml"), None, None, [])
    assert crossed.name == "pairs+X"
    planned, _ = sweeps.plan(crossed, profiles.load_profile("tiny"), profiles.discover(["01"]),
                             profiles.inspect_all()[0])
    assert [p.folder for p in planned] == ["MODEL=a,X=1", "MODEL=a,X=2", "MODEL=b,X=1", "MODEL=b,X=2"]


REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", sorted((REPO / "notebooks" / "sweeps").glob("*.yaml")), ids=lambda p: p.stem)
def test_the_sweep_files_plan_against_the_real_notebooks(path, monkeypatch):
    monkeypatch.setenv("VITEQUIV_ROOT", str(REPO))
    sweep = sweeps.from_arguments([], str(path), None, None, [])
    profile = profiles.load_profile(sweep.profile)
    declared, _ = profiles.inspect_all()
    profiles.check_profile(profile, declared)
    planned, notes = sweeps.plan(sweep, profile, profiles.discover(sweep.selection), declared)
    assert planned and not notes and sweep.name == path.stem
    assert len({(p.notebook.stem, p.folder) for p in planned}) == len(planned)  # one folder per notebook and values


def test_a_missing_sweep_file_lists_the_known_ones(suite):
    with pytest.raises(sweeps.SweepError, match=r"--sweep-file nope: .*nope.yaml does not exist; .*: none"):
        sweeps.from_arguments([], "nope", None, None, [])


def test_a_swept_name_that_no_selected_notebook_declares_is_an_error(suite, capsys):
    out = suite / "out"
    argv = ["--profile", "tiny", "--sweep", "SEED=0,1", "--sweep", "SEEED=1", "--output-dir", str(out), "04"]
    assert runner.main(argv) == records.EXIT_USAGE
    error = capsys.readouterr().err
    assert "SEEED (swept, from the command line) is declared by no selected notebook" in error
    assert "did you mean SEED?" in error and "they declare: MODEL, SEED" in error
    assert not out.exists() and not (suite / "notebooks" / "kernel.pid").exists()  # nothing ran, nothing written
    command_line = start_runner(suite, *argv[:-3], "04")  # python -m vitequiv.runner: the same error, no traceback
    stdout, stderr = command_line.communicate(timeout=120)
    assert command_line.returncode == records.EXIT_USAGE and "SEEED (swept" in stderr and "Traceback" not in stderr
    assert runner.main(["--profile", "tiny", "--sweep", "SLEEP=1", "--output-dir", str(out), "04"]) == 2  # in 03 only
    assert runner.main(["--profile", "tiny", "--sweep-name", "x", "--output-dir", str(out)]) == records.EXIT_USAGE
    assert "--sweep-name 'x': name a sweep with --sweep or --sweep-file" in capsys.readouterr().err


def test_a_name_declared_by_some_notebooks_is_swept_where_declared(suite):
    profile = profiles.load_profile("tiny")
    declared, _ = profiles.inspect_all()
    sweep = sweeps.Sweep({"SEED": [0, 1], "X": [5]}, profile="tiny", selection=["01", "03", "04"])
    planned, notes = sweeps.plan(sweep, profile, profiles.discover(sweep.selection), declared)
    assert [(p.notebook.stem, p.folder) for p in planned] == [
        ("01_good", "X=5"), ("04_claims", "SEED=0"), ("04_claims", "SEED=1")]
    assert planned[0].parameters == {"X": 5} and planned[2].parameters == {"SEED": 1}
    assert notes == ["SEED is swept in 04_claims only: 01_good, 03_sleep does not declare it",
                     "X is swept in 01_good only: 03_sleep, 04_claims does not declare it",
                     "03_sleep declares none of SEED, X and is left out of the sweep"]


@pytest.mark.parametrize("argv, fragment", [
    (["--workers", "0"], "--workers 0: expected a number of worker processes, 1 or more"),
    (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "give one of them"),
])
def test_bad_cluster_options_are_refused(suite, capsys, argv, fragment):
    assert runner.main(["--profile", "tiny", "--output-dir", str(suite / "out"), *argv]) == records.EXIT_USAGE
    assert fragment in capsys.readouterr().err and not (suite / "out").exists()


# ---- the cache key ----------------------------------------------------------------------------------------------

def test_the_code_digest_sees_code_cells_only(suite):
    path = suite / "notebooks" / "04_claims.ipynb"
    before = cache.code_digest(path.read_text())
    nb = json.loads(path.read_text())
    nb["cells"].append({"cell_type": "markdown", "metadata": {}, "source": "# a new heading"})
    nb["cells"][1]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "printed"}]
    nb["cells"][1]["execution_count"] = 7
    assert cache.code_digest(json.dumps(nb)) == before
    nb["cells"][1]["source"] += "\nprint(1)"
    assert cache.code_digest(json.dumps(nb)) != before


def test_weights_are_identified_by_their_checksum_or_cache_commit(tmp_path, monkeypatch):
    from huggingface_hub import constants

    (tmp_path / "data").mkdir()  # VITEQUIV_DATA must name an existing folder
    monkeypatch.setenv("VITEQUIV_DATA", str(tmp_path / "data"))
    assert cache.weights_identity("embedded").startswith(cache.UNAVAILABLE)
    (tmp_path / "data" / "dinov2_vits14_224.safetensors.sha256").write_text("abc123  dinov2_vits14_224.safetensors\n")
    assert cache.weights_identity("embedded") == "sha256:abc123"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    name = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    assert cache.weights_identity(name).startswith(f"{cache.UNAVAILABLE}: timm/{name} is not in the Hugging Face")
    snapshot = tmp_path / "hub" / f"models--timm--{name}" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").write_bytes(b"weights")
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0123abcd")
    assert cache.weights_identity(name) == f"hf:timm/{name}@0123abcd/model.safetensors"
    assert cache.weights_identity("random:vit_tiny_patch16_224") is None
    assert cache.weights_identity("cat->rocket") is None and cache.weights_identity("cat") is None


def run_plain(suite: Path, *args: str) -> list[records.RunRecord]:
    return run_suite(list(args) or ["03", "04"], "tiny", suite / "out").records


def test_an_unchanged_notebook_is_skipped_and_the_summary_says_since_when(suite, capsys):
    first = run_plain(suite)
    assert [r.status for r in first] == ["ok", "ok"]
    key = json.loads(cache.key_path(suite / "out", "04_claims").read_text())
    assert key["run_id"] == first[1].run_id and key["inputs"]["parameters"] == {}
    assert key["environment"]["device"] in ("cpu", "mps") or key["environment"]["device"].startswith("cuda:")
    capsys.readouterr()
    assert runner.main(["--profile", "tiny", "--output-dir", str(suite / "out"), "03", "04"]) == records.EXIT_OK
    printed = capsys.readouterr().out
    assert f"[2/2] 04_claims: skipped: unchanged since {first[1].finished}" in printed
    assert f"04_claims                            skipped          0.0s       0  unchanged since {first[1].finished}" \
        in printed  # the summary
    assert "2 skipped" in printed
    assert json.loads(cache.key_path(suite / "out", "04_claims").read_text()) == key  # nothing ran again
    index = {e["notebook"]: e for e in json.loads((suite / "out" / "index.json").read_text())["notebooks"]}
    assert index["04_claims"]["status"] == "ok" and index["04_claims"]["run_id"] == first[1].run_id
    assert "04_claims.key" not in index  # a cache key is no notebook
    forced = run_suite(["04"], "tiny", suite / "out", force=True).records
    assert forced[0].status == "ok" and forced[0].run_id != first[1].run_id


def _edit_code(suite):
    path = suite / "notebooks" / "04_claims.ipynb"
    nb = json.loads(path.read_text())
    nb["cells"][1]["source"] += "\nx = 1"
    path.write_text(json.dumps(nb))


def _edit_json(path_of, change):
    def edit(suite):
        path = path_of(suite)
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))
    return edit


def _lose_table(suite):
    (suite / "out" / "04_claims" / "values.csv").unlink()


# (case, what changes between the runs, the reason the second run gives)
RERUNS = [
    ("code", _edit_code, "its code changed"),
    ("parameters", lambda suite: (suite / "notebooks" / "profiles" / "tiny.yaml").write_text(
        "defaults:\n  SEED: 2\n"), "its parameters (SEED) changed"),
    ("failed last run", _edit_json(lambda s: s / "out" / ".runs" / "04_claims.json",
                                   lambda d: d.update(status="failed")), "its last run is failed"),
    ("interrupted last run", _edit_json(lambda s: s / "out" / ".runs" / "04_claims.json",
                                        lambda d: d.update(status="interrupted")), "its last run is interrupted"),
    ("corrupt key", lambda suite: cache.key_path(suite / "out", "04_claims").write_text("{"),
     "its cache record 04_claims.key.json cannot be read"),
    ("stale key", _edit_json(lambda s: cache.key_path(s / "out", "04_claims"), lambda d: d.update(run_id="old")),
     "its last run is not the one 04_claims.key.json describes"),
    ("lost output", _lose_table, "its published outputs lack values.csv"),
    ("library source", lambda suite: None, "its environment changed: library_source"),
    ("ran without weights", _edit_json(lambda s: cache.key_path(s / "out", "04_claims"),
                                       lambda d: d["environment"]["weights"].update(a="unavailable: not cached")),
     "it ran without the weights of a"),
]


@pytest.mark.parametrize("case, change, reason", RERUNS, ids=[c[0] for c in RERUNS])
def test_a_changed_stale_or_corrupt_record_runs_again(suite, monkeypatch, capsys, case, change, reason):
    first = run_plain(suite, "04")
    change(suite)
    if case == "library source":
        monkeypatch.setattr(cache, "library_digest", lambda: "sha256:edited")
    capsys.readouterr()
    second = run_plain(suite, "04")
    assert second[0].status == "ok" and second[0].run_id != first[0].run_id
    assert f"04_claims: runs again, {reason}" in capsys.readouterr().out
    assert json.loads(cache.key_path(suite / "out", "04_claims").read_text())["run_id"] == second[0].run_id


def test_a_failed_run_leaves_no_key(suite):
    assert [r.status for r in run_plain(suite, "02")] == ["failed"]
    assert not cache.key_path(suite / "out", "02_bad").exists()
    assert [r.status for r in run_plain(suite, "02")] == ["failed"]  # and so it runs again


# ---- sweeps in-process and on a local cluster -------------------------------------------------------------------

@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """One suite swept 2 x 2 (SEED x MODEL) in-process into inproc/ and on a local cluster of 2 workers into dask/;
    the cluster stays up for the other tests of this module."""
    from vitequiv.run.cluster import connect

    root = make_sweep_suite(tmp_path_factory.mktemp("swept"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VITEQUIV_ROOT", str(root))
        sweep = sweep_of(SEED=[0, 1], MODEL=["a", "b"])
        inproc = run_sweep(sweep, root / "inproc")
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed), connect(2, None) as executor:
            on_cluster = run_sweep(sweep, root / "dask", executor=lambda: contextlib.nullcontext(executor))
            yield root, inproc, on_cluster, executor, printed.getvalue()


def test_a_cluster_sweep_makes_the_same_table_as_an_in_process_one(swept):
    root, inproc, on_cluster, _, printed = swept
    assert inproc.exit_status == on_cluster.exit_status == records.EXIT_OK
    local, dask = read_table(root / "inproc"), read_table(root / "dask")
    pd.testing.assert_frame_equal(local.drop(columns=TIME_COLUMNS), dask.drop(columns=TIME_COLUMNS))
    assert list(local["combination"]) == ["SEED=0,MODEL=a", "SEED=0,MODEL=b", "SEED=1,MODEL=a", "SEED=1,MODEL=b"]
    assert list(local["status"]) == ["ok"] * 4 and list(local["cached"]) == ["no"] * 4
    assert list(local["verdict: seed is even"]) == ["holds", "holds", "not", "not"]
    assert list(local["ours: model is a"]) == ["MODEL=a", "MODEL=b", "MODEL=a", "MODEL=b"]
    assert (dask["seconds"] > 0).all()
    assert "local Dask cluster of 2 worker processes, 1 thread each" in printed
    assert "Dask dashboard: http" in printed or "Dask dashboard: none (the scheduler has no bokeh" in printed
    folder = root / "dask" / "sweeps" / "tiny-SEED+MODEL" / "SEED=1,MODEL=b" / "04_claims"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["run"]["status"] == "ok" and manifest["run"]["combination"] == "SEED=1,MODEL=b"
    assert (folder / "04_claims.ipynb").is_file() and (folder / "values.csv").read_text().startswith("pair,value")


def test_the_sweep_report_spreads_the_numbers_and_the_index_links_it(swept):
    root = swept[0]
    folder = root / "dask" / "sweeps" / "tiny-SEED+MODEL"
    spread = pd.read_csv(folder / "spread.csv").set_index(["row", "column"])
    assert spread.loc[("p1", "value"), ["n", "min", "median", "max"]].tolist() == [4, 0, 1.5, 3]  # 0, 1, 2, 3
    assert spread.loc[("p2", "steps"), ["min", "max"]].tolist() == [10, 10]
    markdown = (folder / "table.md").read_text()
    assert "**C1** seed is even; **C2** model is a" in markdown and "holds 2, not 2" in markdown
    assert "| p1     | 1.5 [0, 3]" in markdown and "[04_claims](SEED%3D0%2CMODEL%3Da/04_claims/)" in markdown
    assert (folder / "verdicts.png").stat().st_size > 10_000 and (folder / "verdicts.pdf").is_file()
    readme = (root / "dask" / "README.md").read_text()
    assert "## Sweeps" in readme and "[tiny-SEED+MODEL](sweeps/tiny-SEED+MODEL/table.md)" in readme
    entry = json.loads((root / "dask" / "index.json").read_text())["sweeps"][0]
    assert entry["counts"] == {"ok": 4, "cached": 0} and entry["swept"] == {"SEED": [0, 1], "MODEL": ["a", "b"]}
    assert entry["files"]["png"] == "sweeps/tiny-SEED+MODEL/verdicts.png"


def test_a_second_invocation_computes_nothing_twice(swept, monkeypatch, capsys):
    root, _, on_cluster, executor, _ = swept
    monkeypatch.setenv("VITEQUIV_ROOT", str(root))
    out = root / "dask"
    keys = sorted(out.rglob("*.key.json"))
    before, first_table = [p.read_text() for p in keys], read_table(out)
    again = run_sweep(sweep_of(SEED=[0, 1], MODEL=["a", "b"]), out)  # in-process, on the cluster's results
    assert [r.status for r in again.records] == ["skipped"] * 4 and again.exit_status == records.EXIT_OK
    assert [p.read_text() for p in keys] == before
    table = read_table(out)
    assert list(table["cached"]) == ["yes"] * 4
    pd.testing.assert_frame_equal(table.drop(columns=["cached"]), first_table.drop(columns=["cached"]))
    wider = run_sweep(sweep_of(SEED=[0, 1, 2], MODEL=["a", "b"]), out,
                             executor=lambda: contextlib.nullcontext(executor))  # the same cluster again
    assert [r.status for r in wider.records] == ["skipped"] * 4 + ["ok"] * 2
    assert list(read_table(out)["cached"]) == ["yes"] * 4 + ["no"] * 2


def test_a_plain_run_on_the_cluster_publishes_like_an_in_process_one(swept, monkeypatch):
    root, _, _, executor, _ = swept
    monkeypatch.setenv("VITEQUIV_ROOT", str(root))
    result = run_suite(["02", "04"], "tiny", root / "plain", executor=lambda: contextlib.nullcontext(executor))
    assert [r.status for r in result.records] == ["failed", "ok"] and "boom" in result.records[0].error
    index = {e["notebook"]: e for e in json.loads((root / "plain" / "index.json").read_text())["notebooks"]}
    assert index["04_claims"]["status"] == "ok" and index["04_claims"]["outputs_from_last_run"]
    assert index["02_bad"]["status"] == "failed" and (root / "plain" / "02_bad" / "02_bad.ipynb").is_file()
    assert [e["claim"] for e in index["04_claims"]["claims"]] == ["seed is even", "model is a"]
    assert not (root / "plain" / ".staging").exists() or not any((root / "plain" / ".staging").iterdir())


def test_a_killed_worker_is_retried_once_and_the_sweep_completes(swept, monkeypatch):
    root, _, _, executor, _ = swept
    monkeypatch.setenv("VITEQUIV_ROOT", str(root))
    sweep = sweeps.Sweep({"SEED": [0, 1, 2]}, profile="kill", selection=["05"])
    result = run_sweep(sweep, root / "killed", executor=lambda: contextlib.nullcontext(executor))
    assert [r.status for r in result.records] == ["ok", "ok", "failed"]
    assert (root / "marker").exists()  # SEED=1 killed its first worker: the ok row is the retry
    assert "its worker died on each of 2 tries (Dask KilledWorker" in result.records[2].error
    table = read_table(root / "killed", "kill-SEED")
    assert list(table["status"]) == ["ok", "ok", "failed"] and "KilledWorker" in table["error"][2]
    assert result.exit_status == records.EXIT_FAILED


def test_an_interrupted_sweep_resumes_where_it_stopped(suite):
    (suite / "block").write_text("SEED=1 waits while this file exists")
    pid_file = suite / "notebooks" / "kernel.pid"
    run = start_runner(suite, "--profile", "block", "--sweep", "SEED=0,1,2", "06")
    wait_for(pid_file.exists, 120, "SEED=1 to start blocking")
    run.send_signal(signal.SIGINT)
    stdout, stderr = run.communicate(timeout=60)
    assert run.returncode == records.EXIT_INTERRUPTED, stdout + stderr
    table = read_table(suite / "out", "block-SEED")
    assert list(table["status"]) == ["ok", "interrupted", "not run"]
    (suite / "block").unlink()
    resumed = run_sweep(sweeps.Sweep({"SEED": [0, 1, 2]}, profile="block", selection=["06"]), suite / "out")
    assert [r.status for r in resumed.records] == ["skipped", "ok", "ok"]
    assert list(read_table(suite / "out", "block-SEED")["status"]) == ["ok"] * 3


def test_the_sweep_command_line_end_to_end(suite, capsys):
    argv = ["--profile", "tiny", "--sweep", "SEED=0,1", "--sweep-name", "two", "--output-dir", str(suite / "out"), "04"]
    assert runner.main(argv) == records.EXIT_OK
    printed = capsys.readouterr().out
    assert "[2/2] SEED=1 04_claims: ok" in printed and f"sweep table: {suite / 'out/sweeps/two/table.md'}" in printed
    assert runner.main(argv) == records.EXIT_OK
    assert "[1/2] SEED=0 04_claims: skipped: unchanged since" in capsys.readouterr().out
    assert (suite / "out" / "sweeps" / "two" / "SEED=0" / "04_claims" / "manifest.json").is_file()


# ---- the verdict stability table (issue 29) -----------------------------------------------------------------------

def _seed_row(root: Path, seed: int, claims: dict, status=records.RunStatus.OK, **others):
    """A finished 04_claims run of one combination: its manifest on disk, and its planned task and record."""
    values = {"SEED": seed, **others}
    folder_name = sweeps.combination_folder(values)
    folder = root / folder_name / "04_claims"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"notebook": "04_claims", "figures": {}, "tables": {},
                                                      "claims": claims}))
    planned = sweeps.Planned(Path("04_claims.ipynb"), values, folder_name, values, values)
    task = records.Task(Path("04_claims.ipynb"), values, root / folder_name, combination=folder_name)
    return planned, task, records.RunRecord("04_claims", status, 1.0, 0, combination=folder_name)


def test_the_verdict_stability_table_from_two_seeds(tmp_path):
    def record(verdict, n=12):
        return {"paper": "p", "ours": "o", "verdict": verdict, "n": n, "value": 0.5, "low": 0.2, "high": 0.8,
                "threshold": 0.5, "direction": ">="}

    root = tmp_path / "sweeps" / "seeds"
    rows = [_seed_row(root, 0, {"stable": record("holds"), "flips": record("holds"),
                                "inconclusive": record("inconclusive (n = 12)"), "once": record("not")}),
            _seed_row(root, 1, {"stable": record("holds"), "flips": record("not"),
                                "inconclusive": record("inconclusive (n = 11)", 11)})]
    report = sweep_report.make_row
    frame = sweep_report.stability([report(*row) for row in rows])
    assert list(frame.columns) == ["notebook", "claim", "SEED=0", "SEED=1", "agree"]
    assert frame.set_index("claim")["agree"].to_dict() == {"stable": "yes", "flips": "no", "inconclusive": "yes",
                                                           "once": "incomplete"}
    assert frame.set_index("claim").loc["once", "SEED=1"] == "missing"
    sweep = sweeps.Sweep({"SEED": [0, 1]}, profile="tiny", name="seeds")
    sweep_report.write_report(root, sweep, *zip(*rows), executor="in-process")
    markdown = (root / "stability.md").read_text()
    assert "**2 of 4** claims agree across SEED; 1 differ; 1 incomplete." in markdown
    assert "| 04_claims | flips | holds | not | **no** |" in markdown
    assert pd.read_csv(root / "stability.csv").equals(pd.read_csv(io.StringIO(frame.to_csv(index=False))))
    summary = json.loads((root / "sweep.json").read_text())
    assert summary["files"]["stability_markdown"] == "stability.md"
    assert summary["rows"][0]["claims"]["stable"]["n"] == 12
    table = (root / "table.md").read_text()
    assert "inconclusive 2" in table, "verdict counts count inconclusive ones whatever their n"
    assert (root / "verdicts.png").stat().st_size > 10_000
    readme = index.render_readme({"notebooks": [], "sweeps": index.collect_sweeps(tmp_path)})
    assert "[verdict stability](sweeps/seeds/stability.md)" in readme


def test_the_stability_table_groups_by_the_other_swept_values_and_needs_a_seed_axis(tmp_path):
    rows = [_seed_row(tmp_path, seed, {"c": {"verdict": verdict}}, MODEL=model)
            for seed, model, verdict in [(0, "a", "holds"), (1, "a", "holds"), (0, "b", "holds"), (1, "b", "not")]]
    rows = [sweep_report.make_row(*row) for row in rows]
    frame = sweep_report.stability(rows)
    assert frame[["MODEL", "agree"]].values.tolist() == [["a", "yes"], ["b", "no"]]
    assert sweep_report.stability(rows, axis="STEPS").empty
