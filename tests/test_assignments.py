"""The classroom exercises: solutions run and pass every check, student copies stop at the first task, the
committed copies are up to date, nbgrader accepts the sources, and the checks explain wrong answers."""
import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbgrader.nbgraderformat import MetadataValidator

from vitequiv import assignments
from vitequiv.assignments import checks
from vitequiv.assignments.generate import student_copy
from vitequiv.jacobians import cast_model, spectrum

SOLUTIONS = assignments.solution_notebooks()
NAMES = [p.stem for p in SOLUTIONS]


def execute(path: Path) -> nbformat.NotebookNode:
    """Run a notebook top to bottom in a python3 kernel, in its own folder; raises CellExecutionError."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, kernel_name="python3", timeout=1200, resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    return nb


# ------------------------------------------------------------------------------------------ notebooks


def test_three_exercises_with_student_copies():
    assert NAMES == ["01_embedding_matching", "02_jacobian_spectrum", "03_directional_lipschitz"]
    assert sorted(p.name for p in assignments.student_dir().glob("*.ipynb")) == [p.name for p in SOLUTIONS]


@pytest.mark.parametrize("name", NAMES)
def test_solution_layout_and_nbgrader_metadata(name):
    path = SOLUTIONS[NAMES.index(name)]
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    MetadataValidator().validate_nb(nb)  # what nbgrader itself checks
    assert nb.metadata.kernelspec.name == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "commit notebooks without outputs"
    assert code[0].metadata.get("tags") == ["parameters"]
    for line in code[0].source.splitlines():
        assignment = ast.parse(line).body[0]
        assert isinstance(assignment, ast.Assign) and assignment.targets[0].id.isupper(), line
        assert isinstance(ast.literal_eval(assignment.value), (int, float, str)) and "  # " in line, line
    grader = [c.metadata["nbgrader"] for c in nb.cells if "nbgrader" in c.metadata]
    assert all(m["schema_version"] == 3 for m in grader)
    solutions = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution")]
    assert all("### BEGIN SOLUTION" in c.source for c in solutions if c.cell_type == "code")
    assert any("### BEGIN HIDDEN TESTS" in c.source for c in code if c.metadata.get("nbgrader", {}).get("grade"))
    assert "vq.assignments.check_" in "".join(c.source for c in code)


def test_free_text_answer_is_manually_graded():
    nb = nbformat.read(SOLUTIONS[2], as_version=4)
    manual = [c for c in nb.cells if c.cell_type == "markdown" and c.metadata.get("nbgrader", {}).get("grade")]
    assert len(manual) == 1
    assert manual[0].metadata["nbgrader"]["solution"] and manual[0].metadata["nbgrader"]["points"] > 0


def solution_lines(cell) -> set[str]:
    """The non-trivial lines between ### BEGIN SOLUTION and ### END SOLUTION of a cell."""
    lines, inside = set(), False
    for line in cell.source.splitlines():
        if "### BEGIN SOLUTION" in line or "### END SOLUTION" in line:
            inside = "BEGIN" in line
        elif inside and len(line.strip()) > 12:
            lines.add(line.strip())
    return lines


def test_student_copies_are_up_to_date_and_hold_no_solutions(tmp_path):
    for path in assignments.generate(tmp_path):
        committed = assignments.student_dir() / path.name
        assert committed.read_bytes() == path.read_bytes(), f"{committed} is stale: run `make student`"
        student = {c.id: c.source for c in nbformat.read(path, as_version=4).cells}
        for cell in nbformat.read(SOLUTIONS[NAMES.index(path.stem)], as_version=4).cells:
            leaked = solution_lines(cell) & {line.strip() for line in student[cell.id].splitlines()}
            assert not leaked, f"{path.name}, cell {cell.id} shows solution lines {leaked}"
            assert "HIDDEN TESTS" not in student[cell.id] and "SOLUTION" not in student[cell.id]
        assert "raise NotImplementedError()" in path.read_text()
    assert "YOUR ANSWER HERE" in (tmp_path / "03_directional_lipschitz.ipynb").read_text()
    assert student_copy(SOLUTIONS[0]) == student_copy(SOLUTIONS[0])  # deterministic


