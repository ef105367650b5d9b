"""Student copies of the exercises, made from the solution notebooks by nbgrader's own preprocessors.

The preprocessors run through nbconvert, so neither a course directory nor a gradebook database is needed:
``CheckCellMetadata`` validates the nbgrader cell metadata, ``ClearSolutions`` replaces each
``### BEGIN SOLUTION`` ... ``### END SOLUTION`` region with ``raise NotImplementedError()`` (and a free-text
answer with "YOUR ANSWER HERE"), ``ClearHiddenTests`` drops ``### BEGIN HIDDEN TESTS`` ... ``### END HIDDEN
TESTS``, ``LockCells`` makes the test cells read-only, ``ClearOutput`` removes outputs. The result is what
``nbgrader generate_assignment`` releases, minus its checksums. The same input always gives the same bytes.
"""
from __future__ import annotations

from pathlib import Path

from ..paths import notebooks_dir


def source_dir() -> Path:
    return notebooks_dir() / "assignments"


def student_dir(source: Path | None = None) -> Path:
    return (source or source_dir()) / "student"


def solution_notebooks(source: Path | None = None) -> list[Path]:
    """The solution notebooks, ``NN_*.ipynb`` in ``notebooks/assignments/``, in order."""
    return sorted((source or source_dir()).glob("[0-9][0-9]_*.ipynb"))


def student_copy(solution: Path) -> str:
    """The student version of one solution notebook, as notebook JSON text."""
    from nbconvert.exporters import NotebookExporter
    from nbgrader.preprocessors import CheckCellMetadata, ClearHiddenTests, ClearOutput, ClearSolutions, LockCells

    exporter = NotebookExporter()
    for preprocessor in (CheckCellMetadata(), ClearSolutions(enforce_metadata=True),
                         ClearHiddenTests(enforce_metadata=True), LockCells(), ClearOutput()):
        exporter.register_preprocessor(preprocessor, enabled=True)
    body, _ = exporter.from_filename(str(solution))
    return body


def generate(out: Path | None = None, source: Path | None = None) -> list[Path]:
    """Write the student copy of every solution notebook into ``out`` (default ``notebooks/assignments/student``)."""
    out = Path(out) if out is not None else student_dir(source)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for solution in solution_notebooks(source):
        target = out / solution.name
        target.write_text(student_copy(solution), encoding="utf-8")
        written.append(target)
    return written


def stale(source: Path | None = None) -> list[str]:
    """Names of the committed student copies that are missing or differ from a fresh generation."""
    folder = student_dir(source)
    return [s.name for s in solution_notebooks(source)
            if not (folder / s.name).exists() or (folder / s.name).read_text(encoding="utf-8") != student_copy(s)]
