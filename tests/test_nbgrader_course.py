"""The exercises in a real nbgrader course, as a teacher runs them: the solution notebooks in source/, `nbgrader
generate_assignment`, submissions under submitted/<student>/, `nbgrader autograde`, `nbgrader export`, and
`nbgrader validate` of the solutions. nbgrader runs as a subprocess with the venv's bin/ on PATH (for alembic)."""
import csv
import datetime
import os
import re
import resource
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nbformat
import pytest
from nbgrader.api import Gradebook

from vitequiv import assignments

pytestmark = pytest.mark.notebooks  # runs the three exercises four times, about 45 s of CPU each time

ASSIGNMENT = "vit_equivalence"
SOLUTIONS = assignments.solution_notebooks()
NAMES = [p.stem for p in SOLUTIONS]
GUIDE = (SOLUTIONS[0].parent / "README.md").read_text()
HIDDEN_ONLY = {"01_embedding_matching": "check_match_steps", "02_jacobian_spectrum": "known_linear_map",
               "03_directional_lipschitz": "toy_eps"}  # code that only hidden tests contain


def guide_block(start: str) -> str:
    """The ```python block of the teacher's guide that starts with ``start``: the course runs the guide's own
    configuration."""
    blocks = [textwrap.dedent(b) for b in re.findall(r"^ *```python\n(.*?)^ *```", GUIDE, re.S | re.M)]
    (block,) = [b for b in blocks if b.startswith(start)]
    return block


CONFIG = guide_block("c = get_config()")  # course id and nbgrader's per-cell timeout
FEEDBACK_CONFIG = guide_block("c.GenerateFeedback.preprocessors")  # feedback without the hidden tests

# One typical mistake per exercise: (solution cell, its correct line, the wrong one, the graded cells that must
# lose their points, the diagnosis each of them must print).
WRONG = {
    "01_embedding_matching": (
        "match-solution", "target = model.embed(x_tg)  # (1, D)", "target = f_tg  # the notebook's, not x_tg's",
        ["match-tests"], "gives the same result when its argument x_tg changes"),
    "02_jacobian_spectrum": (
        "jacobian-solution", "return J.reshape(J.shape[0], -1)", "return J.permute(0, 1, 3, 4, 2).reshape(len(J), -1)",
        ["jacobian-tests"], "columns in (H, W, C) order"),
    "03_directional_lipschitz": (
        "estimate-solution", "u = v / v.norm()", "u = v",
        ["estimate-tests", "sweep-tests"], "you did not normalize v"),
}


def start(course: Path, *args: str) -> subprocess.Popen:
    """Start ``nbgrader *args`` in the course folder, with the venv's bin/ on PATH and one thread per kernel
    (at 56 px more threads do not help, and the validation runs beside the autograding)."""
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                        "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(run: subprocess.Popen) -> str:
    """Wait for an nbgrader run; its stdout (fails the test on a non-zero exit)."""
    out, err = run.communicate(timeout=1800)
    assert run.returncode == 0, f"{' '.join(run.args[2:])} failed:\n{err[-3000:]}"
    return out


def nbgrader(course: Path, *args: str) -> str:
    return finish(start(course, *args))


def strip_markers(source: str) -> str:
    return "\n".join(line for line in source.splitlines() if "### BEGIN SOLUTION" not in line
                     and "### END SOLUTION" not in line)


def submit(course: Path, student: str, answers: str) -> None:
    """A submission made from the released notebooks: ``answers`` is "blank" (as released), "solution" (every
    solution cell filled in from the source) or "wrong" (the solution with the mistakes of ``WRONG``)."""
    folder = course / "submitted" / student / ASSIGNMENT
    folder.mkdir(parents=True)
    for name in NAMES:
        nb = nbformat.read(course / "release" / ASSIGNMENT / f"{name}.ipynb", as_version=4)
        source = {c.id: c.source for c in nbformat.read(course / "source" / ASSIGNMENT / f"{name}.ipynb", 4).cells}
        mistake_cell, right, wrong, *_ = WRONG[name]
        for cell in nb.cells:
            if answers != "blank" and cell.metadata.get("nbgrader", {}).get("solution"):
                cell.source = strip_markers(source[cell.id])
            if answers == "wrong" and cell.id == mistake_cell:
                assert right in cell.source, f"{name}: {right!r} is no longer in the solution"
                cell.source = cell.source.replace(right, wrong)
        nbformat.write(nb, folder / f"{name}.ipynb")
    (folder / "timestamp.txt").write_text("2026-12-01 12:00:00.000000 UTC")


