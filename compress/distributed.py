"""Data-parallel training across processes: `compress run --nproc N`, or torchrun.

    torchrun --nproc-per-node 2 -m compress run pipelines/mnist.toml   # or:
    compress run pipelines/mnist.toml --nproc 2

    device = init(device)                # joins the process group when RANK/WORLD_SIZE are set
    part, weight = shard(len(index))     # this rank's slice of a global batch
    average_gradients(params, weight)    # after backward: the global batch's mean gradient
    checksum = check_in_step(model, "train", epoch)   # every rank holds the same weights

`batch_size` is the global batch: every step, each of the N ranks trains on its slice of the
same shuffled batch (the permutation comes from the shared seed), and the gradients are
summed with each rank's weighted by its share of the samples, which is the gradient of the
whole batch's mean loss. So the number of steps, the learning rate and its schedule are
those of one process; only the order of float sums differs (and BatchNorm's batch
statistics, over a rank's slice unless `[train] sync_batchnorm`).

Gradients are all-reduced by hand rather than through DistributedDataParallel: the pruning
masks re-parametrize weights (`weight_orig` * mask forward hooks), fake quantization and
variational dropout add parameters in their `attach`, and some parameters get no gradient
in a step; the modifiers and checkpoints also address the model by its own module names,
which a DDP wrapper would prefix. An all-reduce after `backward` (before the modifiers'
`after_backward`, so a proximal L1 step or a gradual pruning decision acts on identical
parameters) leaves all of that as it is. With one process every function here does nothing,
so results stay those of one process bit for bit.

Rank 0 alone writes the run folder; the other ranks run the training stages in a private
scratch folder, with the input files (checkpoints, resume points) sent to them by rank 0
over the process group, so machines need not share a folder. A collective that fails (a
rank died) or waits longer than COMPRESS_DIST_TIMEOUT seconds (default 600) ends the run
with one line.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.nn as nn

from compress.errors import CompressError

log = logging.getLogger(__name__)

TIMEOUT_VARIABLE = "COMPRESS_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 600
FINAL_TIMEOUT = timedelta(hours=24)  # the other ranks wait this long for rank 0's export
LAUNCHED = "COMPRESS_NPROC"  # set by `compress run --nproc` for its workers


class PeerLost(CompressError):
    """Another process of the run stopped (or stalled): a collective failed or timed out.
    Its own exit status, so that the launcher tells it from the failure that caused it."""

    exit_status = 5


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def world() -> World:
    """This process's place in the run, from torchrun's variables (one process without)."""
    try:
        return World(
            int(os.environ.get("RANK", 0)),
            int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)),
        )
    except ValueError:
        raise CompressError("RANK, WORLD_SIZE and LOCAL_RANK must be integers") from None


def active() -> bool:
    """Whether this process trains with others (the process group is up, of 2 or more)."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def launched() -> bool:
    """Whether `compress run --nproc` started this process (it reports failures itself)."""
    return os.environ.get(LAUNCHED) == "1"


_groups: dict[str, object] = {}


def init(device: torch.device) -> torch.device:
    """Join the process group when torchrun started several processes: gloo on the CPU,
    nccl on CUDA, each process on its local GPU. Returns the device to train on."""
    import torch.distributed as dist

    here = world()
    if here.size <= 1 or active():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", here.local_rank)
        torch.cuda.set_device(device)
    timeout = timedelta(seconds=timeout_seconds())
    backend = "nccl" if device.type == "cuda" else "gloo"
    try:
        dist.init_process_group(backend, timeout=timeout, device_id=_device_id(device))
        # control messages (objects, files) and the final wait go through gloo on the CPU
        _groups["control"] = dist.new_group(backend="gloo", timeout=timeout)
        _groups["final"] = dist.new_group(backend="gloo", timeout=FINAL_TIMEOUT)
    except (RuntimeError, ValueError) as exc:
        raise PeerLost(f"could not join the other processes: {_first_line(exc)}") from None
    log.info("rank %d of %d, %s on %s", here.rank, here.size, backend, device)
    if not here.main:  # rank 0 tells the user what the run does; the others say only errors
        logging.getLogger().setLevel(logging.ERROR)
    return device


def _device_id(device: torch.device) -> torch.device | None:
    return device if device.type == "cuda" else None


def timeout_seconds() -> float:
    raw = os.environ.get(TIMEOUT_VARIABLE, str(DEFAULT_TIMEOUT_S))
    try:
        seconds = float(raw)
    except ValueError:
        raise CompressError(f"{TIMEOUT_VARIABLE}={raw!r}: give seconds, a number") from None
    if seconds <= 0:
        raise CompressError(f"{TIMEOUT_VARIABLE}={raw!r}: give more than 0 seconds")
    return seconds


