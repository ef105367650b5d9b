"""Every notebook runs headlessly, top to bottom, under the smoke profile, through the same runner as `make figures`."""
import json

import pytest

from vitequiv.run import profiles


@pytest.fixture(scope="module")
def smoke_run(smoke_suite):
    return smoke_suite.figures, smoke_suite.records, smoke_suite.result


@pytest.mark.notebooks
@pytest.mark.parametrize("notebook", [nb.stem for nb in profiles.discover([])])
def test_notebook_runs_under_smoke_profile(smoke_run, notebook):
    out, records, _ = smoke_run
    record = records[notebook]
    assert record.status == "ok", f"{notebook} failed: {record.error}; see {out / notebook / (notebook + '.ipynb')}"
    assert (out / notebook / f"{notebook}.ipynb").exists()
    manifest = json.loads((out / notebook / "manifest.json").read_text())
    assert manifest["profile"] == "smoke" and manifest["run"]["status"] == "ok"
    if notebook[:2].isdigit():
        assert record.figures >= 1, f"{notebook} wrote no figure"


@pytest.mark.notebooks
def test_index_lists_every_notebook(smoke_run):
    out, records, result = smoke_run
    assert result.index_error == ""
    readme = (out / "README.md").read_text()
    assert all(f"## {name} ({r.status})" in readme for name, r in records.items())
    index = {e["notebook"]: e for e in json.loads((out / "index.json").read_text())["notebooks"]}
    assert set(index) == set(records)
    assert all(index[name]["status"] == r.status and index[name]["profile"] == "smoke" for name, r in records.items())
    assert not (out / ".staging").exists(), "a staging folder was left behind"
