"""Run the runner's tasks on a Dask cluster: a local one (``--workers N``) or a running one (``--scheduler ADDRESS``).

Each job (one notebook with its parameters) runs :func:`execute_task` on a worker: papermill executes the
notebook's text, sent with the job, in a folder of the worker's own, and the files it made travel back in the
:class:`~vitequiv.run.execute.Outcome`, so workers need not share the client's disk; the caller publishes them
exactly as an in-process run is published (staging folder, one rename). Like every executor, this one only
executes: it writes no run record and publishes nothing. Workers need the same environment as the client
(the package, the embedded weights or a hub cache); each reports its environment for the cache key.

A worker that dies while running a task (killed, out of memory) costs the task one attempt: a local cluster
runs it once more elsewhere (Dask's ``allowed-failures`` is 1 there; a running scheduler keeps its own setting,
3 by default), then reports it failed; the other tasks go on. A local cluster has one thread per worker and
sends a worker one task at a time; each kernel gets ``OMP_NUM_THREADS = cores // worker threads on its host``.
"""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..environment import now
from ..paths import notebooks_dir
from . import cache
from .execute import ExecutorFactory, Job, Outcome, execute, kernel_environment
from .records import RunnerError, RunStatus, error_text

WORKER_WAIT_S = 60  # how long to wait for a running scheduler's first worker
_ONE_AT_A_TIME = threading.Lock()  # papermill changes the process's working directory and environment


def dask_available() -> bool:
    return importlib.util.find_spec("distributed") is not None


def executor_factory(workers: int | None, scheduler: str | None) -> ExecutorFactory | None:
    """What ``--workers`` and ``--scheduler`` ask for, checked now (RunnerError) and opened later; None: neither."""
    if workers is None and scheduler is None:
        return None
    if workers is not None and scheduler is not None:
        raise RunnerError(f"--workers {workers} and --scheduler {scheduler}: give one of them (a local cluster of "
                          "N workers, or the address of a running scheduler)")
    if workers is not None and workers < 1:
        raise RunnerError(f"--workers {workers}: expected a number of worker processes, 1 or more")
    if scheduler is not None and not scheduler.strip():
        raise RunnerError("--scheduler '': expected a scheduler address such as tcp://10.0.0.5:8786")
    if not dask_available():
        flag = f"--workers {workers}" if workers is not None else f"--scheduler {scheduler}"
        raise RunnerError(f"{flag} needs Dask: pip install 'vitequiv[sweeps]' (dask and distributed)")
    return lambda: connect(workers, scheduler)


def _has_bokeh() -> bool:
    return importlib.util.find_spec("bokeh") is not None


def _dashboard(client: Any) -> str:
    """The dashboard's link, or why there is none (without bokeh the scheduler serves no dashboard pages)."""
    services = client.scheduler_info(n_workers=0).get("services", {})
    if "dashboard" in services and client.run_on_scheduler(_has_bokeh):
        return f"Dask dashboard: {client.dashboard_link}"
    return "Dask dashboard: none (the scheduler has no bokeh; `pip install bokeh` there to get one)"


@contextlib.contextmanager
def connect(workers: int | None, scheduler: str | None) -> Iterator[DaskExecutor]:
    """A :class:`DaskExecutor` on a new local cluster of ``workers`` processes, or on ``scheduler``."""
    import dask
    from distributed import Client, LocalCluster

    cluster = None
    try:
        if workers is not None:
            settings = {"distributed.scheduler.allowed-failures": 1, "distributed.scheduler.worker-saturation": 1.0}
            with dask.config.set(settings):  # the scheduler runs in this process and reads them as it starts
                cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                       dashboard_address=":0", silence_logs=logging.ERROR)
            client = Client(cluster)
            where = f"local Dask cluster of {workers} worker process{'es' if workers > 1 else ''}, 1 thread each"
        else:
            client = Client(scheduler, timeout="10s")
            where = f"Dask scheduler {scheduler}"
    except (OSError, TimeoutError, ValueError) as err:
        if cluster is not None:
            cluster.close()
        target = f"--workers {workers}" if workers is not None else f"--scheduler {scheduler}"
        raise RunnerError(f"{target}: cannot start or reach the Dask cluster ({error_text(err)})") from None
    try:
        if workers is None:
            print(f"{where}: waiting up to {WORKER_WAIT_S} s for a worker ...", flush=True)
            try:
                client.wait_for_workers(1, timeout=WORKER_WAIT_S)
            except TimeoutError:
                raise RunnerError(f"--scheduler {scheduler}: no worker joined within {WORKER_WAIT_S} s; start one "
                                  f"with `dask worker {scheduler} --nthreads 1`") from None
        print(f"{where}\n{_dashboard(client)}", flush=True)
        yield DaskExecutor(client, where)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


