"""Every notebook runs headlessly, top to bottom, under the smoke profile, through the same runner as `make figures`."""
import pytest

from vitequiv import runner


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("figures")
    return out, {r.notebook: r for r in runner.run_suite([], "smoke", out)}


@pytest.mark.notebooks
@pytest.mark.parametrize("notebook", [nb.stem for nb in runner.discover([])])
def test_notebook_runs_under_smoke_profile(smoke_run, notebook):
    out, records = smoke_run
    record = records[notebook]
    assert record.status == "ok", f"{notebook} failed: {record.error}; see {out / notebook / (notebook + '.ipynb')}"
    assert (out / notebook / f"{notebook}.ipynb").exists()
    if notebook[:2].isdigit():
        assert record.figures >= 1, f"{notebook} wrote no figure"


@pytest.mark.notebooks
def test_index_lists_every_notebook(smoke_run):
    out, records = smoke_run
    index = (out / "README.md").read_text()
    assert all(f"## {name}" in index for name, r in records.items() if (out / name / "manifest.json").exists())
