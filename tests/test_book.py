"""The book's reading of a run and its pages, on a small hand-made run: statuses, stale records, escaping, files,
bad input. The book of a real smoke run, in a browser, is tested in test_browser.py."""
from __future__ import annotations

import datetime as dt
import io
import json
import os
from pathlib import Path

import nbformat
import pytest
from bs4 import BeautifulSoup
from PIL import Image

from vitequiv import claims
from vitequiv.book import main as book_main
from vitequiv.claims import Claim
from vitequiv.paths import notebooks_dir
from vitequiv.run import book, book_pages, book_run
from vitequiv.run.index import claim_view

START = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.timezone.utc)
CAPTION = "Embedding change ||f(x+tv)-f(x)|| over t, with $5 and *stars* and a_b"  # Markdown specials stay text


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), (30, 90, 160)).save(buffer, format="png")
    return buffer.getvalue()


def executed(folder: Path, name: str, status: str, outputs: list | None = None) -> None:
    """A notebook as papermill leaves it: a title, two code cells with their statuses, papermill's record."""
    folder.mkdir(parents=True, exist_ok=True)
    cells = [nbformat.v4.new_markdown_cell(f"# {name} title\n\nIntro text."),
             nbformat.v4.new_code_cell("x = 1", outputs=outputs or []),
             nbformat.v4.new_code_cell("y = 2")]
    cell_status = {"ok": ["completed", "completed"], "failed": ["completed", "failed"],
                   "incomplete": ["completed", "pending"]}[status]
    for cell, state in zip(cells[1:], cell_status, strict=True):
        cell.metadata["papermill"] = {"status": state}
    if status == "failed":
        cells[2].outputs = [nbformat.v4.new_output("error", ename="ValueError", evalue="bad | value", traceback=[])]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["papermill"] = {
        "exception": status == "failed", "start_time": START.replace(tzinfo=None).isoformat(),
        "end_time": (START + dt.timedelta(seconds=12)).replace(tzinfo=None).isoformat(), "duration": 12.0,
        "parameters": {"PROFILE": "smoke", "IMG_SIZE": 112},
    }
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    nbformat.write(nb, folder / f"{name}.ipynb")


def manifest(folder: Path, name: str, figures=(), tables=(), claims=(), stale: bool = False) -> None:
    """A manifest as vq.Output writes it, with the files it names; ``stale`` dates it before the run."""
    entry = {"notebook": name, "figures": {}, "tables": {}, "claims": {}}
    for fig in figures:
        (folder / f"{fig}.png").write_bytes(png())
        (folder / f"{fig}.pdf").write_bytes(b"%PDF-1.4 test\n")
        entry["figures"][fig] = {"files": [f"{fig}.png", f"{fig}.pdf"], "caption": CAPTION}
    for table in tables:
        (folder / f"{table}.csv").write_text("component,version\nvitequiv,9.9.9\ntorch,1.2.3\n")
        (folder / f"{table}.md").write_text("caption\n\n| a |\n|---|\n| 1 |\n")
        entry["tables"][table] = {"files": [f"{table}.csv", f"{table}.md"], "caption": f"Table {table}."}
    for claim, verdict in claims:
        entry["claims"][claim] = {"paper": "the paper | says", "ours": "we measure $3", "verdict": verdict}
    path = folder / "manifest.json"
    path.write_text(json.dumps(entry))
    written = (START - dt.timedelta(days=1) if stale else START + dt.timedelta(seconds=5)).timestamp()
    os.utime(path, (written, written))


WIDGET = nbformat.v4.new_output("display_data", data={
    "text/plain": "VBox(children=(...))",
    "application/vnd.jupyter.widget-view+json": {"model_id": "abc", "version_major": 2, "version_minor": 0}})
