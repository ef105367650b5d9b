"""vitequiv: equivalence structures of ViT embedding spaces (Salman, Shams, Liu, arXiv 2401.15568).

Notebooks read ``import vitequiv as vq`` and call the entry points re-exported here.
"""
from .models import EmbeddingModel, UnknownModelError, load_model
from .seeding import seed_everything
from .weights import WeightsUnavailableError

__version__ = "0.1.0"
