"""The interactive explorer: pick a source and a target photo, a model, a step rule and a budget, watch the
source's embedding being moved onto the target's, then probe what was found, and flick between the source and
the matched image (A/B, at 1x, 2x or 4x nearest-neighbor zoom) to look for the change yourself.

The logic is plain and headlessly testable: :class:`ExplorerConfig` (what to run), :class:`ExplorerSession`
(``run`` / ``stop`` / ``probe`` / ``figure``, and ``explore``, the call the widgets use, which never raises)
and :class:`Probe` (what the found image does downstream). :func:`build_explorer` wires ipywidgets to a
session; it runs each match on a background thread so that the Stop button stays responsive while it runs.
"""
from __future__ import annotations

import html
import io
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib import ticker
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from . import images as img
from . import metrics
from .downstream import KNN
from .figures import amplify, png_8bit, to_numpy_image
from .lipschitz import directional_lipschitz
from .matching import (
    STEP_RULES,
    Budget,
    L2Ball,
    LinfBall,
    MatchingError,
    MatchResult,
    make_step_rule,
    match_embeddings,
)
from .models import EmbeddingModel, embed_batched, load_model
from .seeding import seed_everything

# The step rules the explorer offers (keys of matching.STEP_RULES), each with its default step size.
STEP_SIZES: dict[str, float] = {name: rule().lr for name, rule in STEP_RULES.items()}
# Perturbation budgets, with a default radius in 1/255 units (an L2 radius counts all 3*H*W values).
BUDGETS: dict[str, float] = {"none": 0.0, "L-inf": 8.0, "L2": 1000.0}
MODEL_CHOICES = ("embedded", "random:vit_small_patch14_dinov2")
UPLOAD_PREFIX = "upload:"
STOPPED_BY = {"converged": "converged", "max_steps": "step limit reached", "callback": "stopped",
              "interrupted": "interrupted"}
AB = {"A: source": "source", "B: matched": "matched"}  # the A/B toggle's labels -> the image each shows
ZOOMS = {"1x": 1, "2x": 2, "4x": 4}  # nearest-neighbor enlargements of the A/B view

Update = Callable[[int, MatchResult], None]


def make_budget(kind: str, radius_255: float) -> Budget | None:
    """No budget, or an L-inf / L2 ball of ``radius_255`` gray levels around the source."""
    if kind not in BUDGETS:
        raise ValueError(f"Unknown budget {kind!r}; choose one of {', '.join(BUDGETS)}.")
    if kind == "none":
        return None
    if radius_255 <= 0:
        raise ValueError(f"The {kind} radius must be positive, got {radius_255:g}/255.")
    return LinfBall(radius_255) if kind == "L-inf" else L2Ball(radius_255)


@dataclass(frozen=True)
class ExplorerConfig:
    """One match: photos (bundled names, ``upload:<file>`` or file paths), model, step rule, budget, steps."""

    source: str = "cat"
    target: str = "rocket"
    model: str = "embedded"
    step_rule: str = "min-norm"  # a key of vitequiv.matching.STEP_RULES
    lr: float | None = None  # None: the rule's default step size
    budget: str = "none"
    radius_255: float = 8.0
    max_steps: int = 300
    stop_cos: float = 0.99  # stop once the cosine to the target embedding reaches this
    img_size: int = 224
    device: str = "auto"
    seed: int = 0
    model_kwargs: dict = field(default_factory=dict)  # extra timm arguments, e.g. depth=2 for a test model


