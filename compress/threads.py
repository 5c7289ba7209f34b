"""How many CPU threads torch trains with when the command line does not say (`--threads`).

    with torch_threads(threads or default_threads()):            # compress run
        run_pipeline(config)
    per_trial = threads or default_threads(jobs=4)               # 4 trials at once

The models here are small: a batch is a few milliseconds of work, so torch's threads spend
much of it waiting for each other, and on a machine whose cores are busy with other work a
thread that is descheduled holds all the others up. On a 2-core machine with a load of about
6, 400 training steps of the 784-128-10 MLP took 1.5 s with 1 thread and 17-18 s with 2
(torch's default there), and a whole `compress run pipelines/mnist.toml` 30 s of stages with
1 thread against a first epoch alone of 105 s with 2. So the rule: 1 thread on a machine of 2
CPUs or fewer; otherwise the CPUs that are idle (CPUs minus the 1-minute load average),
shared out among `jobs` processes, at most 4 each (more rarely pays for models this size).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager

MAX_THREADS = 4  # per process: beyond a few threads a small model's batches gain little


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask on Linux)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def load_average() -> float:
    """The 1-minute load average (0 where the system does not report one)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def default_threads(jobs: int = 1, cpus: int | None = None, load: float | None = None) -> int:
    """Torch threads for each of `jobs` processes training at once: 1 on a machine of 2 CPUs
    or fewer, else the idle CPUs (`cpus` minus `load`) shared out, between 1 and MAX_THREADS."""
    cpus = available_cpus() if cpus is None else cpus
    load = load_average() if load is None else load
    if cpus <= 2:
        return 1
    idle = math.floor(cpus - load)
    return max(1, min(MAX_THREADS, idle // max(1, jobs)))


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Train with `threads` torch threads inside the block; the previous count after it (so a
    command run in-process, as the tests do, leaves the caller's setting as it was)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
