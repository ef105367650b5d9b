"""Figure helpers: making a perturbation visible, and the index of figures/ from run records and manifests."""
import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from vitequiv.figures import amplify
from vitequiv.run import index, records


def test_amplify_maps_the_chosen_quantile_to_the_fill_and_keeps_a_given_gain():
    delta = torch.linspace(-0.01, 0.01, 3 * 4 * 4).reshape(3, 4, 4)  # largest change 0.01
    image, gain = amplify(delta)
    assert gain == 50.0 and image.max().item() == 1.0 and image.min().item() == 0.0  # max -> 0.5 from mid-grey
    image, gain = amplify(delta, 10.0)
    assert gain == 10.0 and torch.allclose(image, 0.5 + 10 * delta)
    _, gain = amplify(torch.zeros(3, 4, 4))
    assert gain == 1000.0  # an all-zero change stays finite: 0.5 / (1/2040), to two digits


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def _record(root, name, **fields):
    record = {"notebook": name, "run_id": "r2", "status": "ok", "profile": "smoke", "parameters": {"X": 1},
              "started": "2026-12-01T10:00:00+00:00", "finished": "2026-12-01T10:00:05+00:00", "seconds": 5.0,
              "error": "", "vitequiv_version": "0.1.0", "pid": os.getpid(), "host": socket.gethostname()} | fields
    (root / ".runs").mkdir(parents=True, exist_ok=True)
    (root / ".runs" / f"{name}.json").write_text(json.dumps(record))
    return record


def _published(root, name, run_id="r1", **run):
    (root / name).mkdir(parents=True)
    (root / name / "a.png").write_text("png")
    manifest = {"notebook": name, "profile": "default", "parameters": {"X": 2}, "vitequiv_version": "0.1.0",
                "library_versions": {"torch": "2.x"}, "created": "2026-11-30T09:00:00+00:00",
                "figures": {"a": {"files": ["a.png", "a.pdf"], "caption": "cap a"}}, "tables": {},
                "claims": {"c | 1": {"paper": "p", "ours": "o", "verdict": "holds"}}}
    if run_id:
        manifest["run"] = {"run_id": run_id, "status": "ok", "profile": "default", "parameters": {"X": 2},
                           "started": "2026-11-30T09:00:00+00:00", "finished": "2026-11-30T09:01:40+00:00",
                           "seconds": 100.0} | run
    (root / name / "manifest.json").write_text(json.dumps(manifest))


# (case, how to lay out figures/, expected status, whether the outputs come from the last run, README fragments)
INDEX_CASES = [
    ("ok", lambda r: (_published(r, "nb", "r2"), _record(r, "nb")), "ok", True,
     ["## nb (ok)", "Last run: **ok**, profile `smoke`, 5 s",
      "| c \\| 1 | p | o | - | - | - | **holds** | nb | ok, profile default |"]),  # an old claim: no n, interval
    ("killed runner",
     lambda r: (_published(r, "nb"), _record(r, "nb", status="running", finished=None, pid=_dead_pid())),
     "incomplete", False, ["## nb (incomplete)", "never finished", "earlier run: ok, profile `default`, 100 s"]),
    ("live runner", lambda r: _record(r, "nb", status="running", finished=None, pid=os.getppid()), "running", False,
     ["## nb (running)", "No outputs published."]),
    ("this process, its runner done", lambda r: _record(r, "nb", status="running", finished=None), "incomplete", False,
     ["## nb (incomplete)"]),
    ("interrupted", lambda r: (_published(r, "nb"), _record(r, "nb", status="interrupted", error="interrupted")),
     "interrupted", False, ["## nb (interrupted)", "That run published nothing"]),
    ("ad hoc", lambda r: _published(r, "nb", run_id=None), "ad hoc", False,
     ["## nb (ad hoc)", "written outside the runner", "`X=2`"]),
    ("corrupt manifest", lambda r: (_published(r, "nb", "r2"), (r / "nb" / "manifest.json").write_text('{"fig'),
                                    _record(r, "nb")),
     "ok", False, ["## nb (ok)", "Problems: manifest.json cannot be read"]),
    ("corrupt record",
     lambda r: (_published(r, "nb"), (r / ".runs").mkdir(), (r / ".runs" / "nb.json").write_text("[")),
     "ok", True, ["## nb (ok)", "Problems: run record nb.json cannot be read"]),
]


@pytest.mark.parametrize("case, layout, status, from_last, fragments", INDEX_CASES, ids=[c[0] for c in INDEX_CASES])
def test_the_index_shows_each_notebooks_real_last_status(tmp_path, case, layout, status, from_last, fragments):
    layout(tmp_path)
    for other in ("_scratch", ".staging", "sweeps"):  # never notebooks
        _published(tmp_path / other, "nb")
    index.write_index(tmp_path)
    readme = (tmp_path / "README.md").read_text()
    assert all(f in readme for f in fragments), readme
    entries = json.loads((tmp_path / "index.json").read_text())["notebooks"]
    assert [e["notebook"] for e in entries] == ["nb"]
    assert (entries[0]["status"], entries[0]["outputs_from_last_run"]) == (status, from_last)


def test_a_record_of_this_process_runs_while_its_runner_does(tmp_path, monkeypatch):
    _record(tmp_path, "nb", status="running", finished=None)
    monkeypatch.setattr(records, "ACTIVE_RUNS", {"r2"})
    assert index.collect_index(tmp_path)["notebooks"][0]["status"] == "running"


def test_the_index_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    _published(tmp_path, "nb")

    def broken(index):
        raise OSError("disk full")

    monkeypatch.setattr(index, "render_readme", broken)
    with pytest.raises(OSError):
        index.write_index(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nb"]