@dataclass
class Probe:
    """What the matched image x = x0 + dx does, beyond its cosine to the target."""

    nearest: str  # the gallery photo whose embedding is nearest to f(x) (k-NN, k=1, cosine)
    source_nearest: str  # the same for the unmodified source x0
    source: str
    target: str
    cos_to_target: float  # cos(f(x), f(target))
    cos_to_source: float  # cos(f(x), f(x0))
    quantized_cosine: float  # cos(f(round_8bit(x)), f(target)): does the match survive saving as 8-bit PNG?
    stop_cos: float  # the run's stop threshold
    survives_8bit: bool  # quantized_cosine still reaches it
    lipschitz: float  # ||f(x0 + eps v) - f(x0)|| / eps along v = dx / ||dx||
    secant: float  # ||f(x) - f(x0)|| / ||dx||: the same ratio over the whole step
    eps: float
    linf_255: float
    l2_255: float
    psnr: float

    @property
    def looks_like(self) -> str:
        """'target', 'source' or 'another photo': whom the matched image resembles, to the k-NN."""
        return {self.target: "target", self.source: "source"}.get(self.nearest, "another photo")

    def rows(self) -> list[tuple[str, str]]:
        """(quantity, value) pairs for a table."""
        return [
            ("k-NN (k=1) on the bundled photos: matched image", f"{self.nearest} ({self.looks_like})"),
            ("k-NN (k=1) on the bundled photos: source image", self.source_nearest),
            ("cosine to the target embedding", f"{self.cos_to_target:.4f}"),
            ("cosine to the source embedding", f"{self.cos_to_source:.4f}"),
            ("cosine to the target after 8-bit rounding", f"{self.quantized_cosine:.4f} ("
             f"{'meets' if self.survives_8bit else 'below'} the {self.stop_cos:g} stop threshold)"),
            (f"directional Lipschitz estimate at the source, eps={self.eps:g}", _or_unmoved(self.lipschitz, ".4g")),
            ("||f(x) - f(x0)|| / ||dx|| over the whole step", _or_unmoved(self.secant, ".4g")),
            ("perturbation L-inf / L2 (1/255 units)", f"{self.linf_255:.1f} / {self.l2_255:.1f}"),
            ("PSNR of the matched image (dB)", _or_unmoved(self.psnr, ".1f")),
        ]


NO_CHANGE = "none yet: no step was taken"


def _or_unmoved(value: float, fmt: str) -> str:
    """A measurement of the perturbation, or a plain note where there is none yet (NaN direction, infinite PSNR)."""
    return format(value, fmt) if np.isfinite(value) else NO_CHANGE


@dataclass
class Report:
    """What :meth:`ExplorerSession.explore` hands the widgets: a result and its probe, or an error message."""

    result: MatchResult | None = None
    probe: Probe | None = None
    error: str = ""


def moved(result: MatchResult) -> bool:
    """Whether the result's (first) image is a changed one: updated at least once, and other than the source as the
    search saw it (rounded to 8 bits when the search rounded, which alone is no change)."""
    source = metrics.quantize_8bit(result.sources[:1]) if result.quantized else result.sources[:1]
    return bool(result.steps[0] > 0 and (result.images[:1] != source).any())


def perturbation_panel(result: MatchResult) -> tuple[torch.Tensor, str]:
    """The amplified perturbation (3, H, W) and its caption; mid-gray and "none yet" before any change."""
    if not moved(result):
        return torch.full_like(result.sources[0], 0.5), f"perturbation dx: {NO_CHANGE}"
    diff, gain = amplify(result.delta[0])  # largest change -> full gray range
    return diff, f"perturbation dx ×{gain:.0f}"


def png_bytes(image: torch.Tensor, zoom: int = 1) -> bytes:
    """A (3, H, W) image in [0, 1] as PNG bytes of its 8-bit pixels, ``zoom`` times enlarged (nearest neighbor),
    for an ``ipywidgets.Image``."""
    return png_8bit(image, zoom)


PLACEHOLDER = png_bytes(torch.full((3, 8, 8), 0.92))  # a plain light-gray tile for an empty image slot


def figure_png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def plot_curves(ax_cos: Axes, ax_loss: Axes, result: MatchResult) -> None:
    """Cosine to the target and matching loss over the steps, with the stop threshold."""
    steps = np.arange(len(result.history["loss"]))
    ax_cos.plot(steps, result.history["cosine"][:, 0], color="C0")
    ax_cos.axhline(result.stop_cos, color="0.4", linestyle="--", linewidth=1, label="stop threshold")
    ax_cos.set(xlabel="step", ylabel="cosine to target", title="embedding cosine similarity")
    ax_cos.legend(loc="lower right")
    ax_loss.plot(steps, result.history["loss"][:, 0], color="C1")
    ax_loss.set(xlabel="step", ylabel="loss (MSE, log scale)", yscale="log", title="matching loss")
    ax_loss.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))  # 0.1, 1, 10 rather than 10^k
    ax_loss.yaxis.set_minor_formatter(ticker.LogFormatter(labelOnlyBase=False))


def curves_figure(result: MatchResult) -> Figure:
    """The live view's curves: cosine and loss side by side (outside pyplot: drawn on the worker thread)."""
    fig = Figure(figsize=(8, 2.6), dpi=80)
    plot_curves(*fig.subplots(1, 2), result)
    return fig


