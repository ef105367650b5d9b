"""Project hygiene: environment.yml holds the lock's pins; committed notebooks carry no outputs, the python3 kernel."""
import json
import re
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_has_the_locks_pins():
    """environment.yml is written by `make lock` from the lock (issue 30): the pins of requirements.lock.txt, which
    tests/test_lock.py checks against uv.lock and pyproject.toml, markers included, and the project itself."""
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    listed = {r.replace(" ", "") for r in pip if not r.startswith("-")}
    exported = {m[1].replace(" ", "") for line in (ROOT / "requirements.lock.txt").read_text().splitlines()
                if (m := re.match(r"([A-Za-z0-9][^\\]*?)\s*\\?$", line))}
    assert exported and listed == exported, "environment.yml and the lock drifted apart: run make lock"
    assert "-e ." in pip


def _committed_notebooks() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "*.ipynb"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / f for f in out.split()]


def test_committed_notebooks_have_no_outputs_and_the_python3_kernel():
    notebooks = _committed_notebooks()
    assert notebooks, "no committed notebooks found"
    for path in notebooks:
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert not cell["outputs"] and cell["execution_count"] is None, f"{path.name} carries outputs"
        assert nb["metadata"]["kernelspec"]["name"] == "python3", f"{path.name}: kernel is not python3"


def _suite_notebooks() -> list[Path]:
    return sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")) + [ROOT / "notebooks" / "explorer.ipynb"]


def test_suite_notebooks_start_with_a_typed_parameters_cell():
    """One annotated, commented UPPER_CASE literal per line, so that papermill --help-notebook shows every type."""
    import papermill

    for path in _suite_notebooks():
        code = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        assert "parameters" in code[0]["metadata"].get("tags", []), f"{path.name}: first code cell is not tagged"
        lines = "".join(code[0]["source"]).splitlines()
        for line in lines:
            assert re.fullmatch(r"[A-Z][A-Z0-9_]*: (?:[a-z]+|\"[a-z]+ or None\") = .+  # .+", line), \
                f"{path.name}: parameter line {line!r}"
        declared = papermill.inspect_notebook(str(path))
        assert len(declared) == len(lines) and "PROFILE" in declared, path.name
        for name, spec in declared.items():
            assert spec["inferred_type_name"] not in ("None", "", None), f"{path.name}: {name} has no type"


def test_suite_notebooks_state_their_measured_run_time_and_have_no_placeholders():
    """Writing placeholders (e.g. RUNTIME_DEFAULT) must be replaced by measured numbers before committing."""
    for path in _suite_notebooks()[:-1]:
        cells = json.loads(path.read_text())["cells"]
        markdown = ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"]
        leftover = re.findall(r"\b(?:RUNTIME_[A-Z]+|WHAT_THIS_[A-Z_]+|TODO|FIXME)\b", "\n".join(markdown))
        assert not leftover, f"{path.name}: unfilled placeholders {sorted(set(leftover))}"
        assert re.search(r"default profile[^.]*\d", markdown[0]), f"{path.name}: first cell lacks the default run time"
