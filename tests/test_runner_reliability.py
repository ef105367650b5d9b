"""Honest results on disk: killed, interrupted and disk-full runs leave complete files and an index that says so."""
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from helpers import files_under, make_notebook, make_suite, private_copy, start_runner, wait_for

from vitequiv import paths, runner
from vitequiv.run import execute, index, publish, records
from vitequiv.run.suite import run_suite


def dead_pid() -> int:
    """The pid of a process that has exited."""
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def assert_every_file_complete(folder: Path) -> None:
    """No temporary file, every JSON file parses and every notebook validates."""
    for path in folder.rglob("*"):
        assert not path.name.endswith(".part"), f"temporary file left: {path}"
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".ipynb":
            nbformat.validate(nbformat.read(path, as_version=4))


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A fake suite whose 03_sleep was published by a finished ok run (SLEEP=0)."""
    root = make_suite(tmp_path_factory.mktemp("published"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VITEQUIV_ROOT", str(root))
        result = run_suite(["03"], "tiny", root / "out")
    assert result.exit_status == records.EXIT_OK, result.records
    return root


@pytest.fixture
def suite(published, tmp_path, monkeypatch):
    """A private copy of the published suite."""
    return private_copy(published, tmp_path, monkeypatch)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_a_killed_run_keeps_the_published_results_and_the_index_says_so(suite, sig):
    out, pid_file = suite / "out", suite / "notebooks" / "kernel.pid"
    before = {f: (out / "03_sleep" / f).read_bytes() for f in files_under(out / "03_sleep")}
    assert (out / "03_sleep" / "new.png").read_text() == "SLEEP=0" and "new.pdf" in before
    pid_file.unlink(missing_ok=True)
    run = start_runner(suite, "--profile", "slow", "03")
    wait_for(pid_file.exists, 120, "the notebook to start sleeping")
    kernel = int(pid_file.read_text())
    staged = next((out / ".staging").iterdir()) / "03_sleep" / "new.png"
    assert staged.read_text() == "SLEEP=60"  # the killed run has written a figure, but only in its staging folder
    run.send_signal(sig)
    stdout, stderr = run.communicate(timeout=60)
    wait_for(lambda: not paths.pid_alive(kernel), 30, "the kernel to exit")  # no kernel outlives its runner

    assert {f: (out / "03_sleep" / f).read_bytes() for f in files_under(out / "03_sleep")} == before
    assert_every_file_complete(out)
    if sig == signal.SIGKILL:
        assert run.returncode == -signal.SIGKILL
        assert "## 03_sleep (ok)" in (out / "README.md").read_text()  # the runner died before it could say more
        index.write_index(out)  # the next index write, by anyone, sees the run that never finished
        status = "incomplete"
        publish.clean_stale(out)  # what the next runner does first
    else:
        assert run.returncode == records.EXIT_INTERRUPTED, stderr
        assert "03_sleep" in stdout and "interrupted" in stdout and "total" in stdout  # the summary
        status = "interrupted"
    readme = (out / "README.md").read_text()
    assert f"## 03_sleep ({status})" in readme and "profile `slow`" in readme
    assert "the outputs below are from an earlier run: ok, profile `tiny`" in readme
    entry = json.loads((out / "index.json").read_text())["notebooks"][0]
    assert (entry["status"], entry["profile"], entry["outputs_from_last_run"]) == (status, "slow", False)
    assert entry["outputs_run"]["status"] == "ok" and entry["outputs_run"]["profile"] == "tiny"
    assert not (out / ".staging").exists() or not any((out / ".staging").iterdir())


def test_stale_staging_folders_and_part_files_are_removed(tmp_path):
    dead, out = dead_pid(), tmp_path / "out"
    stale = out / ".staging" / f"03_sleep-20260101T000000Z-abcd-{dead}"
    live = out / ".staging" / f"03_sleep-20260101T000000Z-abcd-{os.getpid()}"
    for folder in (stale / "03_sleep", live / "03_sleep", out / "01_good", out / "_scratch" / "01_good"):
        folder.mkdir(parents=True)
    dead_parts = [out / "01_good" / f".line.{dead}-abcdefgh.png.part",
                  out / "_scratch" / "01_good" / f".m.{dead}-abc_1234.json.part",
                  out / f".README.{dead}-zzzzzzzz.md.part",
                  out / "01_good" / ".line.abcdefgh.png.part"]  # old style, without a pid
    live_part = out / "01_good" / f".table.{os.getpid()}-abcdefgh.csv.part"
    for part in [*dead_parts, live_part]:
        part.write_text("half")
    killed_mid_swap = out / ".staging" / f"02_bad-20260101T000000Z-abcd-{dead}"  # had moved 02_bad aside
    (killed_mid_swap / "replaced").mkdir(parents=True)
    (killed_mid_swap / "replaced" / "kept.png").write_text("published")
    publish.clean_stale(out)
    assert not stale.exists() and live.exists() and live_part.exists()
    assert not any(p.exists() for p in dead_parts)
    assert not killed_mid_swap.exists() and (out / "02_bad" / "kept.png").read_text() == "published"


def test_the_summary_is_printed_when_the_index_cannot_be_written(suite, monkeypatch, capsys):
    def full(root):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(index, "write_index", full)
    assert runner.main(["--profile", "tiny", "--output-dir", str(suite / "out"), "03"]) == records.EXIT_FAILED
    captured = capsys.readouterr()
    assert "03_sleep" in captured.out and "total" in captured.out
    assert "could not write" in captured.err and "No space left on device" in captured.err


def test_executed_notebooks_are_saved_whole(tmp_path, monkeypatch):
    from papermill.iorw import papermill_io

    execute.register_atomic_io()
    target = tmp_path / "nb.ipynb"
    papermill_io.write("first", execute.ATOMIC_SCHEME + str(target))
    assert papermill_io.read(execute.ATOMIC_SCHEME + str(target)) == "first"

    def half_then_full(self, data, *args, **kwargs):  # a save that fails half way through, as on a full disk
        with open(self, "w") as f:
            f.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", half_then_full)
    with pytest.raises(OSError, match="No space"):
        papermill_io.write("second", execute.ATOMIC_SCHEME + str(target))
    assert target.read_text() == "first" and files_under(tmp_path) == ["nb.ipynb"]


@pytest.mark.parametrize("own", [None, "65536"])
def test_kernels_get_the_allocator_settings_unless_the_user_set_them(tmp_path, monkeypatch, own):
    if own is None:
        monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    else:
        monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", own)
    expected = {**execute.KERNEL_MALLOC, **({"MALLOC_TRIM_THRESHOLD_": own} if own else {})}
    notebook = tmp_path / "env.ipynb"
    body = "import os, pathlib\npathlib.Path(OUT).write_text(repr({k: os.environ.get(k) for k in KEYS}))"
    make_notebook(notebook, body, "OUT = ''  # where\nKEYS = []  # which")
    env = execute.kernel_environment("env", "run", "smoke", tmp_path)
    status, error = execute.execute(notebook, tmp_path / "executed.ipynb",
                                    {"OUT": str(tmp_path / "seen.txt"), "KEYS": sorted(expected)}, env, tmp_path)
    assert status == records.RunStatus.OK, error
    assert eval((tmp_path / "seen.txt").read_text()) == expected
    assert os.environ.get("MALLOC_TRIM_THRESHOLD_") == own  # the runner's own process is left as it was


@pytest.fixture
def small_disk(tmp_path):
    """A 512 KiB tmpfs mounted for the test (needs root and mount privileges; skipped without)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