class ExplorerSession:
    """Runs matches and probes them; keeps the latest model, photos and (partial) result.

    ``stop()`` may be called from another thread while ``run`` works: the run ends after the current step and
    returns what it found.
    """

    def __init__(self) -> None:
        self.uploads: dict[str, torch.Tensor] = {}  # name -> (3, H, W) at full resolution
        self.model: EmbeddingModel | None = None
        self.config: ExplorerConfig | None = None
        self.result: MatchResult | None = None
        self.target: torch.Tensor | None = None  # (1, 3, S, S), the latest run's target image
        self._model_key: tuple | None = None
        self._gallery: tuple[tuple, KNN, list[str]] | None = None
        self._stop = threading.Event()

    def add_upload(self, filename: str, data: bytes) -> str:
        """Register an uploaded image file's bytes; return its name for ``ExplorerConfig.source/target``."""
        name = UPLOAD_PREFIX + filename
        self.uploads[name] = img.read_image(data, filename)  # (3, H, W)
        return name

    def image(self, key: str, size: int) -> torch.Tensor:
        """An uploaded image, a bundled photo or an image file, as (1, 3, size, size) in [0, 1]."""
        if key in self.uploads:
            return img.resize_center_crop(self.uploads[key], size)[None]
        if key in img.BUNDLED:
            return img.load_images([key], size=size).images
        return img.load_images(files=[key], size=size).images

    def load_model(self, config: ExplorerConfig) -> EmbeddingModel:
        """The config's model, loaded once and kept while the name, size, device and seed stay the same."""
        key = (config.model, config.img_size, config.device, config.seed, tuple(sorted(config.model_kwargs.items())))
        if key != self._model_key:
            self.model, self._model_key, self._gallery = None, None, None  # free the old one first
            self.model = load_model(config.model, img_size=config.img_size, device=config.device,
                                    seed=config.seed, **config.model_kwargs)
            self._model_key = key
        return self.model

    def run(self, config: ExplorerConfig, on_update: Update | None = None, every: int = 5) -> MatchResult:
        """Match ``config.source`` to ``config.target``; ``on_update(step, result_so_far)`` every ``every`` steps.

        Raises on bad input (unknown model or photo, unreachable weights, a diverging match).
        """
        self._stop.clear()
        self.result = None
        seed_everything(config.seed)
        model = self.load_model(config)
        source = self.image(config.source, config.img_size).to(model.device)  # (1, 3, S, S)
        target = self.image(config.target, config.img_size).to(model.device)  # (1, 3, S, S)
        rule = make_step_rule(config.step_rule, lr=config.lr, model=model)
        budget = make_budget(config.budget, config.radius_255)
        self.config, self.target = config, target

        def callback(step: int, so_far: MatchResult) -> bool:
            self.result = so_far  # a Stop, or an error later on, still leaves this
            if on_update is not None and step % every == 0:
                on_update(step, so_far)
            return self._stop.is_set()

        try:
            self.result = match_embeddings(
                model, source, target, step_rule=rule, budget=budget, max_steps=config.max_steps,
                stop_cos=config.stop_cos, progress=False, callback=callback,
            )
        except MatchingError as err:
            self.result = err.result
            raise
        return self.result

    def stop(self) -> None:
        """Ask a running match to end after its current step; it keeps what it found."""
        self._stop.set()

    def _knn(self) -> tuple[KNN, list[str]]:
        """k-NN (k=1, cosine) over the embeddings of the bundled photos plus the source and target."""
        config, model = self.config, self.model
        names = list(dict.fromkeys([*img.BUNDLED, config.source, config.target]))
        key = (self._model_key, tuple(names))
        if self._gallery is None or self._gallery[0] != key:
            photos = torch.cat([self.image(n, config.img_size) for n in names])  # (N, 3, S, S)
            knn = KNN(k=1).fit(embed_batched(model, photos), np.arange(len(names)), names)
            self._gallery = (key, knn, names)
        return self._gallery[1], self._gallery[2]

    @torch.no_grad()
    def probe(self, eps: float = 1e-2) -> Probe:
        """Probe the latest result: k-NN prediction, 8-bit survival, directional Lipschitz estimate along dx.

        ``eps`` is the step along the unit direction v = dx / ||dx|| (pixels in [0, 1], L2 over all values).
        """
        if self.result is None or self.model is None:
            raise RuntimeError("Nothing to probe yet: run a match first.")
        result, model, config = self.result, self.model, self.config
        x0, x = result.sources, result.images  # each (1, 3, S, S)
        dx = x - x0
        f0, fx, ft = model.embed(x0), model.embed(x), result.target_embeddings  # each (1, D)
        quantized = float(metrics.cosine(model.embed(metrics.quantize_8bit(x)), ft))
        knn, names = self._knn()
        nearest = knn.predict(torch.cat([fx, f0]).cpu())  # (2,): matched image, source
        norm = float(torch.linalg.vector_norm(dx))
        changed = moved(result) and norm > 0  # a run stopped at step 0 has no direction (8-bit rounding is none)
        return Probe(
            nearest=names[nearest[0]], source_nearest=names[nearest[1]], source=config.source, target=config.target,
            cos_to_target=float(metrics.cosine(fx, ft)), cos_to_source=float(metrics.cosine(fx, f0)),
            quantized_cosine=quantized, stop_cos=result.stop_cos,
            survives_8bit=quantized >= result.stop_cos,
            lipschitz=float(directional_lipschitz(model, x0, dx, [eps])[0]) if changed else float("nan"),
            secant=float(torch.linalg.vector_norm(fx - f0)) / norm if changed else float("nan"),
            eps=eps, linf_255=float(metrics.linf_255(dx)), l2_255=float(metrics.l2_255(dx)),
            psnr=float(metrics.psnr(x, x0)) if changed else float("nan"),
        )

    def explore(self, config: ExplorerConfig, on_update: Update | None = None, every: int = 5) -> Report:
        """Run, then probe; the call the widgets use. Never raises: errors come back as ``Report.error``,
        beside whatever was found before them."""
        try:
            self.run(config, on_update, every)
            return Report(self.result, self.probe())
        except Exception as err:  # shown to the reader as a message, not a traceback
            return Report(self.result, None, f"{type(err).__name__}: {err}")

    def figure(self, probe: Probe | None = None) -> Figure:
        """The latest result as one figure: source, matched image, amplified perturbation, target; curves below."""
        if self.result is None:
            raise RuntimeError("Nothing to show yet: run a match first.")
        result, config = self.result, self.config
        diff, caption = perturbation_panel(result)
        panels = [
            (result.sources[0], f"source: {config.source}"),
            (result.images[0], f"matched after {int(result.steps[0])} steps"),
            (diff, caption),
            (self.target[0], f"target: {config.target}"),
        ]
        fig = plt.figure(figsize=(11, 6.4))  # through pyplot, so that a notebook shows it like every other figure
        top, bottom = fig.subfigures(2, 1, height_ratios=[1, 0.85])  # images and curves laid out separately
        for ax, (image, title) in zip(top.subplots(1, 4), panels):
            ax.imshow(to_numpy_image(image))
            ax.set_title(title, fontsize=10)
            ax.axis("off")
        plot_curves(*bottom.subplots(1, 2), result)
        final = result.final
        budget = "none" if config.budget == "none" else f"{config.budget} {config.radius_255:g}/255"
        headline = (f"{config.model} · {config.step_rule}, budget {budget} · cosine {final['cosine'][0]:.4f}, "
                    f"L-inf {final['linf_255'][0]:.1f}/255 ({STOPPED_BY[result.stopped_by]})")
        if probe is not None:
            headline += (f"\nk-NN sees the {probe.looks_like} ({probe.nearest}); "
                         f"8-bit cosine {probe.quantized_cosine:.4f}; directional Lipschitz {probe.lipschitz:.3g}")
        fig.suptitle(headline, fontsize=11)
        return fig


