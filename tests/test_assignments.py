"""The classroom exercises: notebook layout and nbgrader metadata, the committed student copies are up to date and
hold no solutions, the checks explain wrong answers (and name a notebook global used for an argument, or a call
of the library's own answer), and torch's known warnings never reach stderr. The notebooks themselves run in a
real nbgrader course: tests/test_nbgrader_course.py."""
import ast
import os
import re
import subprocess
import sys

import nbformat
import pytest
import torch
from nbgrader.nbgraderformat import MetadataValidator

import vitequiv
from vitequiv import assignments
from vitequiv.assignments import checks
from vitequiv.assignments.generate import student_copy
from vitequiv.jacobians import cast_model, spectrum

SOLUTIONS = assignments.solution_notebooks()
NAMES = [p.stem for p in SOLUTIONS]


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


# ------------------------------------------------------------------------------------------ checks


@pytest.fixture(scope="module")
def linear():
    return checks.known_linear_map()  # f(x) = A x, A: 16 x 192 float64, rank 12


def image(seed: int) -> torch.Tensor:
    """A (1, 3, 8, 8) float64 image in [0.25, 0.75], the linear map's input."""
    return 0.25 + 0.5 * torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_check_loss_names_the_mistake(linear):
    x, target = image(0), linear.embed(image(1))
    f_global, x_global = linear.embed(image(2)), image(3)  # what a notebook's f_tg and x0 would be
    checks.check_loss(lambda m, x, t: 0.5 * (m.embed(x) - t).pow(2).sum(), linear, x, target)
    wrong = {
        "averaged over the D = 16": lambda m, x, t: torch.nn.functional.mse_loss(m.embed(x), t),
        "forgot the factor 1/2": lambda m, x, t: (m.embed(x) - t).pow(2).sum(),
        "half its square": lambda m, x, t: (m.embed(x) - t).norm(),
        "outside the square": lambda m, x, t: (0.5 * (m.embed(x) - t)).pow(2).sum(),
        "detach f(x)": lambda m, x, t: 0.5 * (m.embed(x).detach() - t).pow(2).sum(),
        "Python number": lambda m, x, t: 0.5 * (m.embed(x) - t).pow(2).sum().item(),
        "argument target, not a notebook variable such as f_tg":
            lambda m, x, t: 0.5 * (m.embed(x) - f_global).pow(2).sum(),
        "argument x, not a notebook variable such as x0": lambda m, x, t: 0.5 * (m.embed(x_global) - t).pow(2).sum(),
    }
    for message, loss_fn in wrong.items():
        with pytest.raises(AssertionError, match=re.escape(message)):
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
    checks.check_match(linear, x0, x_tg, x, good, stop_cos=0.99, stop_dist2=1e-6)
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
            checks.check_match(linear, x0, x_tg, image_, history, stop_cos=0.99, stop_dist2=1e-6)


def plain_gd(sign: float = 1.0, scale: float = 1.0, clamp: bool = True, source=None, target_image=None):
    """The exercise's matching loop, with classic mistakes on request: a step of the wrong sign (-1), a loss
    scaled by ``scale`` (2/D: F.mse_loss), no clamp, a notebook global ``source`` or ``target_image`` used
    instead of the arguments."""
    def match(model, x0, x_tg, *, lr, max_steps, stop_cos, stop_dist2):
        x0 = x0 if source is None else source
        target = model.embed(x_tg if target_image is None else target_image).detach()
        x, history = x0.clone(), {"loss": [], "cosine": []}
        for step in range(max_steps + 1):
            x.requires_grad_(True)
            loss = 0.5 * scale * (model.embed(x) - target).pow(2).sum()
            history["loss"].append(loss.item())
            history["cosine"].append(torch.nn.functional.cosine_similarity(model.embed(x), target).item())
            if step == max_steps:
                break
            x = x.detach() - sign * lr * torch.autograd.grad(loss, x)[0]
            x = x.clamp(0, 1) if clamp else x
        return x.detach(), history
    return match


def test_check_match_steps_compares_with_the_library_and_names_the_mistake(linear):
    x0, x_tg = image(0), image(1)
    checks.check_match_steps(plain_gd(), linear, x0, x_tg, lr=0.01, steps=3)
    cases = {
        "you step uphill": plain_gd(sign=-1.0),
        "2/D times too small": plain_gd(scale=2 / 16),
        "argument x_tg, not a notebook variable such as f_tg": plain_gd(target_image=image(2)),
        "argument x0, not a notebook variable such as x0": plain_gd(source=image(3)),
        "calls vq.match_embeddings, the library's own answer": lambda m, x0, x_tg, **kwargs: (
            vitequiv.match_embeddings(m, x0, x_tg, step_rule=vitequiv.Adam(), max_steps=3, progress=False).images,
            {"loss": [0.0] * 4}),
    }
    for message, match in cases.items():
        with pytest.raises(AssertionError, match=re.escape(message)) as failure:
            checks.check_match_steps(match, linear, x0, x_tg, lr=0.01, steps=3)
        assert "library" in message or "differs from plain gradient descent" in str(failure.value)
    with pytest.raises(AssertionError, match="clamp x to"):
        checks.check_match_steps(plain_gd(clamp=False), linear, x0, x_tg, lr=1.0, steps=3)