def finish() -> None:
    """The end of the run: the other ranks wait for rank 0 (export, quantize, verify, the
    report), then everyone leaves the process group."""
    import torch.distributed as dist

    if not active():
        return
    _collective(lambda: dist.barrier(group=_groups["final"]))
    dist.destroy_process_group()
    _groups.clear()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _collective(call):
    """Run one collective; a failure (a rank died, a timeout) is one PeerLost line."""
    try:
        return call()
    except (RuntimeError, ValueError) as exc:  # DistBackendError is a RuntimeError
        rank = world().rank
        raise PeerLost(
            f"rank {rank}: another process of the run stopped or stalled "
            f"({_first_line(exc)}); run the same command again to resume from the last "
            "checkpoint"
        ) from None


# ---------------------------------------------------------------- training steps


def shard(n: int) -> tuple[slice, float]:
    """This rank's slice of a global batch of `n` samples and its share of them (the weight
    of its gradient). The slices split the batch as torch.tensor_split does. A rank left
    without samples (the last batch smaller than the world) trains on the whole batch with
    weight 0, so that every rank runs the same steps."""
    if not active():
        return slice(None), 1.0
    import torch.distributed as dist

    return part_of(n, dist.get_world_size(), dist.get_rank())


def part_of(n: int, size: int, rank: int) -> tuple[slice, float]:
    """shard() for a world of `size`, at `rank`."""
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    count = base + (1 if rank < extra else 0)
    if count == 0:
        return slice(None), 0.0
    return slice(start, start + count), count / n


def average_gradients(params: list[nn.Parameter], weight: float) -> None:
    """Replace each rank's gradients by the weighted sum over ranks (the whole batch's)."""
    if not active():
        return
    import torch.distributed as dist

    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads]).mul_(weight)
    _collective(lambda: dist.all_reduce(flat))
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def sum_(*tensors: torch.Tensor) -> None:
    """Sum each tensor over the ranks, in place (an epoch's loss and correct answers)."""
    if not active():
        return
    import torch.distributed as dist

    for t in tensors:
        _collective(lambda t=t: dist.all_reduce(t))


def max_(tensor: torch.Tensor) -> None:
    """The largest value over the ranks, in place (a non-finite loss seen by any rank)."""
    if not active():
        return
    import torch.distributed as dist

    _collective(lambda: dist.all_reduce(tensor, op=dist.ReduceOp.MAX))


def broadcast_buffers(model: nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) to every rank, as DDP does: each
    rank's running statistics saw only its slices."""
    if not active():
        return
    import torch.distributed as dist

    for buffer in model.buffers():
        _collective(lambda b=buffer: dist.broadcast(b, src=0))


def checksum(model: nn.Module) -> float:
    """The float64 sum of every parameter and buffer: equal on every rank in step."""
    total = torch.zeros((), dtype=torch.float64)
    for value in model.state_dict().values():
        if torch.is_tensor(value) and not value.is_complex():
            total += value.detach().to("cpu", torch.float64).sum()
    return total.item()


def check_in_step(model: nn.Module, desc: str, epoch: int) -> float | None:
    """After an epoch: every rank's checksum, compared; a rank that drifted ends the run in
    one line. Returns the checksum (None with one process)."""
    if not active():
        return None
    import torch.distributed as dist

    mine = checksum(model)
    sums: list[float | None] = [None] * dist.get_world_size()
    _collective(lambda: dist.all_gather_object(sums, mine, group=_groups["control"]))
    if any(s != sums[0] for s in sums):
        from compress.errors import TrainingError

        raise TrainingError(
            f"{desc}: the ranks' weights differ after epoch {epoch + 1} "
            f"(checksums {', '.join(repr(s) for s in sums)}); a rank drifted"
        )
    return mine


def sync_batchnorm(model: nn.Module, device: torch.device):
    """SyncBatchNorm in place of every BatchNorm for the fit (batch statistics over the
    whole global batch); returns a function that puts the BatchNorms back. The same
    parameters and buffers are kept, so the optimizer and checkpoints see no change."""
    from torch.nn.modules.batchnorm import _BatchNorm

    if not active():
        return lambda: None
    if device.type == "cpu":
        raise CompressError(
            "[train] sync_batchnorm needs CUDA (torch's SyncBatchNorm runs on GPUs); "
            "train on the CPU without it"
        )
    originals = [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, _BatchNorm) and not isinstance(m, nn.SyncBatchNorm) and name
    ]
    for name, m in originals:
        _set_module(model, name, nn.SyncBatchNorm.convert_sync_batchnorm(m))

    def restore() -> None:
        for name, m in originals:
            _set_module(model, name, m)

    return restore


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


