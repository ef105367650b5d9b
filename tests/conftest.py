"""Shared fixtures. Tests never wait on the network: the hub is off for the whole session."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before anything imports huggingface_hub

from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

import vitequiv  # noqa: E402
from vitequiv.run import records  # noqa: E402
from vitequiv.run.suite import run_suite  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model() -> vitequiv.EmbeddingModel:
    """A 2-block random-init ViT-Tiny at 32 px: fast enough for any unit test."""
    return vitequiv.load_model("random:vit_tiny_patch16_224", img_size=32, depth=2, device="cpu")


class OneByOne:
    """A model that embeds each image of a batch on its own: a batch's embeddings are then bit for bit those of its
    images run singly. Tests that compare a batch with single runs need it, since a CPU's matrix kernels (float32
    and bfloat16) may round differently at another batch size (an AMD EPYC's float32 ones do, by about 1e-6, which
    8-bit rounding can turn into a pixel step; an AMX Intel's did not)."""

    def __init__(self, model: vitequiv.EmbeddingModel) -> None:
        self.model = model

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.model.embed(image[None]) for image in x])  # (B, D)


@pytest.fixture(scope="session")
def tiny_one_by_one(tiny_model) -> OneByOne:
    """The tiny model, one image at a time: for batch-versus-single comparisons that must hold on any CPU."""
    return OneByOne(tiny_model)


@pytest.fixture(scope="session")
def tiny_x() -> torch.Tensor:
    """One fixed random image (1, 3, 32, 32) in [0, 1] for the tiny model."""
    return torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="session")
def tiny_J(tiny_model, tiny_x) -> torch.Tensor:
    """The tiny model's Jacobian at tiny_x, (192, 3072), computed once per session."""
    return vitequiv.jacobian(tiny_model, tiny_x)


@pytest.fixture(scope="session")
def embedded() -> vitequiv.EmbeddingModel:
    """The embedded pretrained DINOv2-S/14 at 224 px on the CPU."""
    return vitequiv.load_model("embedded", device="cpu")


@pytest.fixture
def rng() -> torch.Generator:
    return torch.Generator().manual_seed(0)


@dataclass(frozen=True)
class SmokeRun:
    """Where the session's smoke run wrote, and what the runner said about each notebook."""

    figures: Path  # the run's output folder: <notebook>/<notebook>.ipynb, manifests, README.md, index.json
    records: dict[str, records.RunRecord]
    result: Any  # what run_suite returned (its SuiteResult)


@pytest.fixture(scope="session")
def smoke_suite(tmp_path_factory) -> SmokeRun:
    """Every notebook run once under the smoke profile into a temporary folder, shared by the notebook tests and
    the browser tests (a few minutes on 2 cores)."""
    figures = tmp_path_factory.mktemp("smoke_figures")
    result = run_suite([], "smoke", figures)
    return SmokeRun(figures, result.by_notebook(), result)
