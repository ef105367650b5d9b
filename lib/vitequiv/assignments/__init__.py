"""Classroom exercises (``notebooks/assignments/``): the checks their notebooks call, and student-copy generation.

Each check recomputes the reference with vitequiv's own functions and raises ``AssertionError`` with a message
that says what is wrong and what to try, or prints one line starting with "OK" when the answer is right; it
writes nothing to stderr for a right answer (nbgrader would score the cell as failed). Student copies are
generated from the solution notebooks with nbgrader's preprocessors: ``python -m vitequiv.assignments generate``
(``make student``). ``vitequiv.assignments.feedback`` keeps the hidden tests out of nbgrader's feedback.
"""
from .checks import (
    check_best_eps,
    check_directional_lipschitz,
    check_jacobian,
    check_jv_norm,
    check_lipschitz_sweep,
    check_loss,
    check_match,
    check_match_steps,
    check_normal_basis,
    check_null_fraction,
    check_null_projection,
    check_singular_values,
    known_linear_map,
)
from .generate import generate, solution_notebooks, student_dir

__all__ = [
    "check_best_eps", "check_directional_lipschitz", "check_jacobian", "check_jv_norm", "check_lipschitz_sweep",
    "check_loss", "check_match", "check_match_steps", "check_normal_basis", "check_null_fraction",
    "check_null_projection", "check_singular_values", "known_linear_map", "generate", "solution_notebooks",
    "student_dir",
]
