"""Running sweep variants: in this process, in worker processes, or as Ray tasks.

    results = run_tasks(tasks, jobs=2)                  # tasks: plain dicts (see run_variant)
    results = run_tasks(tasks, jobs=4, ray_address="local")

A task and its result are plain dicts, so that they cross processes and Ray; each worker
gets its share of the CPUs as torch threads and logs only warnings to the terminal.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context

from compress.config import load_pipeline
from compress.errors import CompressError

log = logging.getLogger(__name__)

RAY_HINT = "pip install 'compress[ray]'"


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _quiet_worker_logging() -> None:
    """In a worker: INFO reaches each run's run.log, only warnings the terminal."""
    root = logging.getLogger()
    if not any(getattr(h, "_compress_worker", False) for h in root.handlers):
        handler = logging.StreamHandler()
        handler.setLevel(logging.WARNING)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler._compress_worker = True
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    for noisy in ("onnxruntime", "onnxscript", "torch", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    _quiet_worker_logging()


def run_variant(task: dict) -> dict:
    """Run one variant (a plain dict in and out, so that it can cross processes and Ray)."""
    from compress.pipeline import run_pipeline

    if task.get("worker"):
        _init_worker(task["threads"])
    config = load_pipeline(task["pipeline"]).with_overrides({**task["overrides"], "sweep": {}})
    report = run_pipeline(
        config, out_dir=task["run_dir"], data_root=task["data_root"], device=task.get("device", "cpu"),
        progress=False, cache_dir=task["cache_dir"],
    )
    return {"name": task["name"], "overrides": task["overrides"], "run_dir": task["run_dir"], "report": report}


def import_ray():
    try:
        import ray
    except ImportError:
        raise CompressError(f"--ray needs Ray, which is not installed here: {RAY_HINT}") from None
    return ray


def run_tasks(tasks: list[dict], jobs: int = 1, ray_address: str | None = None,
              threads: int | None = None) -> list[dict]:
    """Run variant tasks in order (jobs 1), in `jobs` processes, or as Ray tasks; results
    come back in the order of `tasks`. The first failure stops the sweep.

    `threads`: torch threads per variant (None: the CPUs shared out among the jobs; in
    this process with jobs 1, torch's own choice)."""
    if ray_address is None and jobs <= 1 and threads:
        import torch

        torch.set_num_threads(threads)
    threads = threads or max(1, available_cpus() // max(1, jobs))
    if ray_address is not None:
        return _run_ray(tasks, jobs, threads, ray_address)
    if jobs <= 1:
        results = []
        for i, task in enumerate(tasks, 1):
            log.info("variant %d/%d: %s", i, len(tasks), task["name"])
            results.append(run_variant(task))
        return results
    results: dict[str, dict] = {}
    # spawn: a fresh interpreter per worker (forking a process that has used torch's
    # thread pools can hang)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(run_variant, {**t, "worker": True, "threads": threads}): t for t in tasks}
        try:
            for future in as_completed(futures):
                result = future.result()
                results[result["name"]] = result
                log.info("variant %s done (%d/%d)", result["name"], len(results), len(tasks))
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    return [results[t["name"]] for t in tasks]


def _run_ray(tasks: list[dict], jobs: int, threads: int, address: str) -> list[dict]:
    ray = import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        # "local" starts a private cluster of `jobs` CPUs on this machine; anything else
        # ("auto", "host:port", "ray://...") connects to a running one.
        options = {"num_cpus": max(1, jobs) * threads, "include_dashboard": False} if address == "local" else {}
        ray.init(address=address, log_to_driver=False, **options)
    try:
        remote = ray.remote(num_cpus=threads)(run_variant)
        refs = [remote.remote({**t, "worker": True, "threads": threads}) for t in tasks]
        log.info("submitted %d variants to Ray at %s", len(refs), address)
        return ray.get(refs)
    finally:
        if started_here:
            ray.shutdown()