def test_nbgrader_generate_assignment_releases_the_same_student_copies(tmp_path):
    """A teacher's nbgrader course: copy the solutions into source/<assignment>/, generate, compare."""
    source = tmp_path / "source" / "vitequiv"
    source.mkdir(parents=True)
    for path in SOLUTIONS:
        (source / path.name).write_bytes(path.read_bytes())
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    run = subprocess.run([sys.executable, "-m", "nbgrader", "generate_assignment", "vitequiv", "--force"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    for path in SOLUTIONS:
        released = nbformat.read(tmp_path / "release" / "vitequiv" / path.name, as_version=4)
        ours = nbformat.read(assignments.student_dir() / path.name, as_version=4)
        assert [c.source for c in released.cells] == [c.source for c in ours.cells]


@pytest.mark.notebooks
@pytest.mark.parametrize("name", NAMES)
def test_solution_runs_and_passes_public_and_hidden_checks(name):
    nb = execute(SOLUTIONS[NAMES.index(name)])
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    grade_cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade") and c.cell_type == "code"]
    assert printed.count("OK: ") >= len(grade_cells)


@pytest.mark.notebooks
@pytest.mark.parametrize("name", NAMES)
def test_student_copy_stops_at_the_first_unimplemented_task(name):
    with pytest.raises(CellExecutionError) as failure:
        execute(assignments.student_dir() / f"{name}.ipynb")
    assert failure.value.ename == "NotImplementedError", str(failure.value)[-2000:]


# ------------------------------------------------------------------------------------------ checks


@pytest.fixture(scope="module")
def linear():
    return checks.known_linear_map()  # f(x) = A x, A: 16 x 192 float64, rank 12


def image(seed: int) -> torch.Tensor:
    """A (1, 3, 8, 8) float64 image in [0.25, 0.75], the linear map's input."""
    return 0.25 + 0.5 * torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_check_loss_names_the_mistake(linear):
    x, target = image(0), linear.embed(image(1))
    checks.check_loss(lambda m, x, t: 0.5 * (m.embed(x) - t).pow(2).sum(), linear, x, target)
    wrong = {
        "averaged over the D = 16": lambda m, x, t: torch.nn.functional.mse_loss(m.embed(x), t),
        "forgot the factor 1/2": lambda m, x, t: (m.embed(x) - t).pow(2).sum(),
        "half its square": lambda m, x, t: (m.embed(x) - t).norm(),
        "outside the square": lambda m, x, t: (0.5 * (m.embed(x) - t)).pow(2).sum(),
        "no gradient": lambda m, x, t: 0.5 * (m.embed(x).detach() - t).pow(2).sum(),
        "Python number": lambda m, x, t: 0.5 * (m.embed(x) - t).pow(2).sum().item(),
    }
    for message, loss_fn in wrong.items():
        with pytest.raises(AssertionError, match=message):
            checks.check_loss(loss_fn, linear, x, target)


def test_check_match_names_the_mistake(linear):
    A = linear.A
    x0, x_tg = image(0), image(1)
    x = x0 + (torch.linalg.pinv(A) @ A @ (x_tg - x0).flatten()).reshape(x0.shape)  # f(x) = f(x_tg) exactly
    f_tg = linear.embed(x_tg)

    def record(*images):
        embs = [linear.embed(im) for im in images]
        return {"loss": [0.5 * (e - f_tg).pow(2).sum().item() for e in embs],
                "cosine": [torch.nn.functional.cosine_similarity(e, f_tg).item() for e in embs]}

    good = record(x0, 0.5 * (x0 + x), x)
    checks.check_match(linear, x0, x_tg, x, good, cos_min=0.99, dist2_max=1e-6)
    cases = {
        "closer to the target": (x_tg, record(x0, x_tg)),
        "clamp x to": (x + 2.0, good),
        "not a match": (0.5 * (x0 + x), record(x0, 0.5 * (x0 + x))),
        "before updating it": (x, {"loss": [1.0] + good["loss"][1:], "cosine": good["cosine"]}),
        "not that of the image you returned": (x, record(x0, x, 0.5 * (x0 + x))),
        "stop as soon as": (x, record(x0, x, x)),
    }
    for message, (image_, history) in cases.items():
        with pytest.raises(AssertionError, match=message):
            checks.check_match(linear, x0, x_tg, image_, history, cos_min=0.99, dist2_max=1e-6)


def plain_gd(sign: float = 1.0):
    """The exercise's matching loop with a configurable step sign (-1: a classic mistake)."""
    def match(model, x0, x_tg, *, lr, max_steps, cos_min, dist2_max):
        target, x, history = model.embed(x_tg).detach(), x0.clone(), {"loss": [], "cosine": []}
        for step in range(max_steps + 1):
            x.requires_grad_(True)
            loss = 0.5 * (model.embed(x) - target).pow(2).sum()
            history["loss"].append(loss.item())
            history["cosine"].append(torch.nn.functional.cosine_similarity(model.embed(x), target).item())
            if step == max_steps:
                break
            x = (x.detach() - sign * lr * torch.autograd.grad(loss, x)[0]).clamp(0, 1)
        return x.detach(), history
    return match


def test_check_match_steps_compares_with_the_library(linear):
    x0, x_tg = image(0), image(1)
    checks.check_match_steps(plain_gd(), linear, x0, x_tg, lr=0.01, steps=3)
    with pytest.raises(AssertionError, match="differs from plain gradient descent"):
        checks.check_match_steps(plain_gd(sign=-1.0), linear, x0, x_tg, lr=0.01, steps=3)


def test_check_jacobian_names_the_mistake(linear):
    x, J = image(0), linear.A  # (16, 192); notebook 02 checks real ViTs
    checks.check_jacobian(J.clone(), linear, x)
    hwc = J.reshape(-1, 3, 8, 8).permute(0, 2, 3, 1).reshape(J.shape)
    cases = {"(H, W, C) order": hwc, "J transposed": J.T, "accumulates": J.cumsum(dim=0), "sign flipped": -J,
             "Reshape it": J.reshape(-1, 3, 8, 8), "differs from autograd's by 0.1 (max abs)": J + 0.1}
    for message, wrong in cases.items():
        with pytest.raises(AssertionError, match=re.escape(message)):
            checks.check_jacobian(wrong, linear, x)


def test_spectrum_checks_name_the_mistake(linear):
    A = linear.A
    s = spectrum(A, (A.shape[1],)).s
    checks.check_singular_values(s, A)
    float32_gram = torch.linalg.eigvalsh(A.float() @ A.float().T).clamp_min(0).sqrt().flip(0)
    for message, wrong in {"descending": s.flip(0), "square root": s**2, "NaN": s.sqrt() * float("nan"),
                           "float64": float32_gram}.items():
        with pytest.raises(AssertionError, match=message):
            checks.check_singular_values(wrong, A)
    checks.check_null_fraction(1 - 12 / 192, A)
    for message, wrong in {"normal-space fraction": 12 / 192, "D = 16": 1 - 16 / 192, "divide by": 180}.items():
        with pytest.raises(AssertionError, match=message):
            checks.check_null_fraction(wrong, A)
    V = spectrum(A, (A.shape[1],)).V
    checks.check_normal_basis(V, A)
    for message, wrong in {"orthonormal": 2 * V, "V transposed": V.T, "numerical rank": V[:5]}.items():
        with pytest.raises(AssertionError, match=message):
            checks.check_normal_basis(wrong, A)
    checks.check_null_projection(lambda v, V: v - V.T @ (V @ v), V, A)
    for message, wrong in {"as large as for v itself": lambda v, V: v, "keeps": lambda v, V: 0 * v,
                           "idempotent": lambda v, V: 1.5 * (v - V.T @ (V @ v))}.items():
        with pytest.raises(AssertionError, match=message):
            checks.check_null_projection(wrong, V, A)


def test_lipschitz_checks_name_the_mistake(linear):
    x, v = image(0), torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def right(model, x, v, eps):
        return ((model.embed(x + eps * v / v.norm()) - model.embed(x)).norm() / eps).item()

    checks.check_directional_lipschitz(right, linear, x, v)
    for message, wrong in {"normalise v": lambda m, x, v, eps: right(m, x, v, eps) * v.norm().item(),  # v as is
                           "divide by eps": lambda m, x, v, eps: right(m, x, v, eps) * eps}.items():
        with pytest.raises(AssertionError, match=message):
            checks.check_directional_lipschitz(wrong, linear, x, v)
    exact = (linear.A @ (v / v.norm()).flatten()).norm().item()
    checks.check_jv_norm(exact, linear, x, v)
    with pytest.raises(AssertionError, match="normalise v first"):
        checks.check_jv_norm(exact * v.norm().item(), linear, x, v)

    lin32, x32, v32 = cast_model(linear, torch.float32), x.float(), v.float()
    eps = [10.0 ** -k for k in range(1, 13)]
    checks.check_lipschitz_sweep(eps, [right(lin32, x32, v32, e) for e in eps], lin32, x32, v32)
    L64 = [right(linear, x, v, e) for e in eps]  # float64 numbers passed off as float32 ones
    with pytest.raises(AssertionError, match="ruined by torch.float32 rounding"):
        checks.check_lipschitz_sweep(eps, L64, lin32, x32, v32)
    checks.check_best_eps(1e-2, [1e-1, 1e-2, 1e-3], [1.5, 1.01, 0.0], 1.0)
    with pytest.raises(AssertionError, match="most accurate eps is 0.01"):
        checks.check_best_eps(1e-3, [1e-1, 1e-2, 1e-3], [1.5, 1.01, 0.0], 1.0)
