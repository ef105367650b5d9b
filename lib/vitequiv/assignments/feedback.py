"""Feedback without the hidden tests' code: a preprocessor for nbgrader's ``GenerateFeedback``.

By default nbgrader's feedback HTML shows every graded cell as autograded: the hidden tests restored, with their
outputs. nbgrader's own ``ClearHiddenTests`` removes their source, but the traceback of a failing hidden test still
quotes its lines. :class:`ShortTracebacks` cuts every error in a graded cell down to its last line, e.g.
"AssertionError: match gives the same result when its argument x_tg changes: ...", which is the diagnosis. Use both
(teacher's guide, notebooks/assignments/README.md)::

    c.GenerateFeedback.preprocessors = [
        "nbgrader.preprocessors.GetGrades",
        "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
        "nbgrader.preprocessors.ClearHiddenTests",
        "vitequiv.assignments.feedback.ShortTracebacks",
    ]
"""
from __future__ import annotations

from nbconvert.exporters.exporter import ResourcesDict
from nbformat import NotebookNode
from nbgrader import utils
from nbgrader.preprocessors import NbGraderPreprocessor


class ShortTracebacks(NbGraderPreprocessor):
    """Replace the traceback of each error in a graded code cell by "<error name>: <message>"."""

    def preprocess_cell(self, cell: NotebookNode, resources: ResourcesDict, index: int
                        ) -> tuple[NotebookNode, ResourcesDict]:
        if cell.cell_type == "code" and utils.is_grade(cell):
            for output in cell.outputs:
                if output.output_type == "error":
                    output.traceback = [f"{output.ename}: {output.evalue}"]
        return cell, resources
