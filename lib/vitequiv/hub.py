"""Can pretrained weights be downloaded right now? A bounded answer, so that loading never sits in a hub wait.

Used by model loading (:mod:`vitequiv.models`) and CLIP loading (:mod:`vitequiv.clip`) before they ask
timm or open_clip for weights that are not cached. :func:`probe` sends one HEAD request to the file's URL and
gives up after ``VITEQUIV_HUB_TIMEOUT`` seconds (default 3) in total, whatever the server does: it refuses,
accepts and stays silent, or answers one byte at a time. Any HTTP answer (even 404) counts as reachable; the
download itself then reports what is wrong.

It reads the settings the downloads obey:

- ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``), with huggingface_hub's notion of true;
- ``HF_ENDPOINT`` (scheme, host and port), as huggingface_hub read it when it was imported;
- the proxies ``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY`` (upper or lower case) and ``NO_PROXY``.

The request goes through ``urllib`` (the standard library, stable across huggingface_hub's changing HTTP
stacks) with those proxies.
"""
from __future__ import annotations

import enum
import os
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from .weights import WeightsUnavailableError

TIMEOUT_ENV = "VITEQUIV_HUB_TIMEOUT"
DEFAULT_TIMEOUT_S = 3.0
OFFLINE_ENVS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
TRUE_VALUES = {"1", "ON", "YES", "TRUE"}  # huggingface_hub.constants.ENV_VARS_TRUE_VALUES


class Access(enum.Enum):
    """Whether weights can be downloaded from a URL now (the value completes "the server ...")."""

    REACHABLE = "is reachable"
    OFFLINE = "is off limits in offline mode"
    UNREACHABLE = "is unreachable"
    TIMED_OUT = "did not answer in time"


@dataclass(frozen=True)
class Probe:
    """The outcome of :func:`probe`: ``access``, the URL asked, a human-readable ``detail`` and how long it took."""

    access: Access
    url: str
    detail: str
    seconds: float
    proxy: str | None = None

    @property
    def reachable(self) -> bool:
        return self.access is Access.REACHABLE


def _env_true(name: str) -> bool:
    return (os.environ.get(name) or "").upper() in TRUE_VALUES


def offline_mode() -> bool:
    """True when huggingface_hub is in offline mode, or the environment now asks for it."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or any(_env_true(name) for name in OFFLINE_ENVS)


def _offline_detail() -> str:
    set_now = [f"{name}={os.environ[name]}" for name in OFFLINE_ENVS if _env_true(name)]
    if set_now:
        return f"{' and '.join(set_now)} is set"
    return ("HF_HUB_OFFLINE was on when huggingface_hub was imported; unsetting it later has no effect, "
            "restart Python without it")


def endpoint() -> str:
    """The Hugging Face endpoint downloads go to (huggingface_hub reads ``HF_ENDPOINT`` once, at import)."""
    from huggingface_hub import constants

    return constants.ENDPOINT


def hf_file_url(repo_id: str, filename: str, revision: str | None = None) -> str:
    """The URL huggingface_hub downloads ``filename`` of model repo ``repo_id`` from."""
    from huggingface_hub import hf_hub_url

    return hf_hub_url(repo_id, filename, revision=revision)


def hf_cached(repo_id: str, filenames: Iterable[str], revision: str | None = None) -> bool:
    """True when any of ``filenames`` of model repo ``repo_id`` is in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(repo_id, f, revision=revision), str) for f in filenames)


def hub_timeout() -> float:
    """The probe's overall deadline in seconds: ``$VITEQUIV_HUB_TIMEOUT`` or 3."""
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0:  # also rejects NaN
        raise ValueError(
            f"{TIMEOUT_ENV}={raw!r}: expected a positive number of seconds (default {DEFAULT_TIMEOUT_S:g}).")
    return value