IMAGE = nbformat.v4.new_output("display_data", data={"image/png": __import__("base64").b64encode(png()).decode()})


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run: 00 ok (versions), 01 ok (figure, table, claims), 02 failed after a claim, 03 failed before writing its
    manifest (an old one is left), 04 incomplete, explorer ok with a widget, the rest not run; plus folders that
    are not notebooks."""
    root = tmp_path_factory.mktemp("figures")
    executed(root / "00_setup", "00_setup", "ok")
    manifest(root / "00_setup", "00_setup", tables=["versions"])
    executed(root / "01_embedding_matching", "01_embedding_matching", "ok", [IMAGE])
    manifest(root / "01_embedding_matching", "01_embedding_matching", figures=["linearity"], tables=["pairs"],
             claims=[("claim one | with a bar", "holds"), ("claim two", "partly")])
    executed(root / "02_equivalence_classes", "02_equivalence_classes", "failed")
    manifest(root / "02_equivalence_classes", "02_equivalence_classes", claims=[("claim three", "not")])
    executed(root / "03_local_normal_space", "03_local_normal_space", "failed")
    manifest(root / "03_local_normal_space", "03_local_normal_space", figures=["old"],
             claims=[("stale claim", "holds")], stale=True)
    executed(root / "04_piecewise_linear_subspaces", "04_piecewise_linear_subspaces", "incomplete")
    executed(root / "explorer", "explorer", "ok", [WIDGET])
    for other in ("_scratch", "sweeps", ".staging"):
        executed(root / other / "01_embedding_matching", "01_embedding_matching", "ok")
        manifest(root / other / "01_embedding_matching", "01_embedding_matching", claims=[(f"{other} claim", "holds")])
    (root / "sweeps" / "seeds").mkdir()
    (root / "sweeps" / "seeds" / "stability.csv").write_text(  # a sweep over SEED: the verdict stability page
        "notebook,claim,SEED=0,SEED=1,agree\n01_embedding_matching,claim one | with a bar,holds,not,no\n")
    return root


def test_read_run_from_manifests(run_dir):
    runs = {r.name: r for r in book_run.read_run(run_dir)}
    assert list(runs) == book_run.suite_notebooks()
    assert {n: r.status for n, r in runs.items() if r.status != "not run"} == {
        "00_setup": "ok", "01_embedding_matching": "ok", "02_equivalence_classes": "failed",
        "03_local_normal_space": "failed", "04_piecewise_linear_subspaces": "incomplete", "explorer": "ok"}
    assert runs["00_setup"].versions == {"vitequiv": "9.9.9", "torch": "1.2.3"}
    first = runs["01_embedding_matching"]
    assert first.profile == "smoke" and first.seconds == 12.0 and first.parameters["IMG_SIZE"] == 112
    assert [c.claim for c in first.claims] == ["claim one | with a bar", "claim two"]
    assert [f.name for f in first.figures] == ["linearity"] and first.figures[0].caption == CAPTION
    assert runs["02_equivalence_classes"].error == "ValueError: bad | value"
    assert [c.claim for c in runs["02_equivalence_classes"].claims] == ["claim three"]
    stale = runs["03_local_normal_space"]
    assert stale.status == "failed" and not stale.claims and not stale.figures, "a manifest older than the run"
    assert runs["05_lipschitz"].executed is None


def index_entry(name: str, status: str, **changes) -> dict:
    """One notebook of figures/index.json as the runner writes it (schema 1, see vitequiv.figures)."""
    entry = {
        "notebook": name, "status": status, "run_id": "r1", "profile": "default",
        "started": "2026-12-01T10:00:00+00:00", "finished": "2026-12-01T10:00:04+00:00", "seconds": 4.5,
        "error": None, "vitequiv_version": "0.1.0",
        "parameters": {"STEPS": 3}, "folder": name, "published": True, "outputs_from_last_run": True,
        "library_versions": {"torch": "2.14.1"}, "notebook_file": f"{name}.ipynb", "manifest_file": "manifest.json",
        "figures": [{"name": "f", "caption": "cap", "files": ["f.png", "f.pdf"]}], "tables": [],
        "claims": [{"claim": "c", "paper": "p", "ours": "o", "verdict": "holds"}], "problems": []}
    return entry | changes


def test_read_run_prefers_index_json(run_dir, tmp_path):
    figures = tmp_path / "figures"
    names = ("01_embedding_matching", "02_equivalence_classes", "03_local_normal_space", "05_lipschitz")
    for name in names:
        (figures / name).mkdir(parents=True)
        source = run_dir / "01_embedding_matching" / "01_embedding_matching.ipynb"
        (figures / name / f"{name}.ipynb").write_bytes(source.read_bytes())
    entries = [index_entry(names[0], "failed", error="ValueError: x"),
               index_entry(names[1], "interrupted", outputs_from_last_run=False),  # the folder holds an older run
               index_entry(names[2], "ad hoc", outputs_run=None, outputs_profile="interactive")]
    (figures / "index.json").write_text(json.dumps({"schema": 1, "notebooks": entries}))
    runs = {r.name: r for r in book_run.read_run(figures)}
    first = runs[names[0]]
    assert (first.status, first.profile, first.seconds, first.error) == ("failed", "default", 4.5, "ValueError: x")
    assert first.versions == {"vitequiv": "0.1.0", "torch": "2.14.1"} and first.parameters == {"STEPS": 3}
    assert [c.claim for c in first.claims] == ["c"] and first.figures[0].files == ["f.png", "f.pdf"]
    assert first.executed == figures / names[0] / f"{names[0]}.ipynb"
    for name, status in ((names[1], "interrupted"), (names[2], "ad hoc"), (names[3], "not run")):
        run = runs[name]
        assert run.status == status and run.executed is None and not run.claims and not run.figures, (
            f"{name}: outputs in its folder are not from its last run; they must not be shown")
    assert "earlier run" in runs[names[1]].note and "outside the runner" in runs[names[2]].note
    page = book_pages.no_output_page(runs[names[1]])
    assert "was **interrupted** in its last run" in page and "shows no output rather than a stale one" in page

    entries[0]["status"] = "done"
    (figures / "index.json").write_text(json.dumps({"schema": 1, "notebooks": entries}))
    with pytest.raises(book_run.BookError, match="'done'; expected one of ok"):
        book_run.read_run(figures)
    (figures / "index.json").write_text("{not json")
    with pytest.raises(book_run.BookError, match="index.json: unreadable"):
        book_run.read_run(figures)


@pytest.fixture(scope="module")
def site(run_dir, tmp_path_factory) -> Path:
    """The book of ``run_dir``, built twice into the same folder: the second build replaces the first."""
    out = tmp_path_factory.mktemp("site") / "book"
    book.build(run_dir, out)
    (out / "leftover.txt").write_text("from the first build")
    assert book.build(run_dir, out) == out.resolve()
    assert not (out / "leftover.txt").exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["book"], "a build folder was left behind"
    return out


def page(site: Path, name: str) -> BeautifulSoup:
    return BeautifulSoup((site / name).read_text(), "html.parser")


def text_of(site: Path, name: str) -> str:
    """A page's text with white space normalized."""
    return " ".join(page(site, name).get_text(" ").split())


