"""Small file helpers: atomic writes, hashing, directory locks.

Every file a run produces goes through `atomic_write`, so a reader (or a rerun after a
crash) never sees half a checkpoint or half an ONNX file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from compress.errors import (
    CompressError,
    FileSystemError,
    RunLockedError,
    file_system_error,
    os_error_in,
)

TEMP_SUFFIX = ".tmp"  # of the files atomic_path writes before renaming them into place

# A pipeline's name is its run folder's name (runs/<name>), so it must be a name, not a path:
# a pipeline file from someone else must not make `compress run` write outside runs/.
NAME_RULE = (
    "letters, digits, '.', '_' and '-', starting with a letter or digit, at most 100 characters"
)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def is_plain_name(name: object) -> bool:
    """Whether `name` follows NAME_RULE (so it is one path component, never `.` or `..`)."""
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


def child_path(parent: str | os.PathLike, name: str, what: str) -> Path:
    """`parent / name` for a folder or file name built from settings or data (a sweep
    variant, a tune point): refused unless `name` is one path component inside `parent`."""
    if name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise CompressError(
            f"{what} {name!r} is not a usable folder name: it must not be empty, "
            "'.' or '..', nor hold '/' or '\\'"
        )
    return Path(parent) / name


def stays_inside(relative: str) -> bool:
    """Whether the relative path `relative` (read from a stage record) names a file inside
    the folder it is joined to: not absolute, no `..`. A record edited by hand, or copied
    from someone else, must not make a rerun read or write elsewhere."""
    path = Path(relative)
    return (
        bool(relative)
        and not path.is_absolute()
        and ".." not in path.parts
        and "\0" not in relative
    )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it into place only if the block succeeds.

    A file-system failure (full disk, read-only folder, no permission), even one that the
    writer wrapped in its own exception (torch.save raises RuntimeError), becomes a
    FileSystemError naming `path`; the temporary file is removed either way.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        os.fchmod(fd, 0o666 & ~_umask())
        os.close(fd)
    except OSError as exc:
        raise file_system_error(exc, path) from None
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except FileSystemError:
        raise
    except Exception as exc:
        error = os_error_in(exc)
        if error is None:
            raise
        if error.filename in (None, tmp, str(tmp_path)):  # the write itself: name the file meant
            error = OSError(error.errno, error.strerror, str(path))
        raise file_system_error(error, path) from None
    finally:
        with contextlib.suppress(OSError):
            tmp_path.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def hash_object(obj: Any) -> str:
    """A stable short hash of a JSON-serialisable object (used for cache keys)."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def remove_stale_temp_files(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporary files a killed run left in `directory` and its sub-folders
    (call while holding its lock). Deeper folders, and sub-folders with a lock of their own
    (another run folder), may belong to a process that is still writing: left alone."""
    directory = Path(directory)
    folders = [directory] + [
        d for d in directory.iterdir() if d.is_dir() and not (d / ".lock").exists()
    ]
    stale = [p for d in folders for p in d.glob(f".*{TEMP_SUFFIX}") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


@contextlib.contextmanager
def locked_dir(directory: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on `directory` for the duration of a run."""
    directory = Path(directory)
    lock_path = directory / ".lock"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle = open(lock_path, "a+")  # noqa: SIM115 (closed by the with below)
    except OSError as exc:
        raise file_system_error(exc, lock_path) from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            pid = handle.read().strip() or "unknown"
            raise RunLockedError(
                f"run directory {directory} is in use by another run (pid {pid}); "
                "wait for it to finish or choose another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
