"""vitequiv.hub against real local servers on 127.0.0.1: a bounded answer whatever the server does.

The suite runs with HF_HUB_OFFLINE=1 (conftest.py); tests of the online paths turn it off with the ``online``
fixture, which also sets what huggingface_hub would have read at import (it reads HF_ENDPOINT and
HF_HUB_OFFLINE once). One test starts a fresh Python to check that reading itself.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator

import pytest

import vitequiv
from vitequiv import hub
from vitequiv.clip import ZeroShotCLIP, ZeroShotUnavailableError

PROXY_VARS = [v for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy") for v in (name, name.upper())]
FILE = ("timm/vitequiv-test-model", "model.safetensors")


# ------------------------------------------------------------------------------------ local servers


Handler = Callable[[socket.socket, threading.Event], None]


@contextlib.contextmanager
def serve(handle: Handler) -> Iterator[str]:
    """A TCP server on 127.0.0.1 that runs ``handle(conn, stop)`` per connection in a thread; yields "host:port"."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.05)
    stop, conns = threading.Event(), []

    def accept_loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conns.append(conn)
            threading.Thread(target=handle, args=(conn, stop), daemon=True).start()

    thread = threading.Thread(target=accept_loop, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in conns:
            conn.close()
        server.close()


def read_head(conn: socket.socket) -> str:
    """The request line and headers of one HTTP request."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.decode("latin-1")


def silent(conn: socket.socket, stop: threading.Event) -> None:
    """Accept and never answer."""
    stop.wait()


def trickle(conn: socket.socket, stop: threading.Event) -> None:
    """Answer one header line every 0.1 s, forever: no socket timeout ever fires."""
    read_head(conn)
    conn.sendall(b"HTTP/1.1 200 OK\r\n")
    while not stop.wait(0.1):
        with contextlib.suppress(OSError):
            conn.sendall(b"X-Wait: 1\r\n")


def recording(answer: Callable[[str], bytes]) -> tuple[Handler, list[str]]:
    """A handler that records each request line and sends ``answer(request_line)``."""
    seen: list[str] = []

    def handle(conn: socket.socket, stop: threading.Event) -> None:
        line = read_head(conn).split("\r\n", 1)[0]
        seen.append(line)
        with contextlib.suppress(OSError):
            conn.sendall(answer(line))
            conn.close()

    return handle, seen


def ok(line: str) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def proxy_answer(line: str) -> bytes:
    """A proxy that serves plain HTTP itself and refuses every CONNECT tunnel."""
    return b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n" if line.startswith("CONNECT") else ok(line)


def closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture
def online(monkeypatch, tmp_path) -> Callable[[str], None]:
    """Offline mode off, no proxies, an empty HF cache; returns ``use_endpoint(url)``, which sets HF_ENDPOINT as a
    fresh import would see it."""
    from huggingface_hub import constants

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT", hub.TIMEOUT_ENV, *PROXY_VARS):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))

    def use_endpoint(url: str) -> None:
        monkeypatch.setenv("HF_ENDPOINT", url)
        monkeypatch.setattr(constants, "ENDPOINT", url)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")

    return use_endpoint


# ------------------------------------------------------------------------------------ servers that never answer


@pytest.mark.parametrize("handler, detail", [(silent, "it accepted the connection but sent no answer"),
                                             (trickle, "no complete answer within 1 s")], ids=["silent", "trickle"])
def test_a_server_that_never_answers_is_given_up_on_within_the_deadline(online, handler, detail):
    with serve(handler) as address:
        start = time.perf_counter()
        result = hub.probe(f"http://{address}/x", timeout=1.0)
        elapsed = time.perf_counter() - start
    assert result.access is hub.Access.TIMED_OUT and result.detail == detail
    assert 0.8 < elapsed < 1.5, f"took {elapsed:.2f} s for a 1 s deadline"


def test_load_model_fails_within_the_default_bound_on_a_silent_endpoint(online, capsys):
    import timm  # noqa: F401 - imported before the clock starts: it takes seconds on a busy machine

    with serve(silent) as address:
        online(f"http://{address}")
        start = time.perf_counter()
        with pytest.raises(vitequiv.WeightsUnavailableError) as err:
            vitequiv.load_model("vit_tiny_patch16_224", device="cpu")
        elapsed = time.perf_counter() - start
    with capsys.disabled():
        print(f"\n[time to fail on a silent endpoint: {elapsed:.2f} s, deadline {hub.DEFAULT_TIMEOUT_S:g} s]")
    assert 0.8 * hub.DEFAULT_TIMEOUT_S < elapsed < hub.DEFAULT_TIMEOUT_S + 1.0
    message = str(err.value)
    for part in ("'vit_tiny_patch16_224'", f"http://{address}", "did not answer in time", "'embedded'",
                 "Hugging Face cache", hub.TIMEOUT_ENV):
        assert part in message, f"{part!r} missing from: {message}"


def test_clip_weights_fail_within_the_bound_on_a_silent_endpoint(online, monkeypatch):
    clip_tower = vitequiv.load_model("random:vit_base_patch32_clip_224", img_size=32, depth=1, num_classes=512,
                                     device="cpu")
    fake = types.SimpleNamespace(
        get_pretrained_cfg=lambda name, tag: {"hf_hub": "timm/not-cached-vitequiv-test/", "url": ""},
        list_pretrained_tags_by_model=lambda name: ["openai"],
    )
    monkeypatch.setitem(sys.modules, "open_clip", fake)
    with serve(silent) as address:
        online(f"http://{address}")
        monkeypatch.setenv(hub.TIMEOUT_ENV, "1")
        start = time.perf_counter()
        with pytest.raises(ZeroShotUnavailableError, match=f"'ViT-B-32'.*http://{address} did not answer in time"):
            ZeroShotCLIP.from_open_clip(clip_tower, ["cat", "dog"])
        assert time.perf_counter() - start < 1.5


# ------------------------------------------------------------------------------------ endpoints that answer or refuse


def test_a_mirror_on_another_port_is_reachable(online):
    handle, seen = recording(ok)
    with serve(handle) as address:
        online(f"http://{address}")
        result = hub.probe(hub.hf_file_url(*FILE))
    assert result.access is hub.Access.REACHABLE, result
    assert seen == [f"HEAD /{FILE[0]}/resolve/main/{FILE[1]} HTTP/1.1"]


def test_a_fresh_process_probes_the_hf_endpoint_from_the_environment():
    handle, seen = recording(ok)
    code = ("from vitequiv import hub; r = hub.probe(hub.hf_file_url('timm/x', 'model.safetensors')); "
            "print(r.access.name, hub.endpoint())")
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS} | {"HF_HUB_OFFLINE": "0"}
    with serve(handle) as address:
        out = subprocess.run([sys.executable, "-c", code], env=env | {"HF_ENDPOINT": f"http://{address}/"},
                             capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["REACHABLE", f"http://{address}"], out.stderr
    assert seen == ["HEAD /timm/x/resolve/main/model.safetensors HTTP/1.1"]


def test_a_closed_port_is_unreachable_at_once(online):
    online(f"http://127.0.0.1:{closed_port()}")
    result = hub.probe(hub.hf_file_url(*FILE))
    assert result.access is hub.Access.UNREACHABLE and "refused" in result.detail
    assert result.seconds < 0.5


def test_a_host_name_that_does_not_resolve_is_unreachable(online):
    result = hub.probe("https://hub.vitequiv-test.invalid/x")
    assert result.access is hub.Access.UNREACHABLE and "does not resolve" in result.detail


def test_load_model_names_model_endpoint_and_remedies_when_unreachable(online):
    port = closed_port()
    online(f"http://127.0.0.1:{port}")
    with pytest.raises(vitequiv.WeightsUnavailableError) as err:
        vitequiv.load_model("vit_tiny_patch16_224.augreg_in21k_ft_in1k", device="cpu")
    message = str(err.value)
    for part in ("'vit_tiny_patch16_224.augreg_in21k_ft_in1k'", f"http://127.0.0.1:{port} is unreachable",
                 "refused", "fills the", "copy that cache", "'embedded'", "HTTPS_PROXY"):
        assert part in message, f"{part!r} missing from: {message}"


# ------------------------------------------------------------------------------------ offline mode


@pytest.mark.parametrize("value", ["1", "ON", "yes", "True", "0", "false", "off", ""])
def test_offline_mode_reads_values_as_huggingface_hub_does(online, monkeypatch, value):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert hub.offline_mode() == (value.upper() in constants.ENV_VARS_TRUE_VALUES)


def test_offline_mode_sends_nothing_and_says_so(monkeypatch):
    handle, seen = recording(ok)
    with serve(handle) as address:
        result = hub.probe(f"http://{address}/x")  # the suite's HF_HUB_OFFLINE=1
    assert result.access is hub.Access.OFFLINE and "HF_HUB_OFFLINE=1 is set" in result.detail
    assert seen == []


def test_offline_error_says_so_and_how_to_download(tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))  # nothing cached
    with pytest.raises(vitequiv.WeightsUnavailableError) as err:
        vitequiv.load_model("vit_tiny_patch16_224", device="cpu")
    message = str(err.value)
    for part in ("'vit_tiny_patch16_224'", f"{hub.endpoint()} is off limits in offline mode", "HF_HUB_OFFLINE=1 is set",
                 "unset HF_HUB_OFFLINE", "'embedded'"):
        assert part in message, f"{part!r} missing from: {message}"


def test_offline_mode_from_import_time_is_honoured_and_explained(online, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # set at import, unset since
    result = hub.probe("http://127.0.0.1:1/x")
    assert result.access is hub.Access.OFFLINE and "when huggingface_hub was imported" in result.detail


def test_transformers_offline_counts_too(online, monkeypatch):
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    assert hub.probe("http://127.0.0.1:1/x").access is hub.Access.OFFLINE


# ------------------------------------------------------------------------------------ proxies


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
def test_plain_http_goes_through_the_configured_proxy(online, monkeypatch, variable):
    target = f"http://127.0.0.1:{closed_port()}"  # refused when reached directly
    handle, seen = recording(proxy_answer)
    with serve(handle) as proxy:
        online(target)
        monkeypatch.setenv(variable, f"http://{proxy}")
        result = hub.probe(hub.hf_file_url(*FILE))
    assert result.access is hub.Access.REACHABLE and result.proxy == f"http://{proxy}"
    assert seen == [f"HEAD {target}/{FILE[0]}/resolve/main/{FILE[1]} HTTP/1.1"]


def test_https_asks_the_proxy_for_a_tunnel_and_reports_its_refusal(online, monkeypatch):
    handle, seen = recording(proxy_answer)
    with serve(handle) as proxy:
        online("https://hub.vitequiv-test.invalid")  # resolvable only by the proxy
        monkeypatch.setenv("HTTPS_PROXY", f"http://{proxy}")
        with pytest.raises(vitequiv.WeightsUnavailableError) as err:
            vitequiv.load_model("vit_tiny_patch16_224", device="cpu")
    assert [line.rsplit(" ", 1)[0] for line in seen] == ["CONNECT hub.vitequiv-test.invalid:443"]
    message = str(err.value)
    assert f"through the proxy http://{proxy}" in message and "502" in message


def test_no_proxy_bypasses_the_proxy(online, monkeypatch):
    handle, seen = recording(proxy_answer)
    with serve(handle) as proxy:
        online(f"http://127.0.0.1:{closed_port()}")
        monkeypatch.setenv("HTTP_PROXY", f"http://{proxy}")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        result = hub.probe(hub.hf_file_url(*FILE))
    assert result.access is hub.Access.UNREACHABLE and result.proxy is None
    assert seen == []


# ------------------------------------------------------------------------------------ settings


@pytest.mark.parametrize("value", ["abc", "0", "-1", "nan"])
def test_a_bad_timeout_setting_is_named(monkeypatch, value):
    monkeypatch.setenv(hub.TIMEOUT_ENV, value)
    with pytest.raises(ValueError, match=f"{hub.TIMEOUT_ENV}='{value}'.*positive number of seconds"):
        hub.hub_timeout()


def test_the_timeout_setting_sets_the_deadline(online, monkeypatch):
    monkeypatch.setenv(hub.TIMEOUT_ENV, "0.5")
    with serve(silent) as address:
        result = hub.probe(f"http://{address}/x")
    assert result.access is hub.Access.TIMED_OUT and 0.4 < result.seconds < 1.0