def test_front_page(site):
    front, text = page(site, "index.html"), text_of(site, "index.html")
    assert "arXiv 2401.15568" in text and "Salman" in text and "Profile: smoke" in text
    assert "vitequiv 9.9.9" in text, "the run's library versions (00_setup's table)"
    summary = next(t for t in front.find_all("table") if "verdict" in t.get_text())
    rows = [[td.get_text(" ", strip=True) for td in tr.find_all("td")] for tr in summary.tbody.find_all("tr")]
    assert [(r[0], r[6], r[7]) for r in rows] == [("claim one | with a bar", "holds", "01_embedding_matching"),
                                                  ("claim two", "partly", "01_embedding_matching"),
                                                  ("claim three", "not", "02_equivalence_classes")]
    assert all(r[3:6] == ["-", "-", "-"] for r in rows), "claims recorded before issue 29: no n, interval, threshold"
    assert rows[0][1] == "the paper | says" and rows[0][2] == "we measure $3"
    links = [a["href"] for a in summary.find_all("a")]
    assert links[0] == "01_embedding_matching.html" and all((site / link).exists() for link in links)


def test_the_verdict_stability_page(site):
    assert "sweeps.html" in [a["href"] for a in page(site, "index.html").find_all("a")]
    table = page(site, "sweeps.html").find("table")
    rows = [[td.get_text(" ", strip=True) for td in tr.find_all("td")] for tr in table.tbody.find_all("tr")]
    assert rows == [["01_embedding_matching", "claim one | with a bar", "holds", "not", "no"]]
    assert "0 of 1 claims agree across seeds" in text_of(site, "sweeps.html")


def test_notebook_pages_say_how_they_ran(site):
    ok = text_of(site, "01_embedding_matching.html")
    assert "Executed by make figures under profile smoke" in ok and "IMG_SIZE = 112" in ok and CAPTION in ok
    failed = text_of(site, "02_equivalence_classes.html")
    assert "This notebook failed in this run" in failed and "ValueError: bad | value" in failed
    assert "did not finish in this run" in text_of(site, "04_piecewise_linear_subspaces.html")
    assert "was not run in the last make figures run" in text_of(site, "05_lipschitz.html")
    assert not page(site, "05_lipschitz.html").select(".cell_output"), "a notebook that did not run shows no output"
    stale = text_of(site, "03_local_normal_space.html")
    assert "old" not in stale.split() and "stale claim" not in stale


def test_widgets_become_a_note(site):
    explorer = (site / "explorer.html").read_text()
    assert "widget-view+json" not in explorer and "VBox(children" not in explorer
    assert "make lab" in explorer and "jsdelivr" not in explorer and "require.js" not in explorer


def test_figure_index_links_the_files(site):
    index = page(site, "figures.html")
    figure = index.find("figure")
    assert figure.img and CAPTION in " ".join(figure.get_text(" ").split())
    files = {Path(a["href"]).name: site / a["href"] for a in index.select("a.download")}
    assert {"linearity.png", "linearity.pdf", "pairs.csv", "pairs.md", "versions.csv"} <= set(files)
    assert all(path.exists() for path in files.values())
    assert (site / figure.img["src"]).read_bytes() == png()


