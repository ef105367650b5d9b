"""Real-browser testing: Debian's Chromium driven by Playwright, a local static server, a local JupyterLab.

Everything listens on 127.0.0.1 only. Playwright must not download a browser of its own (that fails offline):
it drives ``/usr/bin/chromium``; where that is missing, the tests that need it skip and say why.
"""
from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]
LAB_SETTINGS = {  # no news or update checks; every cell kept in the page, so that locators find it
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
}


def outside(urls: list[str]) -> list[str]:
    """The URLs among ``urls`` that leave this machine: all but 127.0.0.1, data: and a local page's blob: URLs."""
    def local(url: str) -> bool:
        url = url.removeprefix("blob:")
        return url.startswith("data:") or urllib.parse.urlsplit(url).hostname == "127.0.0.1"

    return sorted({url for url in urls if not local(url)})


def require_chromium() -> None:
    """Skip the calling test, or module, unless Playwright and Debian's Chromium are both installed."""
    pytest.importorskip("playwright.sync_api", reason="the Python package playwright is not installed")
    if not CHROMIUM.exists():
        pytest.skip(f"no browser: {CHROMIUM} is missing (Debian package chromium; .ci/run installs it with apt-get)",
                    allow_module_level=True)


@contextlib.contextmanager
def chromium() -> Iterator:
    """A headless Chromium (Playwright ``Browser``) for the duration of the block."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass


@contextlib.contextmanager
def static_server(root: Path) -> Iterator[str]:
    """Serve ``root`` on 127.0.0.1 (a free port) from a thread, as ``python -m http.server`` would; yield its URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def jupyterlab(root: Path, env: dict[str, str], log: Path, timeout: float = 120) -> Iterator[tuple[str, str]]:
    """JupyterLab on 127.0.0.1 serving ``root`` with a random token; yield (base URL, token).

    Its settings live under ``root/.lab`` (:data:`LAB_SETTINGS`; nothing written to the user's profile); the
    server is stopped by its process id at the end, its kernels with it.
    """
    port, token = free_port(), secrets.token_hex(16)
    for plugin, values in LAB_SETTINGS.items():
        path = root / ".lab" / "settings" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    lab_env = os.environ | env | {
        "JUPYTERLAB_SETTINGS_DIR": str(root / ".lab" / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(root / ".lab" / "workspaces"),
        "JUPYTER_RUNTIME_DIR": str(root / ".lab" / "runtime"),
    }
    command = [
        str(Path(sys.executable).with_name("jupyter")), "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ] + (["--allow-root"] if os.geteuid() == 0 else [])
    with open(log, "w") as out:
        server = subprocess.Popen(command, env=lab_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {server.returncode}; its log: {log}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab did not answer within {timeout:.0f} s; its log: {log}") from None
                time.sleep(0.5)
        yield base, token
    finally:
        stop(server)


def stop(process: subprocess.Popen, grace: float = 20) -> None:
    """End a server started in its own session: SIGTERM to its process id, then SIGKILL to its group if needed."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # kernels it started, if any outlived it
    process.wait(grace)


@contextlib.contextmanager
def screenshot_on_failure(page, path: Path) -> Iterator[None]:
    """Save a full-page screenshot to ``path`` when the block fails, then let the failure through."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            page.screenshot(path=str(path), full_page=True)
            print(f"screenshot of the failure: {path}")
        raise
