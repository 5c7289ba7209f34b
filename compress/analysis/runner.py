"""The runs of the many-run commands (sweep, tune, search): in this process, in worker
processes, or as Ray tasks.

    settings = TaskSettings.of("pipelines/mnist.toml", "runs/sweep", what="sweep variant")
    tasks = [settings.task("amount-0.9", {"prune.amount": 0.9}), ...]
    results = run_tasks(tasks, jobs=2)                    # in order; the first failure stops
    results = run_tasks(tasks, jobs=4, ray_address="local")

    with Runner(jobs=2, keep_going=True) as runner:       # as runs finish (search's loop)
        runner.submit(task)
        for result in runner.wait(): ...                  # a failure comes back as `error`

A Task is a frozen dataclass and a result a plain dict (RunResult), so that both cross
processes and Ray. Each worker gets its share of the CPUs as torch threads and logs only
warnings to the terminal (each run's INFO lines go to its run.log).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any, NotRequired, TypedDict

from compress.config import load_pipeline
from compress.errors import CompressError
from compress.files import child_path
from compress.threads import available_cpus, torch_threads

log = logging.getLogger(__name__)

RAY_HINT = "pip install 'compress[ray]'"

__all__ = [
    "RAY_HINT",
    "RunResult",
    "Runner",
    "Task",
    "TaskSettings",
    "available_cpus",
    "import_ray",
    "run_task",
    "run_tasks",
]


@dataclass(frozen=True)
class Task:
    """One pipeline run of a many-run command: a sweep variant, a tune point, a search trial."""

    name: str  # the run's folder name under the command's folder, and its name in the output
    overrides: dict[str, Any]  # dotted key -> value, applied to the pipeline file
    pipeline: str  # the pipeline file (absolute)
    run_dir: str
    data_root: str | None
    cache_dir: str  # the stage cache every run of the command shares
    device: str = "cpu"
    threads: int | None = (
        None  # torch threads (None: torch's choice; in a worker, the CPUs shared out)
    )


@dataclass(frozen=True)
class TaskSettings:
    """What every run of one command shares; `task(name, overrides)` makes each run's Task
    (the one place a Task is built)."""

    pipeline: str
    out: str
    data_root: str | None
    cache_dir: str
    device: str = "cpu"
    threads: int | None = None
    what: str = "run"  # names a run in the error when its name is no usable folder name
    overrides: dict[str, Any] = field(default_factory=dict)  # under every run's own (tune's --set)

    @classmethod
    def of(
        cls,
        pipeline: str | Path,
        out_dir: str | Path,
        data_root: str | None = None,
        cache_dir: str | Path | None = None,
        device: str = "cpu",
        threads: int | None = None,
        what: str = "run",
        overrides: dict[str, Any] | None = None,
    ) -> TaskSettings:
        """Paths made absolute (a worker or a Ray node may start elsewhere); the cache is
        `<out>/cache` unless given."""
        out = Path(out_dir).resolve()
        return cls(
            pipeline=str(Path(pipeline).resolve()),
            out=str(out),
            data_root=str(Path(data_root).expanduser().resolve()) if data_root else None,
            cache_dir=str(Path(cache_dir).resolve() if cache_dir else out / "cache"),
            device=device,
            threads=threads,
            what=what,
            overrides=dict(overrides or {}),
        )

    def run_dir(self, name: str) -> Path:
        return child_path(Path(self.out), name, self.what)

    def task(self, name: str, overrides: dict[str, Any]) -> Task:
        return Task(
            name=name,
            overrides={**self.overrides, **overrides},
            pipeline=self.pipeline,
            run_dir=str(self.run_dir(name)),
            data_root=self.data_root,
            cache_dir=self.cache_dir,
            device=self.device,
            threads=self.threads,
        )


class RunResult(TypedDict):
    """One finished run: its report.json, or (with keep_going) the error that stopped it."""

    name: str
    overrides: dict[str, Any]
    run_dir: str
    report: NotRequired[dict]  # compress.results.Report
    error: NotRequired[str]  # "ExceptionType: message", on one line


def run_task(task: Task) -> RunResult:
    """Run one task's pipeline (its [sweep] table emptied: a run never sweeps)."""
    from compress.pipeline import run_pipeline

    config = load_pipeline(task.pipeline).with_overrides({**task.overrides, "sweep": {}})
    report = run_pipeline(
        config,
        out_dir=task.run_dir,
        data_root=task.data_root,
        device=task.device,
        progress=False,
        cache_dir=task.cache_dir,
    )
    return {
        "name": task.name,
        "overrides": task.overrides,
        "run_dir": task.run_dir,
        "report": report,
    }


def _execute(task: Task, keep_going: bool, run: Callable[[Task], RunResult] | None) -> RunResult:
    run = run or run_task  # looked up now: a test may stand in for it
    if not keep_going:
        return run(task)
    try:
        return run(task)
    except Exception as exc:  # noqa: BLE001 - keep_going: one failed run must not end the others
        message = " ".join(str(exc).splitlines()) or type(exc).__name__
        return {
            "name": task.name,
            "overrides": task.overrides,
            "run_dir": task.run_dir,
            "error": f"{type(exc).__name__}: {message}",
        }


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


