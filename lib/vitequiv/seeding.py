"""One call makes a run repeatable: the same parameters give the same numbers on the same machine."""
from __future__ import annotations

import random

import numpy as np
import torch

MAX_SEED = 2**32 - 1  # NumPy's limit; Python's and torch's are wider


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA); return a torch generator seeded the same way.

    ``seed`` is an int in [0, 2**32 - 1] (what every one of the three accepts); None, floats and strings are
    refused rather than turned into a seed nobody chose.
    """
    if isinstance(seed, bool) or not hasattr(seed, "__index__"):
        raise TypeError(f"seed must be an int in [0, {MAX_SEED}], got {seed!r} ({type(seed).__name__})")
    seed = seed.__index__()
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be an int in [0, {MAX_SEED}], got {seed}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return torch.Generator().manual_seed(seed)