def proxy_for(url: str) -> str | None:
    """The proxy a request to ``url`` goes through, from the environment (None: direct)."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if proxy and parts.hostname and urllib.request.proxy_bypass(parts.netloc):
        return None
    return proxy or None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # a redirect is an answer: reachable
        return None


def _classify(err: BaseException) -> tuple[Access, str]:
    """The access a failed request implies, with a short reason."""
    if isinstance(err, urllib.error.HTTPError):
        return Access.REACHABLE, f"HTTP {err.code}"
    reason = err.reason if isinstance(err, urllib.error.URLError) else err
    if isinstance(err, TimeoutError):  # urllib wraps errors up to sending the request, not those of the answer
        return Access.TIMED_OUT, "it accepted the connection but sent no answer"
    if isinstance(reason, TimeoutError):
        return Access.TIMED_OUT, "no connection could be made in time"
    if isinstance(reason, ssl.SSLError):
        return Access.REACHABLE, f"it answered, but the TLS handshake failed ({reason})"
    if isinstance(reason, ConnectionRefusedError):
        return Access.UNREACHABLE, "the connection was refused"
    if isinstance(reason, socket.gaierror):
        return Access.UNREACHABLE, f"the host name does not resolve ({reason})"
    if isinstance(reason, OSError) and "Tunnel connection failed" in str(reason):
        return Access.UNREACHABLE, f"the proxy refused the tunnel ({reason})"
    return Access.UNREACHABLE, f"{type(reason).__name__}: {reason}"


def probe(url: str, timeout: float | None = None) -> Probe:
    """Whether ``url`` answers, decided within ``timeout`` seconds (default :func:`hub_timeout`) in total."""
    timeout = hub_timeout() if timeout is None else timeout
    proxy = proxy_for(url)
    start = time.perf_counter()
    if offline_mode():
        return Probe(Access.OFFLINE, url, _offline_detail(), time.perf_counter() - start, proxy)
    outcome: list[tuple[Access, str]] = []

    def attempt() -> None:
        proxies = {scheme: proxy for scheme in ("http", "https")} if proxy else {}
        opener = urllib.request.build_opener(urllib.request.ProxyHandler(proxies), _NoRedirect)
        try:  # socket operations time out a little before the deadline, so that their error can say which
            with opener.open(urllib.request.Request(url, method="HEAD"), timeout=0.9 * timeout) as response:
                outcome.append((Access.REACHABLE, f"HTTP {response.status}"))
        except Exception as err:  # noqa: BLE001 - any failure is an answer about reachability
            outcome.append(_classify(err))

    # The request runs in a daemon thread so that the deadline holds for DNS, connect and a trickling answer.
    thread = threading.Thread(target=attempt, name="vitequiv-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    seconds = time.perf_counter() - start
    if not outcome:
        return Probe(Access.TIMED_OUT, url, f"no complete answer within {timeout:g} s", seconds, proxy)
    access, detail = outcome[0]
    return Probe(access, url, detail, seconds, proxy)


def _advice(result: Probe) -> str:
    if result.access is Access.OFFLINE:
        return "To download, unset HF_HUB_OFFLINE (and TRANSFORMERS_OFFLINE) before starting Python."
    advice = "Check the network, HF_ENDPOINT and the proxy settings (HTTPS_PROXY, ALL_PROXY, NO_PROXY)."
    configured = os.environ.get("HF_ENDPOINT", "").rstrip("/")
    if configured and configured != endpoint() and result.url.startswith(endpoint()):
        advice += (f" HF_ENDPOINT is now {configured!r} but huggingface_hub read {endpoint()!r} when it was "
                   "imported: restart Python for the new value to apply.")
    if result.access is Access.TIMED_OUT:
        advice += f" On a slow link, allow more time with {TIMEOUT_ENV}=<seconds> (now {hub_timeout():g})."
    return advice


def require_download(what: str, url: str, *, remedy: str, error: type[Exception] = WeightsUnavailableError) -> None:
    """Return when ``url`` answers; otherwise raise ``error`` saying why and what to do, within the deadline.

    ``what`` names the weights (e.g. "the pretrained weights of 'vit_tiny_patch16_224'"); ``remedy`` says how to
    get them without this download (fill the cache once online, copy a cache, use the embedded model).
    """
    result = probe(url)
    if result.reachable:
        return
    parts = urlsplit(url)
    where = f"{parts.scheme}://{parts.netloc}" + (f" (through the proxy {result.proxy})" if result.proxy else "")
    raise error(
        f"{what} are not cached on this machine and cannot be downloaded: {where} {result.access.value}: "
        f"{result.detail} [{result.seconds:.1f} s, {url}]. {remedy} {_advice(result)}"
    )