def test_exercises_are_the_student_copies(site):
    pages = sorted(p.name for p in (site / "exercises").glob("*.html"))
    students = sorted(p.stem + ".html" for p in (notebooks_dir() / "assignments" / "student").glob("*.ipynb"))
    assert set(students) | {"index.html", "teachers_guide.html"} == set(pages)
    for name in students:
        text = (site / "exercises" / name).read_text()
        assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text
    assert "NotImplementedError" in (site / "exercises" / students[0]).read_text()


def test_bad_input_is_named_and_nothing_is_written(tmp_path, run_dir, capsys):
    with pytest.raises(book_run.BookError, match=r"--figures .*missing: not a folder"):
        book.build(tmp_path / "missing", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(book_run.BookError, match="no executed notebook in it"):
        book.build(tmp_path / "empty", tmp_path / "out")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(book_run.BookError, match=r"--out .*mine: exists, is not empty and is not a book"):
        book.build(run_dir, foreign)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    assert book_main(["--figures", str(tmp_path / "missing")]) == 2
    assert "error: --figures" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "mine"]


def test_missing_build_package_is_named(run_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(book.BUILD_PACKAGES, "no_such_sphinx_theme", "no-such-sphinx-theme")
    with pytest.raises(book_run.BookError, match="the book needs no-such-sphinx-theme, not installed"):
        book.build(run_dir, tmp_path / "out")
    assert not any(tmp_path.iterdir())


def test_failed_build_keeps_the_previous_book(site, run_dir, monkeypatch):
    before = sorted(p.relative_to(site) for p in site.rglob("*"))
    monkeypatch.setattr(book_pages, "SPHINX_CONF", "raise RuntimeError('broken configuration')\n")
    with pytest.raises(RuntimeError, match="Sphinx failed"):
        book.build(run_dir, site)
    assert sorted(p.relative_to(site) for p in site.rglob("*")) == before
    assert sorted(p.name for p in site.parent.iterdir()) == ["book"]


def test_markdown_escaping():
    assert book_pages.md("a | b $c$ *d* [e](f)\n  g") == r"a \| b \$c\$ \*d\* \[e\]\(f\) g"


def test_the_summary_shows_each_claims_n_interval_and_threshold(tmp_path):
    """The front page's claims table from index entries (no notebook run, no Sphinx): a claim record of issue 29
    with its n, interval and threshold, and one from before claims carried evidence, with n "-"."""
    made = Claim("Most pairs match", "paper", "11 of 12", evidence=claims.proportion([True] * 11 + [False]),
                 threshold=0.95)
    (tmp_path / "01_embedding_matching.ipynb").write_text("{}")
    entry = index_entry("01_embedding_matching", "ok", claims=[claim_view(made.statement, made.to_record()),
                                                               {"claim": "old", "paper": "p", "ours": "o",
                                                                "verdict": "not"}])
    run = book_run.from_index(entry, "01_embedding_matching", tmp_path)
    assert [c.n for c in run.claims] == [12, None] and run.claims[0].threshold == 0.95
    lines = book_pages.claims_lines([run])
    assert lines[0] == ("| statement | paper's evidence | our measurement | n | estimate [95 % interval] | threshold | "
                        "verdict | notebook |")
    assert lines[2] == (r"| Most pairs match | paper | 11 of 12 | 12 | 0.917 \[0.615, 0.998\] | \>= 0.95 | "
                        r"**inconclusive \(n = 12\)** | [01\_embedding\_matching](01_embedding_matching.ipynb) |")
    assert lines[3].startswith("| old | p | o | - | - | - | **not** |")
    page = book_pages.summary_page([run])
    assert "inconclusive (n = ...)" in page and "sweeps.md" not in page


def test_the_book_shows_the_verdict_stability_of_every_seed_sweep(tmp_path):
    figures = tmp_path / "figures"
    assert book_pages.stability_tables(figures) == []
    folder = figures / "sweeps" / "seeds"
    folder.mkdir(parents=True)
    (folder / "stability.csv").write_text("notebook,claim,SEED=0,SEED=1,agree\n"
                                          "01_embedding_matching,a claim,holds,holds,yes\n"
                                          "01_embedding_matching,b claim,holds,inconclusive (n = 6),no\n")
    (figures / "sweeps" / "other").mkdir()  # a sweep without a stability table: no section
    tables = book_pages.stability_tables(figures)
    assert [name for name, _ in tables] == ["seeds"]
    page = book_pages.sweeps_page(tables)
    assert "## Sweep seeds" in page and "**1 of 2** claims agree across seeds" in page
    assert r"| 01\_embedding\_matching | b claim | holds | inconclusive \(n = 6\) | **no** |" in page
    assert "[verdict stability across seeds](sweeps.md)" in book_pages.summary_page([], sweeps=True)
