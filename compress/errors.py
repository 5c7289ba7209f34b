"""The tool's own errors: the CLI prints their message on one line and exits with
`exit_status` (2: the user's to fix; 1: the file system refused a read or write; 3: an
output failed the tool's own check; 4: `run --require-budget` and no artifact fits; 5: another
process of a data-parallel run stopped, compress.distributed.PeerLost)."""

from __future__ import annotations

import difflib
import errno
import os


class CompressError(Exception):
    """A mistake in the user's input (pipeline file, data, model): shown without a traceback."""

    exit_status = 2


class ConfigError(CompressError):
    """The pipeline file is invalid."""


class DataError(CompressError):
    """A data set is missing, truncated or corrupt."""


class TrainingError(CompressError):
    """Training diverged (NaN or infinite loss)."""


class RunLockedError(CompressError):
    """Another run holds the run directory."""


class ExportError(CompressError):
    """The model cannot be exported to ONNX (an operation or control flow the exporter lacks)."""


class IntegrityError(CompressError):
    """An output failed the tool's own check (pruned weights moved, a package does not unpack
    to its file): not the user's mistake, but reported the same way, with exit status 3."""

    exit_status = 3


class StrictWarningError(IntegrityError):
    """`compress run --strict`: an artifact verified but got a warning (at chance while
    training accuracy is high). The run is complete and its report written; exit status 3,
    the status of an output that failed the tool's own check."""


class BudgetError(CompressError):
    """`compress run --require-budget`: no artifact fits the pipeline's [budget]. The run is
    complete and its report written; exit status 4."""

    exit_status = 4


class FileSystemError(CompressError):
    """The file system refused a read or write (read-only, full, permission denied): the CLI
    prints one line naming the path and exits with status 1; nothing half-written is left."""

    exit_status = 1


def closest(name: str, known: list[str]) -> str | None:
    """The known name the user probably meant, for a "did you mean": one that differs only
    in case, else the closest spelling (difflib), else None."""
    same = [k for k in known if k.casefold() == name.casefold()]
    if same:
        return same[0]
    close = difflib.get_close_matches(name, known, n=1)
    return close[0] if close else None


# errno -> what the user needs to do about it
_NEEDS = {
    errno.ENOSPC: "free disk space there",
    errno.EDQUOT: "free disk space there (quota exceeded)",
    errno.EROFS: "a writable folder (the file system is read-only; choose another --out)",
    errno.EACCES: "permission to read and write there",
    errno.EPERM: "permission to read and write there",
    errno.ENOENT: "the folder to exist",
    errno.ENOTDIR: "a folder there, not a file",
    errno.EISDIR: "a file there, not a folder",
    errno.EEXIST: "nothing else at that path",
}


def os_error_in(exc: BaseException) -> OSError | None:
    """The OSError behind `exc` (itself, or what it was raised from, e.g. torch.save's
    RuntimeError after a failed write), or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError) and exc.errno is not None:
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


_WRITING = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def file_system_error(exc: OSError, path: str | os.PathLike | None = None) -> FileSystemError:
    """One line: the path, what went wrong and what is needed."""
    where = exc.filename if exc.filename is not None else path
    reason = (exc.strerror or os.strerror(exc.errno or 0) or type(exc).__name__).lower()
    need = _NEEDS.get(exc.errno, "")
    action = "write" if exc.errno in _WRITING else "use"
    text = (
        f"cannot {action} {where}: {reason}"
        if where is not None
        else f"file system error: {reason}"
    )
    if need:
        text += f" (needs {need}; then run the same command again to resume)"
    return FileSystemError(text)