FILLS_THE_DISK = (
    "import pathlib, matplotlib.pyplot as plt, vitequiv as vq\n"
    "out = vq.Output('04_fill', globals())\n"
    "try:\n    pathlib.Path(BALLAST).write_bytes(bytes(10**7))  # something else fills the disk\n"
    "except OSError:\n    pass\n"
    "fig, ax = plt.subplots(); ax.plot([1, 2])\nout.figure(fig, 'line', 'a line on a full disk')\n")


def test_a_full_output_disk_fails_honestly(suite, small_disk, capsys):
    out = small_disk
    make_notebook(suite / "notebooks" / "04_fill.ipynb", FILLS_THE_DISK, f"BALLAST = {str(out / 'ballast')!r}")
    code = runner.main(["--profile", "tiny", "--output-dir", str(out), "04"])
    captured = capsys.readouterr()
    assert code == records.EXIT_FAILED
    assert "04_fill" in captured.out and "failed" in captured.out and "total" in captured.out  # the summary
    assert "No space left on device" in captured.out + captured.err
    assert_every_file_complete(out)
    assert not (out / ".staging").exists() or not any((out / ".staging").iterdir())
    (out / "ballast").unlink()
    index.write_index(out)
    entry = {e["notebook"]: e for e in json.loads((out / "index.json").read_text())["notebooks"]}["04_fill"]
    assert entry["status"] in ("failed", "incomplete")  # never "ok"
    assert_every_file_complete(out)


def test_an_interrupted_swap_puts_the_published_folder_back(tmp_path, monkeypatch):
    staging, target = tmp_path / ".staging" / "nb-run" / "nb", tmp_path / "nb"
    staging.mkdir(parents=True)
    (staging / "new.png").write_text("new")
    target.mkdir()
    (target / "old.png").write_text("old")
    real, calls = os.rename, []

    def rename(source, destination):  # Ctrl-C between moving the old folder aside and the new one in
        calls.append(source)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real(source, destination)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(KeyboardInterrupt):
        publish.swap(staging, target)
    monkeypatch.undo()
    assert files_under(target) == ["old.png"] and files_under(staging) == ["new.png"]