class DaskExecutor:
    """Jobs run as Dask tasks, all submitted at once; each outcome is handed back as it arrives."""

    def __init__(self, client: Any, description: str) -> None:
        self.client, self.description = client, description

    def _threads_by_host(self) -> dict[str, int]:
        """Torch threads per kernel on each host: its cores over the worker threads it runs."""
        workers = self.client.scheduler_info(n_workers=-1)["workers"]
        cores = self.client.run(usable_cores)
        threads_on = defaultdict(int)
        for info in workers.values():
            threads_on[info["host"]] += info["nthreads"]
        return {info["host"]: max(1, (cores.get(address) or 1) // threads_on[info["host"]])
                for address, info in workers.items()}

    def environments(self, candidates: set[str]) -> list[dict]:
        """Each distinct environment of the workers (one, on a cluster of equal machines)."""
        found = []
        for env in self.client.run(cache.environment, sorted(candidates)).values():
            if env not in found:
                found.append(env)
        here = cache.library_digest()
        if any(env["library_source"] != here for env in found):
            print("warning: some workers run vitequiv source that differs from this checkout's; their results are "
                  "keyed by their own", flush=True)
        return found

    def run(self, jobs: list[Job], started: Callable[[Job], None], done: Callable[[Job, Outcome], None]) -> None:
        from distributed import as_completed

        if not jobs:
            return
        threads = self._threads_by_host()
        futures = {}
        for i, job in enumerate(jobs):
            task = job.task
            started(job)
            payload = {"notebook": task.stem, "filename": task.notebook.name, "source": task.source,
                       "parameters": task.parameters, "profile": job.profile, "run_id": job.run_id,
                       "candidates": sorted(task.candidates), "threads": threads}
            key = f"{task.stem}-{task.combination or 'run'}-{job.run_id}-{i}"
            futures[self.client.submit(execute_task, payload, key=key, pure=False)] = job
        print(f"submitted {len(jobs)} task(s) to the {self.description}", flush=True)
        pending = set(futures)
        try:
            for future in as_completed(futures):
                pending.discard(future)
                done(futures[future], self._outcome(future))
        except KeyboardInterrupt:
            for future in pending:
                future.cancel()
                done(futures[future], Outcome(RunStatus.INTERRUPTED, "interrupted", finished=now()))

    @staticmethod
    def _outcome(future: Any) -> Outcome:
        """What a finished future did: its result, or why it has none."""
        from distributed import KilledWorker

        try:
            result = future.result()
        except KilledWorker as err:
            last = getattr(err.last_worker, "address", "unknown")
            return Outcome(RunStatus.FAILED, f"its worker died on each of {err.allowed_failures + 1} tries (Dask "
                                             f"KilledWorker; the last on {last})", finished=now())
        except Exception as err:  # the task raised on the worker, or the cluster lost it
            return Outcome(RunStatus.FAILED, f"the task failed on its worker: {error_text(err)}", finished=now())
        environment = result["environment"] if result["status"] == RunStatus.OK else None
        return Outcome(RunStatus(result["status"]), result["error"], result["seconds"], result["started"],
                       result["finished"], result["files"], environment)


def usable_cores() -> int:
    """The cores this process may run on (its affinity where the system tells it, else all)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def execute_task(payload: Mapping[str, Any]) -> dict[str, Any]:
    """On a worker: run one notebook (its text is in ``payload``) and return what it made, as bytes.

    The notebook runs in the worker's checkout's ``notebooks/`` folder where it has one (so relative paths and
    the repository root resolve as in-process), its outputs go to a folder in the worker's local directory.
    """
    from distributed import get_worker
    from distributed.comm import get_address_host

    worker = get_worker()
    threads = payload["threads"].get(get_address_host(worker.address))
    stem, filename = payload["notebook"], payload["filename"]
    with _ONE_AT_A_TIME, tempfile.TemporaryDirectory(prefix="vitequiv-", dir=worker.local_directory) as tmp:
        folder = Path(tmp)
        notebook, out = folder / filename, folder / "out"
        notebook.write_text(payload["source"], encoding="utf-8")
        (out / stem).mkdir(parents=True)
        env = kernel_environment(stem, payload["run_id"], payload["profile"], out)
        if threads:
            env |= {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        cwd = notebooks_dir() if notebooks_dir().is_dir() else folder
        started, start = now(), time.perf_counter()
        status, error = execute(notebook, out / stem / filename, dict(payload["parameters"]), env, cwd)
        seconds, finished = time.perf_counter() - start, now()
        files = {str(p.relative_to(out / stem)): p.read_bytes() for p in sorted((out / stem).rglob("*"))
                 if p.is_file() and not p.name.endswith(".part")}
    return {"status": status.value, "error": error, "seconds": seconds, "started": started, "finished": finished,
            "files": files, "environment": cache.environment(payload["candidates"]), "worker": worker.address}
