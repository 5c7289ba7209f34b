"""A content-addressed stage cache shared by many run folders (sweeps, tuning, variants).

    cache = StageCache("runs/sweep/cache")
    with cache.lock("train", key):                      # one process per key at a time
        record = cache.fetch("train", key, inputs, run_dir)
        if record is None:
            ...run the stage into run_dir...
            cache.store(record, run_dir)

Layout: `<cache>/<stage>/<key>/stage.json` (the stage's record, as in a run folder) beside
copies of its outputs at the same relative paths as in a run folder (`train/model.pt`,
`dense.onnx`, ...). The key already hashes everything a stage depends on (see
compress.pipeline), so an entry can be reused by any run folder whose stage has that key.
An entry is used only if its outputs still match their recorded sha256 and it was made
from the same parent outputs (`inputs`) as the run asking for it.

Files are hard-linked where possible (every writer in compress replaces files atomically,
never in place, so a shared inode is never modified), copied otherwise. A lock file per
key (`<cache>/<stage>/<key>.lock`, flock) serialises processes that want the same stage,
so parallel variants run a shared stage once and the others wait and reuse it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from compress.files import atomic_path, read_json, sha256_file, stays_inside, write_json

log = logging.getLogger(__name__)


def link_or_copy(source: Path, target: Path) -> None:
    """Put `source`'s content at `target` atomically: a hard link, or a copy across devices."""
    with atomic_path(target) as tmp:
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copy2(source, tmp)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created if missing), waiting for other holders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for %s (another process is running this stage)", path)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class StageCache:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def entry(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def lock(self, stage: str, key: str):
        return file_lock(self.root / stage / f"{key}.lock")

    def lookup(self, stage: str, key: str, inputs: dict[str, str]) -> dict | None:
        """The entry's record if it exists, matches `inputs` and its files are intact."""
        entry = self.entry(stage, key)
        try:
            record = read_json(entry / "stage.json")
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("key") != key:
            return None
        if record.get("inputs", {}) != inputs:
            log.info("%s: cache entry %s was made from other parent files; not used", stage, key)
            return None
        if not all(isinstance(rel, str) and stays_inside(rel) for rel in record.get("outputs", {})):
            log.warning(
                "%s: cache entry %s names an output outside its folder; not used", stage, key
            )
            return None
        for rel, digest in record.get("outputs", {}).items():
            file = entry / rel
            if not file.is_file() or sha256_file(file) != digest:
                log.warning(
                    "%s: cache entry %s has a missing or changed %s; not used", stage, key, rel
                )
                return None
        return record

    def fetch(self, stage: str, key: str, inputs: dict[str, str], run_dir: Path) -> dict | None:
        """Link a usable entry's outputs and record into `run_dir`; None if there is none."""
        record = self.lookup(stage, key, inputs)
        if record is None:
            return None
        entry = self.entry(stage, key)
        for rel in record.get("outputs", {}):
            link_or_copy(entry / rel, run_dir / rel)
        write_json(run_dir / stage / "stage.json", record)
        return record

    def store(self, record: dict, run_dir: Path) -> None:
        """Copy a finished stage (its record and outputs in `run_dir`) into the cache,
        replacing an older entry of the same key. Call while holding `lock`."""
        stage, key = record["name"], record["key"]
        entry = self.entry(stage, key)
        entry.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=entry.parent))
        try:
            for rel in record.get("outputs", {}):
                target = staging / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(run_dir / rel, target)
                except OSError:
                    shutil.copy2(run_dir / rel, target)
            write_json(staging / "stage.json", record)
            if entry.exists():
                shutil.rmtree(entry)
            os.replace(staging, entry)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
