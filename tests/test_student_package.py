"""What students install: a wheel of the library alone (`pip wheel --no-deps .`), which the exercises' checks need,
without the notebooks or any solution text. Built offline from a copy of the sources, so the checkout stays clean."""
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
MARKER_LINE = re.compile(r"^\s*#+ (BEGIN|END) (SOLUTION|HIDDEN TESTS)\s*$", re.M)  # as nbgrader marks a region


def solution_blocks() -> list[str]:
    """The code between each pair of solution markers in the solution notebooks (at least a few lines each)."""
    blocks = []
    for path in sorted((ROOT / "notebooks" / "assignments").glob("[0-9][0-9]_*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            blocks += [b.strip() for b in re.findall(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", cell.source, re.S)]
    return blocks


def test_student_wheel_holds_the_library_and_no_notebooks_or_solutions(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "lib", source / "lib", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                          "--wheel-dir", str(tmp_path / "dist"), str(source)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("vitequiv-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        texts = {name: archive.read(name).decode("utf-8", "replace") for name in names}
    modules = {p.relative_to(ROOT / "lib").as_posix() for p in (ROOT / "lib" / "vitequiv").rglob("*.py")}
    assert modules <= set(names), f"missing from the wheel: {sorted(modules - set(names))}"
    assert "vitequiv/assignments/checks.py" in names  # the checks every exercise calls
    assert not [n for n in names if n.endswith(".ipynb") or n.startswith(("notebooks/", "tests/", "data/"))]
    assert not [n for n, text in texts.items() if MARKER_LINE.search(text)], "solution or hidden-test regions"
    blocks = solution_blocks()
    assert len(blocks) >= 8
    leaking = sorted(n for n, text in texts.items() for block in blocks if block in text)
    assert not leaking, f"solution code in {leaking}"
