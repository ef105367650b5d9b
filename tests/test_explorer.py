"""The explorer's session logic on a tiny model, headlessly; its widgets built and clicked without a browser."""
import datetime
import io
import time

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from PIL import Image

from vitequiv import explorer as ex
from vitequiv.images import BUNDLED, ImageLoadError

WAIT_S = 300  # an upper bound for a background run on a busy machine; runs take seconds
TINY = dict(model="random:vit_tiny_patch16_224", img_size=32, model_kwargs={"depth": 2}, device="cpu")


def tiny_config(**changes) -> ex.ExplorerConfig:
    settings = TINY | dict(source="cat", target="rocket", step_rule="adam", lr=0.01, max_steps=8)
    return ex.ExplorerConfig(**(settings | changes))


@pytest.fixture(scope="module")
def session() -> ex.ExplorerSession:
    return ex.ExplorerSession()


def test_run_moves_towards_target_and_probe_reports(session):
    result = session.run(tiny_config())
    cosine = result.history["cosine"][:, 0]
    assert result.stopped_by in ("max_steps", "converged") and cosine[-1] > cosine[0]
    probe = session.probe()
    assert probe.nearest in BUNDLED and probe.source_nearest in BUNDLED
    assert probe.looks_like in ("target", "source", "another photo")
    assert probe.cos_to_target == pytest.approx(result.final["cosine"][0], abs=1e-4)
    assert probe.quantized_cosine == pytest.approx(result.quantized_cosine[0], abs=1e-4)
    assert np.isfinite([probe.lipschitz, probe.secant, probe.linf_255, probe.l2_255, probe.psnr]).all()
    assert probe.lipschitz > 0 and probe.linf_255 > 0
    assert len(probe.rows()) == 9
    fig = session.figure(probe)
    assert len(fig.axes) == 6
    plt.close(fig)


RULES_AND_BUDGETS = [*((rule, "none") for rule in ex.STEP_RULES), ("sign", "L-inf"), ("normalized", "L2")]


@pytest.mark.parametrize("rule, budget", RULES_AND_BUDGETS)
def test_every_step_rule_and_budget_runs(session, rule, budget):
    result = session.run(tiny_config(step_rule=rule, lr=None, budget=budget, radius_255=4.0, max_steps=2))
    assert result.steps[0] == 2 and result.final["loss"][0] < result.history["loss"][0, 0]
    if budget != "none":
        size = result.final["linf_255" if budget == "L-inf" else "l2_255"][0]
        assert 0 < size <= 4.0 + 1e-3


def test_stop_keeps_the_partial_result(session):
    def on_update(step, so_far):
        if step == 3:
            session.stop()

    result = session.run(tiny_config(max_steps=10_000, stop_cos=1.0), on_update, every=1)
    assert result.stopped_by == "callback" and result.steps.tolist() == [3]
    assert session.result is result and len(result.history["loss"]) == 4
    assert not torch.equal(result.images, result.sources)
    assert session.probe().linf_255 > 0


def test_errors_come_back_as_messages(session):
    assert "UnknownModelError" in session.explore(tiny_config(model="no_such_vit")).error
    offline = session.explore(tiny_config(model="vit_tiny_patch16_224.augreg_in21k_ft_in1k"))
    assert "WeightsUnavailableError" in offline.error and offline.result is None
    assert "not found" in session.explore(tiny_config(source="no/such/photo.png")).error
    assert "radius" in session.explore(tiny_config(budget="L2", radius_255=0)).error


def png_file() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((40, 60, 3), 200, dtype=np.uint8)).save(buffer, format="png")
    return buffer.getvalue()


def test_uploaded_photo_is_matched(session):
    name = session.add_upload("gray.png", png_file())
    assert session.explore(tiny_config(source=name, max_steps=2)).error == ""
    with pytest.raises(ImageLoadError, match="bad.png"):
        session.add_upload("bad.png", b"not an image")


def test_widgets_run_update_and_stop(session):
    app = ex.build_explorer(tiny_config(max_steps=6), session, every=2)
    assert app.widget.children and app.current_config().model == TINY["model"]
    app.run_button.click()
    app.wait(WAIT_S)
    assert not app.running and not app.run_button.disabled
    for key in ("source", "matched", "perturbation", "target"):
        assert bytes(app.images[key].value).startswith(b"\x89PNG")
    assert bytes(app.curves.value).startswith(b"\x89PNG") and "8-bit" in app.probe_table.value
    assert app.progress.value == 6

    app.max_steps.value, app.stop_cos.value = 10_000, 1.0
    app.run_button.click()
    deadline = time.monotonic() + WAIT_S
    while app.progress.value < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    app.stop_button.click()
    app.wait(WAIT_S)
    assert app.session.result.stopped_by == "callback" and "stopped" in app.status.value
    assert 2 <= app.progress.value < 10_000 and "8-bit" in app.probe_table.value


