"""Shared fixtures. Tests never wait on the network: the hub is off for the whole session."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before anything imports huggingface_hub
if "PYTEST_XDIST_WORKER" in os.environ:  # under `pytest -n N`: the cores shared out, kernels included (before torch)
    workers = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))

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


SMOKE_SUITE_FILES = {"tests/test_notebooks.py", "tests/test_browser.py"}  # the users of the smoke_suite fixture
LONGEST_FIRST = ("smoke suite", "tests/test_nbgrader_course.py")  # minutes each: started first, on separate workers


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`make test` runs pytest-xdist: each test file goes to one worker whole (its module fixtures are built once),
    the files that share the smoke suite go to the same one (it runs once), and the longest groups start first."""
    from xdist.scheduler import LoadFileScheduling

    class SmokeSuiteTogether(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            file = super()._split_scope(nodeid)
            return "smoke suite" if file in SMOKE_SUITE_FILES else file

        def _assign_work_unit(self, node: Any) -> None:
            for scope in reversed(LONGEST_FIRST):
                if scope in self.workqueue:
                    self.workqueue.move_to_end(scope, last=False)
            super()._assign_work_unit(node)

    return SmokeSuiteTogether(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that uses the smoke suite from a file the scheduler does not know would run it a second time."""
    for item in items:
        file = item.nodeid.split("::", 1)[0]
        if "smoke_suite" in item.fixturenames and file not in SMOKE_SUITE_FILES:
            raise pytest.UsageError(f"{item.nodeid} uses smoke_suite: add {file} to SMOKE_SUITE_FILES in conftest.py")
