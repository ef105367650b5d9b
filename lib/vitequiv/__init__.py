"""vitequiv: equivalence structures of ViT embedding spaces (Salman, Shams, Liu, arXiv 2401.15568).

Notebooks read ``import vitequiv as vq`` and call the entry points re-exported here.
"""
from . import assignments, downstream, figures, images, paths
from .environment import library_versions
from . import detection, structure
from .detection import EOTModel
from .structure import BlockEmbedding
from .downstream import (
    KNN, ClassHead, LabelledSet, LinearProbe, SystematicResult, ZeroShotCLIP, ZeroShotUnavailableError,
    embed_batched, labelled_set, systematic_evaluation,
)
from .figures import Output, amplify, image_grid, use_style
from .images import ImageLoadError, ImageSet, lfw_faces, load_images, view_set
from .models import EmbeddingModel, UnknownModelError, load_model
from .matching import (
    Adam, L2Ball, LinfBall, MatchingError, MatchResult, NormalizedGD, PaperGD, SignGD, StepRule, StopRule,
    match_embeddings, paper_match,
)
from .metrics import cosine, l1_255, l2_255, linf_255, psnr, quantize_8bit, ssim
from .seeding import seed_everything
from . import jacobians, linearity, lipschitz
from .jacobians import JacobianMemoryError, LinearMap, Spectrum, jacobian, spectrum, top_spectrum
from .linearity import LinearityProfile, Walk, linear_region_radius, linearization_profile, null_space_walk
from .lipschitz import directional_derivative, directional_lipschitz, sampled_lipschitz_max
from .weights import WeightsUnavailableError

__version__ = "0.1.0"
