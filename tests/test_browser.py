"""The book and the explorer in a real browser: headless Debian Chromium driven by Playwright, all on 127.0.0.1.

Book: built from the session's smoke run, served by a local http.server; every page loads without console errors,
every image loads, no internal link is broken, the summary has one row per recorded claim, notebook 01's flicker
images keep their animated PNG bytes and animate, nothing is requested from elsewhere. Explorer: JupyterLab on a
copy of explorer.ipynb at small settings; the widgets render, Run reports a rising cosine, Stop keeps the result
and fills the probe table, the A/B toggle swaps source and matched pixels in place and zoom 2x doubles the size, a
bad model name shows the red message.
"""
from __future__ import annotations

import html.parser
import json
import re
import struct
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest

from vitequiv.paths import notebooks_dir
from vitequiv.run import book

from browser_helpers import chromium, jupyterlab, outside, require_chromium, screenshot_on_failure, static_server

require_chromium()  # here, not in a fixture: the session's smoke run would be set up before any module fixture

PAGE_TIMEOUT_MS = 60_000
# --- the book --------------------------------------------------------------------------------------------------


@dataclass
class Visit:
    """What one page of the book did in the browser."""

    errors: list[str] = field(default_factory=list)  # console errors, uncaught exceptions, failed responses
    broken_images: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)  # absolute URLs of every <a href>


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def site(smoke_suite, tmp_path_factory):
    """The book of the smoke run, served on 127.0.0.1: (site folder, base URL)."""
    out = book.build(smoke_suite.figures, tmp_path_factory.mktemp("book") / "site")
    with static_server(out) as base:
        yield out, base


@pytest.fixture(scope="module")
def visits(site, browser) -> tuple[dict[str, Visit], list[str]]:
    """Every HTML page of the book visited once: what each did, and every URL the browser requested."""
    out, base = site
    context = browser.new_context()
    requested: list[str] = []
    context.on("request", lambda request: requested.append(request.url))
    page = context.new_page()
    current = Visit()
    page.on("console", lambda msg: msg.type == "error" and current.errors.append(f"console: {msg.text}"))
    page.on("pageerror", lambda err: current.errors.append(f"exception: {err}"))
    page.on("response", lambda r: r.status >= 400 and current.errors.append(f"HTTP {r.status}: {r.url}"))
    results = {}
    pages = [p.relative_to(out) for p in out.rglob("*.html")]  # not the theme's template files under _static/
    for path in sorted(p.as_posix() for p in pages if not any(part.startswith("_") for part in p.parts)):
        current = results[path] = Visit()
        page.goto(f"{base}/{path}", wait_until="networkidle", timeout=PAGE_TIMEOUT_MS)
        current.broken_images = page.evaluate("""async () => {
            const images = [...document.images];
            images.forEach(img => { img.loading = "eager"; });
            const settled = img => img.complete ? null : new Promise(r => { img.onload = img.onerror = r; });
            await Promise.all(images.map(settled));
            return images.filter(img => img.naturalWidth === 0).map(img => img.currentSrc || img.src);
        }""")
        current.links = page.evaluate("() => [...document.querySelectorAll('a[href]')].map(a => a.href)")
    context.close()
    return results, requested


@pytest.mark.notebooks
def test_every_page_loads_without_errors(visits):
    pages, _ = visits
    assert len(pages) >= 14, f"expected the front page, 10 notebooks, figures and exercises; got {sorted(pages)}"
    failures = {path: v.errors for path, v in pages.items() if v.errors}
    assert not failures, f"pages with console errors or failed loads: {failures}"


@pytest.mark.notebooks
def test_every_image_loads(visits):
    pages, _ = visits
    broken = {path: v.broken_images for path, v in pages.items() if v.broken_images}
    assert not broken, f"images that did not load (naturalWidth 0): {broken}"


@pytest.mark.notebooks
def test_nothing_is_requested_from_outside(site, visits):
    _, requested = visits
    assert requested and not outside(requested), f"requests that left 127.0.0.1: {outside(requested)}"