def _in_worker(task: Task, keep_going: bool, run: Callable[[Task], RunResult] | None) -> RunResult:
    """A task in a worker process or a Ray task (its `threads` are set by the Runner)."""
    import torch

    torch.set_num_threads(task.threads)
    _quiet_worker_logging()
    return _execute(task, keep_going, run)


def import_ray():
    try:
        import ray
    except ImportError:
        raise CompressError(f"--ray needs Ray, which is not installed here: {RAY_HINT}") from None
    return ray


class Runner:
    """Tasks in this process (jobs 1), in `jobs` spawned worker processes, or as Ray tasks
    (`ray_address`: "local" starts a private cluster here, anything else joins one).

    `submit` a task, `wait` for at least one to finish. Without `keep_going` a failed run
    raises its exception from `wait`; with it, the failure is a result with `error`. `run`
    runs one task (default run_task; a module-level function, so that it crosses processes)."""

    def __init__(
        self,
        jobs: int = 1,
        ray_address: str | None = None,
        keep_going: bool = False,
        run: Callable[[Task], RunResult] | None = None,
    ):
        self.jobs = max(1, jobs)
        self.ray_address = ray_address
        self.keep_going = keep_going
        self.run = run
        self.share = max(
            1, available_cpus() // self.jobs
        )  # a worker's threads when a task names none
        self.queue: list[Task] = []  # in this process: run when waited for
        self.futures: set[Future] = set()
        self.refs: list = []
        self.pool: ProcessPoolExecutor | None = None
        self.ray = None
        self.ray_started_here = False
        self.remotes: dict[int, Any] = {}  # the remote function per threads a task asks for
        if ray_address is not None:
            self.ray = import_ray()
        elif self.jobs > 1:
            # spawn: a fresh interpreter per worker (forking a process that has used torch's
            # thread pools can hang)
            self.pool = ProcessPoolExecutor(max_workers=self.jobs, mp_context=get_context("spawn"))

    @property
    def mode(self) -> str:
        return "ray" if self.ray is not None else "processes" if self.pool is not None else "inline"

    def submit(self, task: Task) -> None:
        if self.mode == "inline":
            self.queue.append(task)
            return
        task = replace(task, threads=task.threads or self.share)
        if self.pool is not None:
            self.futures.add(self.pool.submit(_in_worker, task, self.keep_going, self.run))
            return
        self._start_ray(task.threads)
        if task.threads not in self.remotes:
            self.remotes[task.threads] = self.ray.remote(num_cpus=task.threads)(_in_worker)
        self.refs.append(self.remotes[task.threads].remote(task, self.keep_going, self.run))

    def _start_ray(self, threads: int) -> None:
        if self.ray_started_here or self.ray.is_initialized():
            return
        # "local": a private cluster of `jobs` runs' CPUs on this machine; anything else
        # ("auto", "host:port", "ray://...") connects to a running one
        options = (
            {"num_cpus": self.jobs * threads, "include_dashboard": False}
            if self.ray_address == "local"
            else {}
        )
        self.ray.init(address=self.ray_address, log_to_driver=False, **options)
        self.ray_started_here = True
        log.info("Ray started at %s", self.ray_address)

    def pending(self) -> int:
        return len(self.queue) + len(self.futures) + len(self.refs)

    def wait(self) -> list[RunResult]:
        """The results of the runs that finished (at least one; the first queued, in this
        process)."""
        if self.mode == "inline":
            task = self.queue.pop(0)
            if task.threads:
                with torch_threads(task.threads):
                    return [_execute(task, self.keep_going, self.run)]
            return [_execute(task, self.keep_going, self.run)]
        if self.pool is not None:
            done, self.futures = wait(self.futures, return_when=FIRST_COMPLETED)
            return [f.result() for f in done]
        done, self.refs = self.ray.wait(self.refs, num_returns=1)
        return self.ray.get(done)

    def close(self) -> None:
        """Stop what is still running (a failure or Ctrl-C) and release the workers."""
        self.queue.clear()
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
        if self.ray is not None:
            for ref in self.refs:
                self.ray.cancel(ref, force=True)
            if self.ray_started_here:
                self.ray.shutdown()

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_tasks(tasks: list[Task], jobs: int = 1, ray_address: str | None = None) -> list[RunResult]:
    """Run every task (jobs 1: one after another here; else `jobs` at once in processes, or
    as Ray tasks); results come back in the order of `tasks`. The first failure stops them."""
    results: dict[str, RunResult] = {}
    with Runner(jobs, ray_address) as runner:
        for task in tasks:
            runner.submit(task)
        while runner.pending():
            for result in runner.wait():
                results[result["name"]] = result
                log.info("%s done (%d/%d)", result["name"], len(results), len(tasks))
    return [results[t.name] for t in tasks]