# ---------------------------------------------------------------- files between ranks


def scratch_dir(run_dir: Path) -> Path:
    """The private folder of a rank other than 0 for the run folder `run_dir` (what it writes
    there is never kept): named after both, so that a rerun after a rank was killed clears
    what the killed one left."""
    import hashlib

    tag = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:12]
    path = Path(tempfile.gettempdir()) / f"compress-rank{world().rank}-{tag}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def remove_scratch(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def share_files(run_dir: Path, names: list[str] | None) -> list[str] | None:
    """Rank 0 sends `names` (paths in its run folder, or None: nothing to do) with their
    bytes; the other ranks write them into their own `run_dir`. Returns the names."""
    import torch.distributed as dist

    if not active():
        return names
    payload = [None]
    if world().main:
        payload = [
            None
            if names is None
            else {rel: (run_dir / rel).read_bytes() for rel in names if (run_dir / rel).is_file()}
        ]
    _collective(lambda: dist.broadcast_object_list(payload, src=0, group=_groups["control"]))
    files = payload[0]
    if files is None:
        return None
    if not world().main:
        for rel, content in files.items():
            (run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (run_dir / rel).write_bytes(content)
    return list(files)


# ---------------------------------------------------------------- compress run --nproc


def launch(nproc: int, args: list[str]) -> None:
    """`compress run ... --nproc N`: `python -m compress ARGS` in N processes on this machine
    through torch.distributed.run (as `torchrun --standalone --nproc-per-node N` would).
    Rank 0 writes to the terminal; the others' output goes to log files, so that a failure
    ends in one line: rank 0's own `error:` line, or one here naming the rank that stopped
    first (its last `error:` line, or how it died). Exits as the run did."""
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    logs = Path(tempfile.mkdtemp(prefix="compress-ranks-"))
    redirects = ",".join(f"{r}:3" for r in range(1, nproc)) or "0"
    options = ["--standalone", f"--nproc-per-node={nproc}", "--max-restarts=0"]
    options += [f"--log-dir={logs}", f"--redirects={redirects}", "-m", "compress", *args]
    import torch.distributed.elastic.agent.server.api  # noqa: F401 (creates its loggers)

    # the launcher's own loggers each set their level: quiet them one by one
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    os.environ[LAUNCHED] = "1"
    try:
        torchrun.run(torchrun.parse_args(options))
    except ChildFailedError as exc:
        status, line = failure_line(exc.failures, logs)
        if line:
            print(f"error: {line}", file=sys.stderr)
        raise SystemExit(status) from None
    except SignalException as exc:  # Ctrl-C or SIGTERM: the launcher stopped the ranks
        if exc.sigval != signal.SIGINT:  # on Ctrl-C rank 0 says "interrupted; ..." itself
            print("terminated; run the same command again to resume", file=sys.stderr)
        raise SystemExit(128 + int(exc.sigval)) from None
    finally:
        os.environ.pop(LAUNCHED, None)
        shutil.rmtree(logs, ignore_errors=True)


def failure_line(failures: dict, logs: Path) -> tuple[int, str | None]:
    """The exit status and the one line for a failed launch: rank 0's failure when it is its
    own (it printed its line), else the first rank that stopped, other than those stopped by
    the launcher (SIGTERM) or by a lost peer (PeerLost); a rank aborted (SIGABRT) comes after
    the others too, as gloo aborts a process whose peer vanished mid-collective."""

    def collateral(failure) -> bool:
        return failure.exitcode in (PeerLost.exit_status, 143, -signal.SIGTERM)

    def aborted(failure) -> bool:
        return failure.exitcode == -signal.SIGABRT

    rank, failure = min(
        failures.items(),
        key=lambda item: (collateral(item[1]), aborted(item[1]), item[1].timestamp, item[0]),
    )
    status = failure.exitcode if failure.exitcode > 0 else 1
    if rank == 0 and failure.exitcode > 0 and not collateral(failure):
        return status, None
    said = _last_error_line(logs, failure.local_rank)
    if said:
        return status, f"rank {rank}: {said}"
    if failure.exitcode < 0:
        how = f"was killed by {failure.signal_name()}"
    else:
        how = f"exited with status {failure.exitcode}"
    return status, (
        f"rank {rank} (pid {failure.pid}) {how}; the others were stopped; run the same "
        "command again to resume from the last checkpoint"
    )


def _last_error_line(logs: Path, local_rank: int) -> str | None:
    lines = []
    for path in logs.glob(f"**/{local_rank}/stderr.log"):
        lines += [
            line.removeprefix("error: ").strip()
            for line in path.read_text(errors="replace").splitlines()
            if line.startswith("error: ")
        ]
    return lines[-1] if lines else None