def longest_cells(folder: Path) -> dict[str, tuple[float, str]]:
    """Per notebook, the longest cell's execution time and id, from nbclient's timing metadata."""
    longest = {}
    for path in sorted(folder.glob("*.ipynb")):
        times = []
        for cell in nbformat.read(path, as_version=4).cells:
            stamps = cell.metadata.get("execution", {})
            if "iopub.execute_input" in stamps and "shell.execute_reply" in stamps:
                began, ended = (datetime.datetime.fromisoformat(stamps[k].replace("Z", "+00:00"))
                                for k in ("iopub.execute_input", "shell.execute_reply"))
                times.append((round((ended - began).total_seconds(), 1), cell.id))
        longest[path.stem] = max(times, default=(0.0, ""))
    return longest


def cpu_seconds() -> float:
    """CPU time of the finished child processes (nbgrader and the kernels it ran): independent of other load."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """A course with three students (solution, blank, wrong), autograded and exported, with the autograde time of
    each; `nbgrader validate` of the solutions runs meanwhile."""
    root = tmp_path_factory.mktemp("course")
    (root / "nbgrader_config.py").write_text(CONFIG)
    (root / "source" / ASSIGNMENT).mkdir(parents=True)
    for path in SOLUTIONS:
        (root / "source" / ASSIGNMENT / path.name).write_bytes(path.read_bytes())
    nbgrader(root, "generate_assignment", ASSIGNMENT)
    validation = start(root, "validate", *[str(root / "source" / ASSIGNMENT / p.name) for p in SOLUTIONS])
    try:
        seconds = {}
        for student in ("solution", "blank", "wrong"):
            submit(root, student, student)
            wall, cpu = time.perf_counter(), cpu_seconds()
            nbgrader(root, "autograde", ASSIGNMENT, "--student", student)
            seconds[student] = {"wall": round(time.perf_counter() - wall, 1), "cpu": round(cpu_seconds() - cpu, 1)}
        print(f"\nautograde seconds per submission: {seconds}")
        print(f"longest cell (s): {longest_cells(root / 'autograded' / 'solution' / ASSIGNMENT)}")
        nbgrader(root, "export", "--to", str(root / "grades.csv"))
        yield {"root": root, "seconds": seconds, "validation": validation}
    finally:
        if validation.poll() is None:
            validation.kill()
            validation.communicate()


def autograded(course: dict, student: str, name: str) -> nbformat.NotebookNode:
    return nbformat.read(course["root"] / "autograded" / student / ASSIGNMENT / f"{name}.ipynb", as_version=4)


def cell_scores(course: dict, student: str) -> dict[tuple[str, str], tuple[float, float]]:
    """(notebook, grade cell) -> (automatic score, points) of every autograded test cell."""
    with Gradebook(f"sqlite:///{course['root'] / 'gradebook.db'}") as gradebook:
        submission = gradebook.find_submission(ASSIGNMENT, student)
        return {(nb.name, g.name): (g.auto_score, g.max_score) for nb in submission.notebooks for g in nb.grades
                if g.cell.cell_type == "code"}


def text(cell) -> str:
    """Everything a code cell printed or raised."""
    return "".join(o.get("text", "") + "\n".join(o.get("traceback", [])) for o in cell.outputs)


def automatic_points() -> float:
    cells = [c for p in SOLUTIONS for c in nbformat.read(p, as_version=4).cells]
    return sum(c.metadata["nbgrader"]["points"] for c in cells
               if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("grade"))


def test_release_copies_are_the_committed_student_copies(course):
    ignored = {"checksum", "cell_type"}  # what generate_assignment adds to each graded cell's nbgrader metadata
    for name in NAMES:
        released = nbformat.read(course["root"] / "release" / ASSIGNMENT / f"{name}.ipynb", as_version=4)
        committed = nbformat.read(assignments.student_dir() / f"{name}.ipynb", as_version=4)
        assert released.metadata == committed.metadata
        assert [(c.id, c.cell_type, c.source) for c in released.cells] == \
            [(c.id, c.cell_type, c.source) for c in committed.cells], name
        for ours, theirs in zip(committed.cells, released.cells):
            meta = dict(theirs.metadata)
            if "nbgrader" in meta:
                meta["nbgrader"] = {k: v for k, v in meta["nbgrader"].items() if k not in ignored}
            assert meta == dict(ours.metadata), f"{name}, cell {ours.id}"
        assert "HIDDEN TESTS" not in nbformat.writes(released) and "BEGIN SOLUTION" not in nbformat.writes(released)


def test_solutions_score_full_marks_with_clean_graded_cells(course):
    scores = cell_scores(course, "solution")
    assert scores and all(score == points for score, points in scores.values()), scores
    for name in NAMES:
        nb = autograded(course, "solution", name)
        graded = [c for c in nb.cells if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("grade")]
        for cell in graded:
            assert not [o for o in cell.outputs if o.get("name") == "stderr" or o.output_type == "error"], \
                f"{name}, {cell.metadata.nbgrader.grade_id}: {text(cell)[-1500:]}"
        assert any("### BEGIN HIDDEN TESTS" in c.source for c in graded), f"{name}: hidden tests not restored"
        printed = "".join(text(c) for c in graded)
        assert printed.count("OK: ") == sum(c.source.count("vq.assignments.check_") for c in graded), name


def test_export_has_full_and_zero_scores(course):
    with open(course["root"] / "grades.csv", newline="") as f:
        rows = {row["student_id"]: row for row in csv.DictReader(f)}
    auto = automatic_points()
    assert auto == 15
    assert float(rows["solution"]["raw_score"]) == auto  # the 3 points of the free-text answer are graded by hand
    assert float(rows["blank"]["raw_score"]) == 0
    assert float(rows["solution"]["max_score"]) == auto + 3


def test_blank_submission_scores_zero_and_stops_at_not_implemented(course):
    scores = cell_scores(course, "blank")
    assert scores and all(score == 0 for score, _ in scores.values()), scores
    for name in NAMES:
        errors = [o for c in autograded(course, "blank", name).cells if c.cell_type == "code" for o in c.outputs
                  if o.output_type == "error"]
        assert errors and errors[0].ename == "NotImplementedError", f"{name}: {errors[:1]}"


def test_each_typical_mistake_gets_its_diagnosis(course):
    scores = cell_scores(course, "wrong")
    for name, (_, _, _, failing, diagnosis) in WRONG.items():
        cells = {c.metadata.nbgrader.grade_id: c for c in autograded(course, "wrong", name).cells
                 if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("grade")}
        lost = [cell for cell in cells if scores[name, cell][0] < scores[name, cell][1]]
        assert lost == failing, f"{name}: lost points in {lost}"
        for cell in failing:
            assert diagnosis in text(cells[cell]), f"{name}, {cell}: {text(cells[cell])[-2000:]}"


def test_nbgrader_validate_passes_the_solutions(course):
    out = finish(course["validation"])
    assert out.count("Success! Your notebook passes all the tests.") == len(SOLUTIONS), out[-3000:]
    assert not re.search("VALIDATION FAILED|WILL NOT", out)


def feedback(course: dict, student: str) -> dict[str, str]:
    nbgrader(course["root"], "generate_feedback", ASSIGNMENT, "--student", student, "--force")
    return {name: (course["root"] / "feedback" / student / ASSIGNMENT / f"{name}.html").read_text()
            for name in NAMES}


def test_feedback_shows_hidden_tests_by_default_and_not_with_the_guides_configuration(course):
    shown = feedback(course, "wrong")
    assert all(HIDDEN_ONLY[name] in html for name, html in shown.items()), "nbgrader's default changed"
    config = course["root"] / "nbgrader_config.py"
    config.write_text(CONFIG + FEEDBACK_CONFIG)
    try:
        hidden = feedback(course, "wrong")
    finally:
        config.write_text(CONFIG)
    for name, html in hidden.items():
        assert HIDDEN_ONLY[name] not in html and "HIDDEN TESTS" not in html, name
        assert WRONG[name][-1] in html, f"{name}: the diagnosis is gone from the feedback"