def hand_jacobian(model, x):
    """The Jacobian row by row with torch.autograd.grad, as the exercise describes it."""
    x = x.detach().requires_grad_(True)
    f = model.embed(x)[0]  # (D,)
    return torch.stack([torch.autograd.grad(f[i], x, retain_graph=True)[0].flatten() for i in range(len(f))])


def test_check_jacobian_names_the_mistake(linear):
    x, J = image(0), linear.A  # (16, 192); notebook 02 checks real ViTs
    checks.check_jacobian(J.clone(), linear, x)
    checks.check_jacobian(hand_jacobian, linear, x)  # the student's function, called by the check
    hwc = J.reshape(-1, 3, 8, 8).permute(0, 2, 3, 1).reshape(J.shape)
    cases = {"(H, W, C) order": hwc, "J transposed": J.T, "accumulates": J.cumsum(dim=0), "sign flipped": -J,
             "Reshape it": J.reshape(-1, 3, 8, 8), "differs from autograd's by 0.1 (max abs)": J + 0.1,
             "use its arguments model and x": lambda m, x: torch.zeros(384, 9408),  # the notebook's J
             "calls vq.jacobian, the library's own answer": lambda m, x: vitequiv.jacobian(m, x)}
    for message, wrong in cases.items():
        with pytest.raises(AssertionError, match=re.escape(message)):
            checks.check_jacobian(wrong, linear, x)


def test_library_calls_are_caught_under_any_name(linear):
    from vitequiv.jacobians import jacobian as imported_early  # a student's `from vitequiv import jacobian`

    for call in (lambda m, x: vitequiv.jacobians.jacobian(m, x), lambda m, x: imported_early(m, x)):
        with pytest.raises(AssertionError, match="calls vq.jacobian"):
            checks.check_jacobian(call, linear, image(0))


def test_the_guide_names_every_library_answer_a_check_catches():
    code = "\n".join(c.source for p in SOLUTIONS for c in nbformat.read(p, as_version=4).cells if c.cell_type == "code")
    assert set(checks.REFERENCES) <= set(re.findall(r"^def (\w+)\(", code, re.M)), "a task that no notebook has"
    guide = (assignments.solution_notebooks()[0].parent / "README.md").read_text()
    for task, reference in checks.REFERENCES.items():
        assert f"`{task}`" in guide, task
        for name in reference.functions.values():
            assert f"`{name}`" in guide, name


def gram_basis(J, rtol=1e-5):
    """The exercise's normal basis V = diag(1/s) U^T J from the eigen-decomposition of J J^T."""
    eigenvalues, U = torch.linalg.eigh(J.double() @ J.double().T)
    s = eigenvalues.clamp_min(0).sqrt()
    keep = s > rtol * s.max()
    return ((U[:, keep].T @ J.double()) / s[keep, None]).to(J.dtype)


def test_spectrum_checks_name_the_mistake(linear):
    A = linear.A
    s = spectrum(A, (A.shape[1],)).s
    checks.check_singular_values(s, A)
    checks.check_singular_values(lambda J: torch.linalg.eigvalsh(J @ J.T).clamp_min(0).sqrt().flip(0), A)
    float32_gram = torch.linalg.eigvalsh(A.float() @ A.float().T).clamp_min(0).sqrt().flip(0)
    for message, wrong in {"descending": s.flip(0), "square root": s**2, "NaN": s.sqrt() * float("nan"),
                           "float64": float32_gram, "use its argument J": lambda J: torch.ones(384),
                           "calls vq.spectrum": lambda J: vitequiv.spectrum(J, (J.shape[1],)).s}.items():
        with pytest.raises(AssertionError, match=message):
            checks.check_singular_values(wrong, A)

    def fraction(s, num_pixels, rtol):
        return 1 - int((s > rtol * s.max()).sum()) / num_pixels

    checks.check_null_fraction(1 - 12 / 192, A)
    checks.check_null_fraction(fraction, A)
    for message, wrong in {"normal-space fraction": 12 / 192, "D = 16": 1 - 16 / 192, "divide by": 180,
                           "1 - rank / 9408": lambda s, P, rtol: fraction(s, 9408, rtol),  # the notebook's P
                           "calls Spectrum.null_fraction": lambda s, P, rtol: vitequiv.Spectrum(
                               s, torch.empty(0), torch.empty(0), (P,)).null_fraction(rtol)}.items():
        with pytest.raises(AssertionError, match=re.escape(message)):
            checks.check_null_fraction(wrong, A)

    V = spectrum(A, (A.shape[1],)).V
    checks.check_normal_basis(V, A)
    checks.check_normal_basis(gram_basis, A)
    for message, wrong in {"orthonormal": 2 * V, "V transposed": V.T, "numerical rank": V[:5],
                           "use its argument J": lambda J, rtol: torch.ones(382, 9408),
                           "calls vq.spectrum": lambda J, rtol: vitequiv.spectrum(J, (J.shape[1],)).V}.items():
        with pytest.raises(AssertionError, match=message):
            checks.check_normal_basis(wrong, A)
    checks.check_null_projection(lambda v, V: v - V.T @ (V @ v), V, A)
    for message, wrong in {"as large as for v itself": lambda v, V: v, "keeps": lambda v, V: 0 * v,
                           "idempotent": lambda v, V: 1.5 * (v - V.T @ (V @ v)),
                           "calls Spectrum.project_null": lambda v, V: vitequiv.Spectrum(
                               torch.ones(len(V)), torch.empty(0), V, (V.shape[1],)).project_null(v)}.items():
        with pytest.raises(AssertionError, match=message):
            checks.check_null_projection(wrong, V, A)


