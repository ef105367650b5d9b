"""The lock (issue 30): uv.lock, the hashed requirements files and environment.yml made from it, the environment
installed from it, and its digest in every run's records."""
import hashlib
import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement

from vitequiv import runner
from vitequiv.environment import (
    LOCK,
    LOCK_REQUIREMENTS,
    library_versions,
    lock_digest,
    lock_mismatches,
    locked_versions,
)
from vitequiv.figures import Output
from vitequiv.run import cache
from vitequiv.run.book_pages import run_lines

ROOT = Path(__file__).resolve().parents[1]
KEY_LIBRARIES = ("torch", "timm", "numpy", "scikit-image", "papermill")


def _uv_lock_versions() -> dict[str, set[str]]:
    """uv.lock's packages: name -> every version it locks (one per Python/platform fork)."""
    versions: dict[str, set[str]] = {}
    for package in tomllib.loads(LOCK.read_text())["package"]:
        if "version" in package:
            versions.setdefault(package["name"], set()).add(package["version"])
    return versions


def test_the_lock_is_beside_this_checkout_and_has_hashes():
    assert LOCK == ROOT / "uv.lock" and LOCK_REQUIREMENTS == ROOT / "requirements.lock.txt"
    text = LOCK_REQUIREMENTS.read_text()
    pins = [line for line in text.splitlines() if re.match(r"[A-Za-z0-9].*==", line)]
    assert pins and text.count("--hash=sha256:") >= len(pins)


def test_installed_key_libraries_are_the_locked_versions():
    """What this environment runs is what uv.lock says (read from both uv.lock and the exported pins)."""
    pins, locked = locked_versions(), _uv_lock_versions()
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"  # the pair that works here
    for name in KEY_LIBRARIES:
        installed = importlib.metadata.version(name)
        assert installed == pins[name], f"{name} {installed} installed, the lock has {pins[name]}: run make setup"
        assert pins[name] in locked[name], f"requirements.lock.txt's {name} is not uv.lock's: run make lock"
    assert not lock_mismatches(), f"installed versions differ from the lock: {lock_mismatches()}"


def test_the_lock_covers_pyproject_and_its_ranges():
    """Every dependency of the runtime set and of the dev, book and sweeps extras is locked, at a version inside
    pyproject.toml's range (a dependency added without `make lock` fails here; CI also runs `uv lock --check`)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = project["dependencies"] + extras["dev"] + extras["book"] + extras["sweeps"]
    pins = locked_versions()
    runtime = locked_versions(ROOT / "requirements-runtime.lock.txt")
    for line in wanted:
        requirement = Requirement(line)
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        assert name in pins, f"{line} (pyproject.toml) is not in the lock: run make lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), \
            f"{name} {pins[name]} (lock) is outside {line} (pyproject.toml): run make lock"
        if line in project["dependencies"]:
            assert runtime.get(name) == pins[name], f"{name} is missing from the runtime lock: run make lock"
    locked = _uv_lock_versions()
    for name, version in pins.items():
        assert version in locked.get(name, set()), f"{name}=={version} is not in uv.lock: run make lock"


def test_uv_agrees_that_the_lock_is_current():
    uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    if not Path(uv).exists():
        pytest.skip("no uv here (make setup installs it into the venv); CI runs make lock-check")
    done = subprocess.run([uv, "lock", "--check", "--offline"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_lock_digest_is_the_lock_files_sha256(tmp_path):
    assert lock_digest() == "sha256:" + hashlib.sha256(LOCK.read_bytes()).hexdigest()[:12]
    other = tmp_path / "uv.lock"
    other.write_bytes(LOCK.read_bytes() + b"\n")
    assert lock_digest(other) != lock_digest() and lock_digest(tmp_path / "missing.lock") == "none"


def test_manifests_cache_key_and_front_page_carry_the_lock_digest(tmp_path):
    digests = []
    for run in ("a", "b"):  # two runs from the same lock
        Output("01_embedding_matching", {"PROFILE": "smoke"}, root=tmp_path / run)
        manifest = json.loads((tmp_path / run / "manifest.json").read_text())
        digests.append(manifest["library_versions"]["lock"])
    assert digests == [lock_digest(), lock_digest()] and digests[0].startswith("sha256:")
    assert library_versions()["lock"] == lock_digest()
    assert cache.environment()["libraries"]["lock"] == lock_digest()
    assert f"| lock | {lock_digest()} |" in run_lines([])


def test_an_environment_that_differs_from_the_lock_is_named(tmp_path, monkeypatch):
    """Installed versions against a lock that pins numpy elsewhere: named; a package not installed is not."""
    fake = tmp_path / "requirements.lock.txt"
    fake.write_text("numpy==0.0.1 \\\n    --hash=sha256:00\n"
                    "not-installed-package==1.0 \\\n    --hash=sha256:00\n"
                    f"timm=={importlib.metadata.version('timm')} ; python_version >= '3' \\\n    --hash=sha256:00\n"
                    "torch==0.0.2 ; sys_platform == 'no-such-platform' \\\n    --hash=sha256:00\n")
    assert lock_mismatches(fake) == (f"numpy {importlib.metadata.version('numpy')} (lock 0.0.1)",)
    monkeypatch.setattr(runner, "lock_mismatches", lambda: lock_mismatches(fake))
    note = runner.lock_note()
    assert "does not match the lock" in note and "numpy" in note and "went ahead" in note
    monkeypatch.setattr(runner, "lock_mismatches", lambda: ())
    assert runner.lock_note() == ""
