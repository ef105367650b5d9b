"""Embedding matching: change a source image's pixels until its embedding equals a target's.

This is the paper's core experiment: find x = x0 + dx, close to the source x0 in pixels, with f(x) = f(x_tg).
``match_embeddings`` runs it for many (source, target) pairs at once; how a gradient becomes a pixel update
is a small pluggable :class:`StepRule` (in the style of MadryLab's ``robustness`` attacker steps), named by
string in :data:`STEP_RULES`, and the allowed perturbation is an optional :class:`Budget` plus a pixel box.

The default step rule, :class:`MinNorm`, looks for the *smallest* change that reaches the cosine threshold, so
that the matched image is visually indistinguishable from its source (see its docstring for why it works the
way it does). The others reproduce the paper (:class:`PaperGD`), or are the usual adversarial steps.

Losses. A rule says which loss it descends. ``"mse"``: each pair's loss is the mean over the D embedding
dimensions of (f(x) - f(x_tg))^2, i.e. what the authors' code computes with ``F.mse_loss`` for one pair; it is
(2 / D) times the paper's 1/2 ||f(x) - f(x_tg)||^2, so the minimizer is the same and the authors' learning
rates carry over to :class:`PaperGD` unchanged. ``"cosine"``: 1 - cos(f(x), f(x_tg)), the stopping criterion
itself, blind to the embedding's length. Pair losses are summed (not averaged) over the batch, so each pair's
gradient is independent of the batch size and a batched run equals running every pair alone.

Gray stays gray. A source whose three channels are equal (a gray photo) gets a perturbation that is equal in
all three channels too, with every rule: the gradient and the new perturbation are averaged over the channels
(``keep_gray=False`` turns this off).

Units. Pixels live in [0, 1]; step sizes are in those units; budgets and the recorded perturbation sizes are in
1/255 units (8-bit gray levels). One *pass* is one forward and one backward of one image through the model.
Modules: :mod:`.rules` (step rules), :mod:`.masking` (per-pixel metrics a rule may measure its change in),
:mod:`.budgets` (perturbation balls), :mod:`.result` (:class:`MatchResult`, :class:`MatchingError`),
:mod:`.search` (the search loop, ``match_embeddings``, ``paper_match``) and :mod:`.report` (tables comparing
matchers, the stop-cosine sweep).
"""
from __future__ import annotations

from .budgets import PSNR_40_L2, Budget, L2Ball, LinfBall
from .masking import perceptual_weights
from .report import methods_summary, methods_table, quality_note, stop_cos_sweep
from .result import HISTORY_KEYS, MatchingError, MatchResult
from .rules import (
    DEFAULT_STEP_RULE,
    STEP_RULES,
    Adam,
    MinNorm,
    MinVisible,
    NormalizedGD,
    PaperGD,
    Progress,
    SignGD,
    State,
    StepRule,
    make_step_rule,
)
from .search import BF16_COS_MARGIN, SETTLE_STEPS, bf16_margin, gray_pairs, match_embeddings, paper_match

__all__ = [
    "BF16_COS_MARGIN", "DEFAULT_STEP_RULE", "HISTORY_KEYS", "PSNR_40_L2", "SETTLE_STEPS", "STEP_RULES", "Adam",
    "Budget", "L2Ball", "LinfBall", "MatchResult", "MatchingError", "MinNorm", "MinVisible", "NormalizedGD", "PaperGD",
    "Progress", "SignGD", "State", "StepRule", "bf16_margin", "gray_pairs", "make_step_rule", "match_embeddings",
    "methods_summary", "methods_table", "paper_match", "perceptual_weights", "quality_note", "stop_cos_sweep",
]