class _Ids(html.parser.HTMLParser):
    """Every id="..." in a page: the anchors that #fragment links may point to."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs) -> None:
        self.ids.update(value for name, value in attrs if name == "id" and value)


@pytest.mark.notebooks
def test_no_internal_link_is_broken(site, visits):
    _, base = site
    pages, _ = visits
    links = {link for v in pages.values() for link in v.links if link.startswith(base)}
    assert len(links) > 20
    ids: dict[str, set[str]] = {}
    broken = []
    for link in sorted(links):
        url, _, fragment = link.partition("#")
        if url not in ids:
            try:
                with urllib.request.urlopen(url, timeout=30) as response:
                    body = response.read()
            except OSError as err:
                broken.append(f"{link}: {err}")
                ids[url] = set()
                continue
            parser = _Ids()
            if url.endswith(".html") or url.endswith("/"):
                parser.feed(body.decode("utf-8", errors="replace"))
            ids[url] = parser.ids
        if fragment and urllib.parse.unquote(fragment) not in ids[url]:
            broken.append(f"{link}: no element with id {fragment!r}")
    assert not broken, "broken internal links:\n" + "\n".join(broken)


@pytest.mark.notebooks
def test_summary_has_one_row_per_claim(site, browser, smoke_suite):
    _, base = site
    recorded = []  # (notebook, claim, verdict) straight from the run's manifests
    for name in (r.notebook for r in smoke_suite.records.values()):
        manifest = smoke_suite.figures / name / "manifest.json"
        if manifest.exists():
            recorded += [(name, c, e["verdict"]) for c, e in json.loads(manifest.read_text())["claims"].items()]
    assert recorded, "the smoke run recorded no claim"
    page = browser.new_page()
    page.goto(f"{base}/index.html", timeout=PAGE_TIMEOUT_MS)
    table = page.locator("table", has=page.locator("th", has_text="verdict"))
    rows = table.locator("tbody tr").evaluate_all(
        "rows => rows.map(r => [...r.cells].map(c => [c.innerText.trim(), c.querySelector('a')?.href || '']))")
    page.close()
    shown = [(Path(urllib.parse.urlparse(nb[1]).path).stem, claim[0], verdict[0])
             for claim, *_, verdict, nb in rows]
    assert shown == recorded


@pytest.mark.notebooks
def test_each_notebook_page_says_how_it_ran(site, smoke_suite):
    out, _ = site
    for name, record in smoke_suite.records.items():
        text = (out / f"{name}.html").read_text()
        expected = "Executed by" if record.status == "ok" else "failed"
        assert expected in text, f"{name} ({record.status}): its page does not say {expected!r}"


def apng_frames(data: bytes) -> int:
    """The frame count an animated PNG declares in its acTL chunk (0: none, a still PNG)."""
    at = data.find(b"acTL")
    return struct.unpack(">I", data[at + 4:at + 8])[0] if at >= 0 else 0


@pytest.mark.notebooks
def test_flicker_images_keep_their_bytes_and_animate(site, browser, smoke_suite, tmp_path):
    out, base = site

    def flickers_of(notebook: str) -> set[bytes]:
        folder = smoke_suite.figures / notebook
        manifest = json.loads((folder / "manifest.json").read_text())
        return {(folder / entry["files"][0]).read_bytes() for name, entry in manifest["figures"].items()
                if name.startswith("flicker_")}

    first = flickers_of("01_embedding_matching")
    n_pairs = json.loads((smoke_suite.figures / "01_embedding_matching" / "manifest.json").read_text())["parameters"][
        "N_PAIRS"]
    assert len(first) == n_pairs, "one flicker per pair of notebook 01"
    everyone = set().union(*(flickers_of(name) for name in smoke_suite.records
                             if (smoke_suite.figures / name / "manifest.json").is_file()))
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    requested: list[str] = []
    context.on("request", lambda request: requested.append(request.url))
    page = context.new_page()
    for path, flickers in (("01_embedding_matching.html", first), ("figures.html", everyone)):  # the index: all
        page.goto(f"{base}/{path}", wait_until="networkidle", timeout=PAGE_TIMEOUT_MS)
        sources = page.evaluate("() => [...document.images].map(i => i.getAttribute('src'))")
        shown = {src: (out / path).parent.joinpath(src).read_bytes() for src in sources}
        animated = [src for src, data in shown.items() if apng_frames(data) >= 2]
        assert {shown[src] for src in animated} == flickers, f"{path}: the flicker PNGs are not shown byte for byte"
        flicker = page.locator(f"img[src='{animated[0]}']")
        flicker.scroll_into_view_if_needed()
        flicker.evaluate("img => img.decode()")
        shots = []
        for i in range(4):  # about two frames' worth at 600 ms a frame
            shots.append(flicker.screenshot(path=str(tmp_path / f"{Path(path).stem}_flicker_{i}.png")))
            time.sleep(0.35)
        assert len(set(shots)) >= 2, f"{path}: the flicker image did not change over {len(shots)} screenshots"
    context.close()
    assert not outside(requested), f"requests that left 127.0.0.1: {outside(requested)}"


# --- the explorer in JupyterLab ---------------------------------------------------------------------------------

# Small and quick settings for the parameters the explorer declares (the widgets start from them).
EXPLORER_SETTINGS = {"IMG_SIZE": 56, "STEPS": 10, "MAX_STEPS": 10, "DEVICE": "cpu"}
RUN_TIMEOUT_S = 300  # run-all on a busy 2-core machine: model load, one headless match, the probe
COSINE = re.compile(r"step (\d+)/100000 · cosine ([0-9.]+)")
STEPS_FIELD = "(max )?steps"  # the step budget's field


def explorer_copy(folder: Path) -> Path:
    """explorer.ipynb with a cell after its parameters cell that sets :data:`EXPLORER_SETTINGS`."""
    nb = nbformat.read(notebooks_dir() / "explorer.ipynb", as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    declared = set(re.findall(r"^([A-Z][A-Z0-9_]*)\s*(?::[^=]*)?=", nb.cells[at].source, flags=re.M))
    assert "IMG_SIZE" in declared, f"explorer.ipynb's parameters cell no longer declares IMG_SIZE: {declared}"
    settings = "\n".join(f"{k} = {v!r}" for k, v in EXPLORER_SETTINGS.items() if k in declared)
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell(settings))
    path = folder / "explorer.ipynb"
    nbformat.write(nb, path)
    return path


def field_input(page, label: str):
    """The <input> of the ipywidgets text field whose description matches ``label`` (a regular expression)."""
    box = page.locator(".widget-inline-hbox", has=page.locator("label.widget-label", has_text=re.compile(f"^{label}$")))
    return box.locator("input")


def set_field(page, label: str, value: str) -> None:
    field = field_input(page, label)
    field.fill(value)
    field.press("Enter")
    field.blur()


def run_all_cells(page) -> None:
    """Run every cell through JupyterLab's own command, wait until the kernel is done; fail on an error output."""
    page.evaluate("""async () => {
        const panel = window.jupyterapp.shell.currentWidget;
        await panel.context.ready;
        await panel.sessionContext.ready;
        await window.jupyterapp.commands.execute("notebook:run-all-cells");
    }""")
    page.wait_for_function("""() => {
        const panel = window.jupyterapp.shell.currentWidget;
        const cells = panel.content.widgets.filter(c => c.model.type === "code");
        return panel.sessionContext.session?.kernel?.status === "idle"
            && cells.every(c => c.model.executionCount !== null);
    }""", timeout=RUN_TIMEOUT_S * 1000, polling=500)
    errors = page.evaluate("""() => window.jupyterapp.shell.currentWidget.content.widgets
        .flatMap(c => c.model.type === "code" ? c.model.outputs.toJSON() : [])
        .filter(o => o.output_type === "error").map(o => o.ename + ": " + o.evalue)""")
    assert not errors, f"explorer.ipynb raised: {errors}"