def test_lipschitz_checks_name_the_mistake(linear):
    x, v = image(0), torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    v_global = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

    def right(model, x, v, eps):
        return ((model.embed(x + eps * v / v.norm()) - model.embed(x)).norm() / eps).item()

    checks.check_directional_lipschitz(right, linear, x, v)
    for message, wrong in {"did not normalize v": lambda m, x, v, eps: right(m, x, v, eps) * v.norm().item(),
                           "forgot to divide by eps": lambda m, x, v, eps: right(m, x, v, eps) * eps,
                           "normalize v and divide by eps": lambda m, x, v, eps: right(m, x, v, eps) * eps * v.norm(
                               ).item(),
                           "argument v, not a notebook variable such as v64": lambda m, x, v, eps: right(
                               m, x, v_global, eps),
                           "calls vq.directional_lipschitz": lambda m, x, v, eps: vitequiv.directional_lipschitz(
                               m, x, v, [eps]).item()}.items():
        with pytest.raises(AssertionError, match=re.escape(message)):
            checks.check_directional_lipschitz(wrong, linear, x, v)
    exact = (linear.A @ (v / v.norm()).flatten()).norm().item()
    checks.check_jv_norm(exact, linear, x, v)
    with pytest.raises(AssertionError, match="normalize v first"):
        checks.check_jv_norm(exact * v.norm().item(), linear, x, v)

    lin32, x32, v32 = cast_model(linear, torch.float32), x.float(), v.float()
    eps = [10.0 ** -k for k in range(1, 13)]
    checks.check_lipschitz_sweep(eps, [right(lin32, x32, v32, e) for e in eps], lin32, x32, v32)
    unnormalized = [right(lin32, x32, v32, e) * v32.norm().item() for e in eps]
    with pytest.raises(AssertionError, match="did not normalize v"):
        checks.check_lipschitz_sweep(eps, unnormalized, lin32, x32, v32)
    L64 = [right(linear, x, v, e) for e in eps]  # float64 numbers passed off as float32 ones
    with pytest.raises(AssertionError, match="ruined by torch.float32 rounding"):
        checks.check_lipschitz_sweep(eps, L64, lin32, x32, v32)
    checks.check_best_eps(1e-2, [1e-1, 1e-2, 1e-3], [1.5, 1.01, 0.0], 1.0)
    for best, message in {1e-3: "smallest signed error", 5e-3: "not one of the eps values"}.items():
        with pytest.raises(AssertionError, match="most accurate eps is 0.01.*" + message):
            checks.check_best_eps(best, [1e-1, 1e-2, 1e-3], [1.5, 1.01, 0.0], 1.0)


QUIET_SCRIPT = """
import torch, vitequiv as vq
tiny = vq.load_model("random:vit_tiny_patch16_224", img_size=32, depth=2, device="cpu")
x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
def compute_jacobian(model, x):  # jacrev vmaps over the fused attention backward: a UserWarning
    J = torch.func.jacrev(lambda z: model.embed(z)[0], chunk_size=32)(x)
    return J.reshape(J.shape[0], -1)
def estimate(model, x, v, eps):
    with torch.no_grad():
        return ((model.embed(x + eps * v / v.norm()) - model.embed(x)).norm() / eps).item()
vq.assignments.check_jacobian(compute_jacobian, tiny, x)
vq.assignments.check_directional_lipschitz(estimate, tiny, x, torch.randn_like(x))  # first jvp: a FutureWarning
"""


def test_checks_write_nothing_to_stderr_for_correct_answers():
    """nbgrader scores a graded cell that writes to stderr as failed: torch's known warnings stay inside the checks
    (a fresh process, since one of them fires once per process)."""
    run = subprocess.run([sys.executable, "-W", "default", "-c", QUIET_SCRIPT], capture_output=True, text=True,
                         timeout=600, env=os.environ | {"HF_HUB_OFFLINE": "1"})
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.count("OK: ") == 2 and run.stderr == "", run.stderr[-2000:]
