"""vitequiv: equivalence structures of ViT embedding spaces (Salman, Shams, Liu, arXiv 2401.15568).

Notebooks read ``import vitequiv as vq`` and call the entry points re-exported here; the vocabulary they share
is in ``lib/vitequiv/README.md``.
"""
from . import (
    assignments,
    claims,
    clip,
    detection,
    downstream,
    figures,
    hub,
    images,
    jacobians,
    linearity,
    lipschitz,
    matching,
    metrics,
    models,
    normal_space,
    paths,
    structure,
    systematic,
    visibility,
)
from .claims import Claim
from .clip import ZeroShotCLIP, ZeroShotUnavailableError
from .detection import EOTModel
from .downstream import KNN, ClassHead, LinearProbe
from .environment import library_versions
from .figures import Output, amplify, image_grid, use_style
from .images import ImageLoadError, ImageSet, LabeledSet, labeled_set, lfw_faces, load_images, view_set
from .jacobians import JacobianMemoryError, LinearMap, Spectrum, jacobian, spectrum, top_spectrum
from .linearity import LinearityProfile, Walk, linear_region_radius, linearization_profile, null_space_walk
from .lipschitz import directional_derivative, directional_lipschitz, sampled_lipschitz_max
from .matching import (
    STEP_RULES,
    Adam,
    L2Ball,
    LinfBall,
    MatchingError,
    MatchResult,
    MinNorm,
    MinVisible,
    NormalizedGD,
    PaperGD,
    SignGD,
    StepRule,
    make_step_rule,
    match_embeddings,
    paper_match,
)
from .metrics import cosine, cosine_matrix, l1_255, l2_255, linf_255, psnr, quantize_8bit, ssim
from .models import BlockEmbedding, EmbeddingModel, UnknownModelError, embed_batched, load_model
from .seeding import seed_everything
from .systematic import SystematicResult, systematic_evaluation
from .version import __version__
from .visibility import (
    VisibilityToolError,
    VisibilityUnavailable,
    butteraugli,
    butteraugli_available,
    equal_energy_noise,
    jod,
    visibility_table,
)
from .weights import WeightsUnavailableError

__all__ = [
    # modules
    "assignments", "claims", "clip", "detection", "downstream", "figures", "hub", "images", "jacobians",
    "linearity", "lipschitz", "matching", "metrics", "models", "normal_space", "paths", "structure", "systematic",
    "visibility",
    # models and images
    "load_model", "EmbeddingModel", "UnknownModelError", "WeightsUnavailableError", "embed_batched", "BlockEmbedding",
    "load_images", "ImageSet", "ImageLoadError", "LabeledSet", "labeled_set", "view_set", "lfw_faces",
    # matching
    "match_embeddings", "paper_match", "make_step_rule", "STEP_RULES", "StepRule", "MinNorm", "MinVisible", "Adam",
    "PaperGD", "SignGD", "NormalizedGD", "LinfBall", "L2Ball", "MatchResult", "MatchingError", "EOTModel",
    # Jacobian, linearity, Lipschitz
    "jacobian", "spectrum", "top_spectrum", "Spectrum", "LinearMap", "JacobianMemoryError", "linearization_profile",
    "LinearityProfile", "linear_region_radius", "null_space_walk", "Walk", "directional_lipschitz",
    "directional_derivative", "sampled_lipschitz_max",
    # downstream
    "LinearProbe", "KNN", "ClassHead", "ZeroShotCLIP", "ZeroShotUnavailableError", "systematic_evaluation",
    "SystematicResult",
    # metrics
    "cosine", "cosine_matrix", "psnr", "ssim", "l1_255", "l2_255", "linf_255", "quantize_8bit",
    # visibility
    "butteraugli", "butteraugli_available", "jod", "visibility_table", "equal_energy_noise", "VisibilityUnavailable",
    "VisibilityToolError",
    # figures, runs
    "Output", "Claim", "use_style", "image_grid", "amplify", "seed_everything", "library_versions",
    "__version__",
]