def status_line(step: int, result: MatchResult, total: int) -> str:
    """One line of progress: step, cosine, loss, perturbation size, time."""
    final = result.final
    return (f"step {step}/{total} · cosine {final['cosine'][0]:.4f} · loss {final['loss'][0]:.3g} · "
            f"L-inf {final['linf_255'][0]:.1f}/255 · {result.elapsed_s:.1f} s")


class Explorer:
    """The widgets around an :class:`ExplorerSession`; display it as the last expression of a cell."""

    def __init__(self, session: ExplorerSession, config: ExplorerConfig, every: int = 5) -> None:
        import ipywidgets as W

        self.session, self.defaults, self.every = session, config, every
        self._thread: threading.Thread | None = None
        photos = list(dict.fromkeys([*img.BUNDLED, config.source, config.target]))
        self.source = W.Dropdown(options=photos, value=config.source, description="source")
        self.target = W.Dropdown(options=photos, value=config.target, description="target")
        self.upload = W.FileUpload(accept="image/*", multiple=False, description="upload a photo")
        self.model = W.Combobox(options=list(MODEL_CHOICES), value=config.model, description="model",
                                placeholder="embedded, random:<timm name> or a timm name", ensure_option=False)
        self.img_size = W.BoundedIntText(value=config.img_size, min=16, max=1024, description="image px")
        self.step_rule = W.Dropdown(options=[(STEP_RULES[k].label, k) for k in STEP_RULES], value=config.step_rule,
                                     description="step rule")
        self.lr = W.FloatText(value=STEP_SIZES[config.step_rule] if config.lr is None else config.lr,
                              description="step size")
        self.budget = W.Dropdown(options=list(BUDGETS), value=config.budget, description="budget")
        self.radius = W.FloatText(value=config.radius_255, description="radius /255", disabled=config.budget == "none")
        self.max_steps = W.BoundedIntText(value=config.max_steps, min=1, max=100_000, description="max steps")
        self.stop_cos = W.BoundedFloatText(value=config.stop_cos, min=0.0, max=1.0, step=0.001,
                                           description="stop at cos")
        self.run_button = W.Button(description="Run", button_style="success", icon="play")
        self.stop_button = W.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.progress = W.IntProgress(value=0, min=0, max=config.max_steps, description="progress")
        self.status = W.HTML("Pick photos and settings, then press Run.")
        self.images = {k: W.Image(format="png", layout=W.Layout(width="180px", height="180px"))
                       for k in ("source", "matched", "perturbation", "target")}
        self.captions = {k: W.Label(k) for k in self.images}
        self.curves = W.Image(format="png", layout=W.Layout(width="640px"))
        self.ab = W.ToggleButtons(options=list(AB), value="A: source", description="flicker", disabled=True,
                                  tooltips=["the source photo", "the matched image, in the same place"])
        self.zoom = W.ToggleButtons(options=list(ZOOMS), value="1x", description="zoom")
        self.compare = W.Image(format="png")  # the A/B view: one image, swapped in place
        self.compare.add_class("vq-compare")
        self._compared: dict[str, torch.Tensor] = {}  # "source", "matched" -> (3, H, W) of the latest step
        self._clear_images()
        self.probe_table = W.HTML()

        self.step_rule.observe(lambda c: setattr(self.lr, "value", STEP_SIZES[c.new]), names="value")
        self.budget.observe(self._on_budget, names="value")
        self.upload.observe(self._on_upload, names="value")
        self.ab.observe(lambda _: self._show_compare(), names="value")
        self.zoom.observe(lambda _: self._show_compare(), names="value")
        self.run_button.on_click(self.on_run)
        self.stop_button.on_click(self.on_stop)
        pictures = W.HBox([W.VBox([self.captions[k], self.images[k]]) for k in self.images])
        self.widget = W.VBox([
            W.HBox([self.source, self.target, self.upload]),
            W.HBox([self.model, self.img_size]),
            W.HBox([self.step_rule, self.lr, self.max_steps]),
            W.HBox([self.budget, self.radius, self.stop_cos]),
            W.HBox([self.run_button, self.stop_button, self.progress]),
            self.status, pictures, W.HBox([self.ab, self.zoom]), self.compare, self.curves, self.probe_table,
        ])

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def current_config(self) -> ExplorerConfig:
        """The settings the widgets show now."""
        return replace(
            self.defaults, source=self.source.value, target=self.target.value, model=self.model.value.strip(),
            img_size=self.img_size.value, step_rule=self.step_rule.value, lr=self.lr.value, budget=self.budget.value,
            radius_255=self.radius.value, max_steps=self.max_steps.value, stop_cos=self.stop_cos.value,
        )

    def _on_budget(self, change) -> None:
        self.radius.value, self.radius.disabled = BUDGETS[change.new], change.new == "none"

    def _on_upload(self, change) -> None:
        for file in change.new:  # ipywidgets 8: a tuple of dicts with name and content
            try:
                name = self.session.add_upload(file["name"], bytes(file["content"]))
            except Exception as err:  # an unreadable file: say so, keep the explorer usable
                self._say(f"Could not use {file['name']}: {err}", error=True)
                continue
            for dropdown in (self.source, self.target):
                dropdown.options = list(dict.fromkeys([*dropdown.options, name]))
            self.source.value = name
            self._say(f"Uploaded {file['name']}: now the source (pick it as the target instead if you like).")

    def _say(self, text: str, error: bool = False) -> None:
        text = html.escape(text)
        self.status.value = f"<span style='color:#b00020'>{text}</span>" if error else text

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def on_run(self, _=None) -> None:
        """Start a match on a background thread (so Stop stays clickable); ignored while one runs."""
        if self.running:
            return
        config = self.current_config()
        self.progress.max, self.progress.value = config.max_steps, 0
        self.probe_table.value = ""
        self._say(f"Loading {config.model} and the photos ...")
        self.run_button.disabled, self.stop_button.disabled = True, False
        self._thread = threading.Thread(target=self._work, args=(config,), daemon=True)
        self._thread.start()

    def on_stop(self, _=None) -> None:
        self.session.stop()
        self._say("Stopping after the current step ...")

    def wait(self, timeout: float | None = None) -> None:
        """Block until the running match (if any) has finished; for scripts and tests."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _work(self, config: ExplorerConfig) -> None:
        try:
            report = self.session.explore(config, on_update=self._show_progress, every=self.every)
            self.show(report.result, report.probe, report.error)
        finally:
            self.run_button.disabled, self.stop_button.disabled = False, True

    def _clear_images(self) -> None:
        """The empty state (before a run, or after one that failed before any step): gray tiles, no icons."""
        for key, image in self.images.items():
            image.value = PLACEHOLDER
            self.captions[key].value = f"{key}: not run yet"
        self.curves.value = b""
        self.curves.layout.display = "none"
        self._compared = {}
        self.ab.disabled = True
        self._show_compare()

    def _show_compare(self) -> None:
        """The A/B view: the toggled image's exact 8-bit pixels at the chosen zoom, sized to show each pixel as a
        whole square (the same place and size for A and B); the gray tile before a run."""
        zoom = ZOOMS[self.zoom.value]
        image = self._compared.get(AB[self.ab.value])
        if image is None:
            self.compare.value = PLACEHOLDER
            self.compare.layout.width = self.compare.layout.height = f"{180 * zoom}px"
            return
        h, w = image.shape[-2:]
        self.compare.value = png_bytes(image, zoom)
        self.compare.layout.width, self.compare.layout.height = f"{w * zoom}px", f"{h * zoom}px"

    def _show_progress(self, step: int, result: MatchResult) -> None:
        self._show(result, status_line(step, result, self.progress.max), step)

    def _show(self, result: MatchResult, status: str, step: int) -> None:
        """Images, curves, progress and status of one step, rendered first and then shown together."""
        diff, caption = perturbation_panel(result)
        shown = {"source": result.sources[0], "matched": result.images[0], "perturbation": diff,
                 "target": self.session.target[0]}
        pictures = {key: png_bytes(image) for key, image in shown.items()}
        curves = figure_png(curves_figure(result))
        for key, data in pictures.items():
            self.images[key].value = data
        for key in ("source", "target"):
            self.captions[key].value = key
        self.captions["perturbation"].value = caption
        self.captions["matched"].value = f"matched (step {int(result.steps[0])})"
        self.curves.value, self.curves.layout.display = curves, None
        self._compared = {"source": result.sources[0], "matched": result.images[0]}  # each (3, S, S)
        self.ab.disabled = False
        self._show_compare()
        self.progress.value = step
        self._say(status)

    def show(self, result: MatchResult | None, probe: Probe | None = None, error: str = "") -> None:
        """Show a finished (or stopped) result, its probe, and an error message if there was one."""
        if result is None:
            self._clear_images()
        else:
            steps = int(result.steps[0])
            line = f"{status_line(steps, result, self.progress.max)} · {STOPPED_BY[result.stopped_by]}"
            self._show(result, line, steps)
        if probe is not None:
            rows = "".join(f"<tr><td>{html.escape(q)}</td><td><b>{html.escape(v)}</b></td></tr>"
                           for q, v in probe.rows())
            self.probe_table.value = f"<table>{rows}</table>"
        if error:
            self._say(error, error=True)


def build_explorer(config: ExplorerConfig | None = None, session: ExplorerSession | None = None,
                   every: int = 5) -> Explorer:
    """The explorer's widgets, set to ``config``, over ``session`` (a new one by default); live views every
    ``every`` steps."""
    return Explorer(session or ExplorerSession(), config or ExplorerConfig(), every)
