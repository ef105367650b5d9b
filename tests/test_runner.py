"""The headless runner: profiles, parameter selection, failure handling and the figure index."""
import json

import nbformat
import pytest

from vitequiv import figures, runner


def _notebook(path, body: str, params: str = "X = 1  # a parameter") -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, path)


@pytest.fixture
def suite(tmp_path, monkeypatch):
    """A fake repository with two notebooks (one failing) and a profile."""
    (tmp_path / "notebooks" / "profiles").mkdir(parents=True)
    (tmp_path / "pyproject.toml").write_text("")
    monkeypatch.setenv("VITEQUIV_ROOT", str(tmp_path))
    (tmp_path / "notebooks" / "profiles" / "tiny.yaml").write_text(
        "defaults:\n  X: 2\n  UNUSED: 5\nnotebooks:\n  01_good:\n    X: 3\n")
    _notebook(tmp_path / "notebooks" / "01_good.ipynb",
              "import vitequiv as vq, matplotlib.pyplot as plt\n"
              "out = vq.figures.Output('01_good')\nfig, ax = plt.subplots(); ax.plot([X, X])\n"
              "out.figure(fig, 'line', 'a line at X')\nout.claim('X is three', 'none', f'X={X}', 'holds')")
    _notebook(tmp_path / "notebooks" / "02_bad.ipynb", "raise RuntimeError('boom')")
    return tmp_path


def test_parameters_are_filtered_to_what_a_notebook_declares(suite):
    profile = runner.load_profile("tiny")
    params = runner.parameters_for(suite / "notebooks" / "01_good.ipynb", profile, "tiny")
    assert params == {"X": 3}


def test_suite_keeps_going_past_a_failure_and_writes_the_index(suite, capsys):
    out = suite / "out"
    code = runner.main(["--profile", "tiny", "--output-dir", str(out)])
    assert code == 1
    printed = capsys.readouterr().out
    assert "01_good" in printed and "02_bad" in printed and "failed" in printed and "boom" in printed
    assert (out / "01_good" / "line.png").exists() and (out / "01_good" / "line.pdf").exists()
    assert (out / "01_good" / "01_good.ipynb").exists() and (out / "02_bad" / "02_bad.ipynb").exists()
    index = (out / "README.md").read_text()
    assert "line.png" in index and "a line at X" in index and "| X is three | none | X=3 | **holds** |" in index


def test_selection_and_unknown_profile(suite):
    assert [p.stem for p in runner.discover(["02"])] == ["02_bad"]
    with pytest.raises(SystemExit, match="no profile"):
        runner.load_profile("nope")


def test_output_writes_atomically(tmp_path, monkeypatch):
    out = figures.Output("nb", root=tmp_path)

    class Broken:
        def savefig(self, path, format):
            open(path, "w").write("half")
            raise OSError("disk full")

    with pytest.raises(OSError):
        out.figure(Broken(), "fig", "never written")
    assert [p.name for p in tmp_path.iterdir()] == []
    with pytest.raises(ValueError, match="verdict"):
        out.claim("c", "p", "o", "maybe")
    import pandas as pd
    out.table(pd.DataFrame({"a": [1.23456, 2.0]}), "tab", "a table")
    assert (tmp_path / "tab.csv").read_text().startswith("a\n1.23456")
    assert json.loads((tmp_path / "manifest.json").read_text())["tables"]["tab"]["caption"] == "a table"