SAME_PIXELS = """([a, b]) => {  // two <img>: do they hold the same decoded pixels?
    const pixels = img => {
        const canvas = document.createElement("canvas");
        [canvas.width, canvas.height] = [img.naturalWidth, img.naturalHeight];
        const context = canvas.getContext("2d");
        context.drawImage(img, 0, 0);
        return context.getImageData(0, 0, canvas.width, canvas.height).data.join(",");
    };
    return a.complete && b.complete && a.naturalWidth > 0 && pixels(a) === pixels(b);
}"""


def check_ab_toggle(page, notebook, shots: Path) -> None:
    """The A/B view shows the source's pixels, then, toggled, the matched image's in the same place; 2x doubles it.
    Screenshots of B at 1x and A at 2x go to ``shots``."""
    compare = notebook.locator("img.vq-compare")
    source, matched = (notebook.locator(".widget-image").nth(i) for i in (0, 1))  # the first two pictures
    handles = {k: v.element_handle() for k, v in (("compare", compare), ("source", source), ("matched", matched))}
    assert page.evaluate(f"([a, b]) => !({SAME_PIXELS})([a, b])", [handles["source"], handles["matched"]]), (
        "after Stop the matched image should differ from the source")
    box = compare.bounding_box()
    page.wait_for_function(SAME_PIXELS, arg=[handles["compare"], handles["source"]], timeout=60_000)
    notebook.locator("button", has_text="B: matched").click()
    page.wait_for_function(SAME_PIXELS, arg=[handles["compare"], handles["matched"]], timeout=60_000)
    assert compare.bounding_box() == box, "B must be shown in the same place and size as A"
    page.screenshot(path=str(shots / "explorer_ab_B.png"), full_page=True)
    notebook.locator("button", has_text="A: source").click()
    page.wait_for_function(SAME_PIXELS, arg=[handles["compare"], handles["source"]], timeout=60_000)
    notebook.locator("button", has_text=re.compile(r"^\s*2x\s*$")).click()
    page.wait_for_function("([img, w]) => Math.abs(img.getBoundingClientRect().width - 2 * w) < 1",
                           arg=[handles["compare"], box["width"]], timeout=60_000)
    zoomed = compare.bounding_box()
    assert abs(zoomed["height"] - 2 * box["height"]) < 1
    assert abs(zoomed["x"] - box["x"]) < 1 and abs(zoomed["y"] - box["y"]) < 1, "zoom keeps the image's place"
    assert compare.evaluate("img => img.naturalWidth") == 2 * source.evaluate("img => img.naturalWidth")
    page.screenshot(path=str(shots / "explorer_ab_A_2x.png"), full_page=True)