def uploaded(name: str, data: bytes) -> dict:
    """One file as ipywidgets 8's FileUpload holds it after a browser upload."""
    when = datetime.datetime.now(datetime.timezone.utc)
    return {"name": name, "type": "image/png", "size": len(data), "content": memoryview(data), "last_modified": when}


def test_widget_upload_and_errors_as_messages(session):
    app = ex.build_explorer(tiny_config(), session)
    app.upload.value = (uploaded("gray.png", png_file()),)
    assert app.source.value == "upload:gray.png" and "upload:gray.png" in app.target.options
    app.upload.value = (uploaded("bad.png", b"not an image"),)
    assert "Could not use bad.png" in app.status.value and "BytesIO" not in app.status.value
    app.model.value = "no_such_vit"
    app.run_button.click()
    app.wait(WAIT_S)
    assert "Unknown model" in app.status.value and "&lt;timm name&gt;" in app.status.value
    assert app.probe_table.value == ""


# ------------------------------------------------------------------------------------------ widget states


def test_empty_state_shows_gray_tiles_not_broken_images(session):
    app = ex.build_explorer(tiny_config(), session)
    for key, image in app.images.items():
        assert bytes(image.value) == ex.PLACEHOLDER and bytes(image.value).startswith(b"\x89PNG")
        assert "not run yet" in app.captions[key].value
    assert app.curves.layout.display == "none"


def test_stopped_before_any_step_says_so(session):
    result = session.run(tiny_config(), on_update=lambda step, r: session.stop())  # stops after step 0
    assert result.steps[0] == 0 and not ex.moved(result)
    probe = session.probe()
    values = dict(probe.rows())
    assert values["PSNR of the matched image (dB)"] == ex.NO_CHANGE
    assert all("nan" not in v and "inf" not in v for v in values.values()), values
    app = ex.build_explorer(tiny_config(), session)
    app.show(result, probe)
    assert ex.NO_CHANGE in app.captions["perturbation"].value and "×" not in app.captions["perturbation"].value
    assert "step 0/" in app.status.value and "stopped" in app.status.value
    fig = session.figure(probe)
    assert any(ex.NO_CHANGE in ax.get_title() for ax in fig.axes)
    plt.close(fig)


def test_failed_run_returns_to_the_empty_state(session):
    app = ex.build_explorer(tiny_config(model="no_such_vit"), session)
    app.run_button.click()
    app.wait(WAIT_S)
    assert "Unknown model" in app.status.value
    assert all(bytes(image.value) == ex.PLACEHOLDER for image in app.images.values())


def test_images_and_status_come_from_the_same_step(session):
    app = ex.build_explorer(tiny_config(max_steps=6), session, every=1)
    seen = []
    original = app._say

    def record(text, error=False):
        original(text, error)
        if text.startswith("step "):
            seen.append((text.split("/")[0], app.captions["matched"].value))

    app._say = record
    app.run_button.click()
    app.wait(WAIT_S)
    assert seen and all(status.split()[1] == caption.split("step ")[1].rstrip(")") for status, caption in seen), seen


def decoded(data) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(bytes(data))).convert("RGB"))


def test_ab_toggle_swaps_source_and_matched_in_place_at_every_zoom(session):
    app = ex.build_explorer(tiny_config(max_steps=4), session)
    assert app.ab.disabled and bytes(app.compare.value) == ex.PLACEHOLDER, "nothing to compare before a run"
    app.run_button.click()
    app.wait(WAIT_S)
    result = session.result
    exact = {key: (ex.metrics.quantize_8bit(x[None])[0] * 255).round().byte().permute(1, 2, 0).numpy()
             for key, x in (("source", result.sources[0]), ("matched", result.images[0]))}  # (S, S, 3) each
    assert not app.ab.disabled and not np.array_equal(exact["source"], exact["matched"])
    for label, zoom in ex.ZOOMS.items():
        app.zoom.value = label
        for side, key in ex.AB.items():
            app.ab.value = side
            shown = decoded(app.compare.value)
            np.testing.assert_array_equal(shown, exact[key].repeat(zoom, 0).repeat(zoom, 1))
            assert (app.compare.layout.width, app.compare.layout.height) == (f"{32 * zoom}px", f"{32 * zoom}px")
