"""Downloads that leave nothing behind when they fail.

    fetch_into(root, "cifar10", lambda tmp: CIFAR10(tmp, download=True))

The download runs in a fresh folder beside the data (`root/.download-<name>-<pid>`); on
success what it made is moved into `root`, on failure that folder (and `root`, if the
download created it) is removed and the error gives the cause.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from compress.errors import DataError

log = logging.getLogger(__name__)


def _merge(src: Path, dst: Path) -> None:
    """Move `src` into `dst`, keeping what `dst` already holds."""
    if not dst.exists():
        os.replace(src, dst)
        return
    if src.is_dir() and dst.is_dir():
        for child in src.iterdir():
            _merge(child, dst / child.name)


def fetch_into(root: Path, name: str, fetch: Callable[[Path], None], hint: str) -> None:
    """Run `fetch(folder)`, then move its results into `root`; raise DataError on failure."""
    created = not root.exists()
    tmp = root / f".download-{name}-{os.getpid()}"
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        log.info("downloading %s into %s", name, root)
        fetch(tmp)
        for entry in tmp.iterdir():
            _merge(entry, root / entry.name)
    except Exception as exc:  # network errors come in many types
        log.debug("download failed", exc_info=True)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{name}: download failed ({reason}); {hint}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if created and root.exists() and not any(root.iterdir()):
            root.rmdir()
