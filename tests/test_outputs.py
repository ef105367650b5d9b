"""Published results stay published: where vq.Output writes, what its manifest records, and its small helpers."""
import json
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import files_under, make_suite

import vitequiv
from vitequiv import Claim, claims, figures, paths
from vitequiv.run.index import CLAIM_EVIDENCE, collect_index, write_index

INSTALLED = Path(vitequiv.__file__).resolve().parents[2]  # the checkout the package is installed from
RUN_VARIABLES = ("VITEQUIV_ROOT", "VITEQUIV_FIGURES", "VITEQUIV_RUN", "VITEQUIV_PROFILE", "VITEQUIV_NOTEBOOK")


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A second checkout (pyproject.toml, notebooks/, lib/vitequiv/) with a published 01_good, the kernel's
    working directory in its notebooks/ folder, and no vitequiv variable set: an interactive session."""
    root = make_suite(tmp_path / "clone")
    published = root / "figures" / "01_good"
    published.mkdir(parents=True)
    (published / "line.png").write_text("published by the runner")
    manifest = {"notebook": "01_good", "figures": {}, "tables": {}, "claims": {}}
    (published / "manifest.json").write_text(json.dumps(manifest))
    for name in RUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(root / "notebooks")
    return root


def line_figure():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1])
    return fig


def test_an_interactive_output_writes_to_the_scratch_folder_of_its_own_checkout(checkout, capsys):
    published = checkout / "figures" / "01_good"
    before = {f: (published / f).read_bytes() for f in files_under(published)}
    out = figures.Output("01_good", {"PROFILE": "interactive", "X": 1})
    scratch = checkout / "figures" / "_scratch" / "01_good"
    assert out.dir == scratch and f"writes to {scratch}" in capsys.readouterr().out
    out.figure(line_figure(), "line", "a line")
    assert files_under(scratch) == ["line.pdf", "line.png", "manifest.json"]
    again = figures.Output("01_good", {})  # a new session starts a clean scratch folder
    assert again.profile == "interactive" and files_under(scratch) == ["manifest.json"]
    assert {f: (published / f).read_bytes() for f in files_under(published)} == before
    index = collect_index(checkout / "figures")
    assert [e["notebook"] for e in index["notebooks"]] == ["01_good"]  # _scratch is no notebook
    assert index["notebooks"][0]["status"] == "ad hoc"


def test_a_bare_papermill_run_writes_to_scratch_and_never_into_the_installed_checkout(checkout):
    import papermill

    start = time.time()
    executed = checkout / "executed.ipynb"
    papermill.execute_notebook(str(checkout / "notebooks" / "01_good.ipynb"), str(executed), parameters={"X": 3},
                               kernel_name="python3", cwd=str(checkout / "notebooks"), progress_bar=False)
    scratch = checkout / "figures" / "_scratch" / "01_good"
    assert files_under(scratch) == ["line.pdf", "line.png", "manifest.json", "values.csv", "values.md"]
    manifest = json.loads((scratch / "manifest.json").read_text())
    assert manifest["profile"] == "interactive" and manifest["run_id"] is None and manifest["parameters"]["X"] == 3
    assert (checkout / "figures" / "01_good" / "line.png").read_text() == "published by the runner"
    assert f"writes to {scratch}" in executed.read_text()
    installed = INSTALLED / "figures" / "_scratch" / "01_good"
    assert not any(p.stat().st_mtime >= start for p in installed.rglob("*")), "wrote into the installed checkout"


def test_an_explicit_folder_is_honoured(checkout, monkeypatch, capsys, tmp_path):
    (tmp_path / "mine").mkdir()  # VITEQUIV_FIGURES must name an existing folder
    monkeypatch.setenv("VITEQUIV_FIGURES", str(tmp_path / "mine"))
    out = figures.Output("01_good", {"PROFILE": "default"})
    assert out.dir == tmp_path / "mine" / "01_good" and "VITEQUIV_FIGURES is set" in capsys.readouterr().out
    assert figures.Output("01_good", root=tmp_path / "there").dir == tmp_path / "there"


# (working directory relative to the fake checkout, VITEQUIV_ROOT, expected root: "clone" or "installed")
ROOTS = [
    ("notebooks", None, "clone"),
    ("notebooks/profiles", None, "clone"),
    (".", None, "clone"),
    ("..", None, "installed"),  # outside any checkout
    ("../half", None, "installed"),  # pyproject.toml and notebooks/ without lib/vitequiv/ are no checkout
    ("notebooks", "override", "override"),
]


@pytest.mark.parametrize("cwd, override, expected", ROOTS, ids=[f"{c}-{o}" for c, o, _ in ROOTS])
def test_the_repository_root_is_the_working_directorys_checkout(checkout, monkeypatch, tmp_path, cwd, override,
                                                                expected):
    (tmp_path / "half" / "notebooks").mkdir(parents=True)
    (tmp_path / "half" / "pyproject.toml").write_text("")
    monkeypatch.chdir(checkout / cwd)
    if override:  # another checkout (one that is not, or does not exist, is an error: test_run_reliability.py)
        make_suite(tmp_path / override)
        monkeypatch.setenv("VITEQUIV_ROOT", str(tmp_path / override))
    want = {"clone": checkout, "installed": INSTALLED, "override": tmp_path / "override"}[expected]
    assert paths.repo_root() == want.resolve()


def test_the_manifest_records_profile_parameters_and_versions(tmp_path):
    namespace = {"PROFILE": "default", "N_PAIRS": 3, "PAIRS": ["cat->rocket"], "OPTIONS": {"a": None},
                 "lower": 1, "_HIDDEN": 2, "TENSOR": torch.zeros(2), "NAN": float("nan"), "In": ["..."]}
    out = figures.Output("01_x", namespace, root=tmp_path)
    namespace["PAIRS"].append("later")  # the record is a copy
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["parameters"] == {"PROFILE": "default", "N_PAIRS": 3, "PAIRS": ["cat->rocket"],
                                      "OPTIONS": {"a": None}}
    assert manifest["profile"] == "default" and manifest["vitequiv_version"] == vitequiv.__version__
    assert manifest["library_versions"] == vitequiv.library_versions()
    assert out.science_checks


@pytest.mark.parametrize("namespace, profile, checks", [
    ({"PROFILE": "smoke"}, "smoke", False), ({"PROFILE": "default"}, "default", True),
    ({"PROFILE": "full"}, "full", True), ({}, "interactive", True), (None, "interactive", True),
])
def test_science_checks_run_under_every_profile_but_smoke(tmp_path, namespace, profile, checks):
    out = figures.Output("nb", namespace, root=tmp_path)
    assert (out.profile, out.science_checks) == (profile, checks)


def test_the_runners_profile_reaches_an_output_without_a_namespace(tmp_path, monkeypatch):
    monkeypatch.setenv("VITEQUIV_PROFILE", "smoke")
    assert not figures.Output("nb", root=tmp_path).science_checks


def test_under_the_runner_an_output_must_carry_its_notebooks_name(tmp_path, monkeypatch):
    monkeypatch.setenv("VITEQUIV_RUN", "r1")
    monkeypatch.setenv("VITEQUIV_NOTEBOOK", "01_good")
    monkeypatch.setenv("VITEQUIV_FIGURES", str(tmp_path))
    with pytest.raises(ValueError, match=r"Output\('other'\) in notebook '01_good'.*Output\('01_good', globals\(\)\)"):
        figures.Output("other")
    assert files_under(tmp_path) == []
    out = figures.Output("01_good")
    assert out.dir == tmp_path / "01_good" and out.run_id == "r1"


@pytest.mark.parametrize("args, error, fragment", [
    (("../01_x",), ValueError, "notebook='../01_x'"),
    (("",), ValueError, "notebook=''"),
    (("nb", ["PROFILE"]), TypeError, "expected the notebook's globals(), got list"),
])
def test_bad_output_arguments(tmp_path, monkeypatch, args, error, fragment):
    monkeypatch.setenv("VITEQUIV_FIGURES", str(tmp_path))
    with pytest.raises(error) as caught:
        figures.Output(*args)
    assert fragment in str(caught.value) and files_under(tmp_path) == []


def test_the_old_verdict_helper_is_gone():
    assert not hasattr(vitequiv, "verdict") and not hasattr(figures, "verdict"), "a claim's verdict is vq.Claim's"


def test_claims_table(tmp_path):
    out = figures.Output("nb", root=tmp_path)
    columns = ["claim", "paper", "ours", "n", "value", "interval", "threshold", "verdict"]
    assert list(out.claims_table().columns) == columns and out.claims_table().empty
    first = Claim("first", "paper says", "we see", evidence=claims.exact(1.0, 4), threshold=0.5)
    assert out.claim(first) is first
    part = Claim("a part", "p", "o", evidence=claims.proportion([True] * 12), threshold=0.5)
    out.claim(Claim("second", "p", "o", parts=(part, Claim("b part", "p", "o", evidence=claims.exact(0, 3),
                                                                 threshold=0.5))))
    expected = pd.DataFrame({"claim": ["first", "second"], "paper": ["paper says", "p"], "ours": ["we see", "o"],
                             "n": [4, 3], "value": [1.0, "-"], "interval": ["exact", "-"],
                             "threshold": [">= 0.5", "-"], "verdict": ["holds", "partly"]})
    pd.testing.assert_frame_equal(out.claims_table(), expected)
    recorded = json.loads(out.manifest_path.read_text())["claims"]
    assert list(recorded) == ["first", "second"] and recorded["first"] == first.to_record()
    assert [p["statement"] for p in recorded["second"]["parts"]] == ["a part", "b part"]


def test_the_index_shows_each_claims_n_interval_and_threshold(tmp_path):
    """figures/README.md and index.json from two manifests (no notebook run): one with claim records (issue 29),
    one from before claims carried evidence, whose row reads n "-"."""
    new = figures.Output("01_new", root=tmp_path / "01_new")
    new.claim(Claim("Most pairs | match", "paper", "11/12", evidence=claims.proportion([True] * 11 + [False]),
                    threshold=0.5))
    new.claim(Claim("The probe stays put", "paper", "exact", evidence=claims.exact(0.0, 12), threshold=0.05,
                    direction="<="))
    old = tmp_path / "02_old"
    old.mkdir()
    (old / "manifest.json").write_text(json.dumps({"notebook": "02_old", "figures": {}, "tables": {},
                                                   "claims": {"old claim": {"paper": "p", "ours": "o",
                                                                            "verdict": "partly"}}}))
    readme = Path(write_index(tmp_path)).read_text()
    header = ("| statement | paper's evidence | our measurement | n | estimate [95 % interval] | threshold | verdict | "
              "notebook | run |")
    assert header in readme and "inconclusive (n = ...)" in readme
    assert ("| Most pairs \\| match | paper | 11/12 | 12 | 0.917 [0.615, 0.998] | >= 0.5 | **holds** | 01_new | "
            "ad hoc, profile interactive |") in readme
    assert "| The probe stays put | paper | exact | 12 | 0 (exact) | <= 0.05 | **holds** | 01_new |" in readme
    assert "| old claim | p | o | - | - | - | **partly** | 02_old |" in readme
    index = {e["notebook"]: e for e in json.loads((tmp_path / "index.json").read_text())["notebooks"]}
    first = index["01_new"]["claims"][0]
    assert first["claim"] == "Most pairs | match" and first["n"] == 12 and first["statistic"] == "proportion"
    assert (first["low"], first["high"]) == pytest.approx((0.6152, 0.9979), abs=1e-4)
    assert (first["value"], first["threshold"], first["direction"]) == (11 / 12, 0.5, ">=")
    assert index["02_old"]["claims"] == [{"claim": "old claim", "paper": "p", "ours": "o", "verdict": "partly",
                                          **dict.fromkeys(CLAIM_EVIDENCE), "parts": []}]
    assert not index["01_new"]["problems"] and not index["02_old"]["problems"]


def test_output_writes_atomically_and_clears_stale_parts(tmp_path):
    stale = tmp_path / ".fig.999999999-abcdefgh.png.part"  # left by a writer that was killed
    tmp_path.mkdir(exist_ok=True)
    stale.write_text("half")
    out = figures.Output("nb", root=tmp_path)
    assert not stale.exists()

    class Broken:
        def savefig(self, path, format):
            open(path, "w").write("half")
            raise OSError("disk full")

    with pytest.raises(OSError):
        out.figure(Broken(), "fig", "never written")
    assert files_under(tmp_path) == ["manifest.json"]
    assert json.loads((tmp_path / "manifest.json").read_text())["figures"] == {}
    with pytest.raises(TypeError, match="vq.Claim"):
        out.claim("c", "p", "o", "maybe")
    out.table(pd.DataFrame({"a": [1.23456, 2.0]}), "tab", "a table")
    assert (tmp_path / "tab.csv").read_text().startswith("a\n1.23456")
    assert json.loads((tmp_path / "manifest.json").read_text())["tables"]["tab"]["caption"] == "a table"