def test_explorer_in_jupyterlab(tmp_path, browser):
    root = tmp_path / "lab"
    root.mkdir()
    explorer_copy(root)
    (tmp_path / "figures").mkdir()  # VITEQUIV_FIGURES must name an existing folder
    env = {"HF_HUB_OFFLINE": "1", "VITEQUIV_FIGURES": str(tmp_path / "figures")}  # nothing lands in figures/
    with jupyterlab(root, env, tmp_path / "jupyterlab.log") as (base, token):
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        requested: list[str] = []
        context.on("request", lambda request: requested.append(request.url))
        page = context.new_page()
        with screenshot_on_failure(page, tmp_path / "explorer_failure.png"):
            page.goto(f"{base}/lab/tree/explorer.ipynb?token={token}", timeout=PAGE_TIMEOUT_MS)
            page.wait_for_function("() => window.jupyterapp?.shell?.currentWidget?.content?.widgets?.length > 0",
                                   timeout=PAGE_TIMEOUT_MS)
            run_all_cells(page)

            notebook = page.locator(".jp-Notebook")
            notebook.locator(".widget-vbox .widget-button").first.wait_for(timeout=PAGE_TIMEOUT_MS)
            text = notebook.inner_text()
            assert "Loading widget" not in text and "VBox(children" not in text, "the widgets did not render"
            shown = notebook.locator(".widget-html")
            assert shown.count() == 2, "expected two HTML widgets: the status line and the probe table"
            status, probe = shown.nth(0), shown.nth(1)
            run = notebook.locator("button.widget-button", has_text=re.compile(r"^\s*Run\s*$"))
            stop = notebook.locator("button.widget-button", has_text=re.compile(r"^\s*Stop\s*$"))

            set_field(page, STEPS_FIELD, "100000")
            set_field(page, "stop at cos", "1")
            run.click()
            readings: list[tuple[int, float]] = []
            start = time.monotonic()
            while time.monotonic() - start < 30 and not (len(readings) >= 3 and readings[-1][1] > readings[0][1]):
                match = COSINE.search(status.inner_text())
                if match and (not readings or int(match[1]) > readings[-1][0]):
                    readings.append((int(match[1]), float(match[2])))
                time.sleep(0.1)
            assert len(readings) >= 3 and readings[-1][1] > readings[0][1], (
                f"the status line did not report a rising cosine within 30 s: {readings}; now {status.inner_text()!r}")
            rising_s = time.monotonic() - start

            stop.click()
            page.wait_for_function("e => e.innerText.includes('stopped')", arg=status.element_handle(), timeout=60_000)
            steps = int(COSINE.search(status.inner_text())[1])
            assert steps >= readings[-1][0], "Stop lost the steps already made"
            page.wait_for_function("e => e.querySelectorAll('tr').length > 0", arg=probe.element_handle(),
                                   timeout=60_000)
            assert "8-bit" in probe.inner_text(), f"the probe table: {probe.inner_text()!r}"
            pictures = notebook.locator(".widget-image").evaluate_all("imgs => imgs.map(i => i.naturalWidth)")
            assert len(pictures) >= 4 and all(w > 0 for w in pictures), f"images after Stop: {pictures}"

            check_ab_toggle(page, notebook, tmp_path)

            set_field(page, "model", "no_such_vit")
            run.click()
            message = status.locator("span")
            message.wait_for(timeout=60_000)
            assert "Unknown model" in message.inner_text()
            assert message.evaluate("e => getComputedStyle(e).color") == "rgb(176, 0, 32)"  # #b00020
        context.close()
    assert not outside(requested), f"JupyterLab requested from outside 127.0.0.1: {outside(requested)}"
    print(f"explorer: rising cosine reported {rising_s:.1f} s after Run: {readings}")
