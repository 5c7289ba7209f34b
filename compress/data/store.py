"""Samples gathered on demand from a numpy array: a memory map of an .npy file, or an array
in memory, and the indices of one split.

    x = np.load("x.npy", mmap_mode="r")                  # nothing read yet
    train = SampleStore(x)                               # every sample
    val = train.subset(held)                             # indices only: no copy
    batch = val[torch.tensor([4, 0, 9])]                 # float32 tensor [3, *sample shape]
    for chunk in val.chunks(4096): ...                   # float32 numpy chunks, in order
    everything = val.numpy()                             # the whole split (only where needed)

A Dataset holds one per split in place of a tensor (compress.data.dataset), so a data set
larger than memory trains batch by batch: indexing gathers only the rows asked for.
Samples come out as float32 whatever the file holds (the model's input type).

Pages of a memory map that were read stay mapped into the process and count in its
resident set until the kernel needs the memory, so a full pass over a 4 GB file would
look like 4 GB resident. A read maps more than the sample: the page cache holds files in
folios of up to 2 MB, mapped whole on a fault, so a shuffled batch of 1,024 small samples
can map a gigabyte. The store therefore reads the rows of a gather in groups that fall in
at most `RELEASE_BYTES` of 2 MB windows and after each group tells the kernel it no longer
needs the pages (madvise MADV_DONTNEED, some 20 microseconds): they stay in the page
cache, so reading them again is cheap, and the resident set stays flat.

When the file is larger than the page cache can hold (more data than memory, or a process
held to less by a cgroup), the folios themselves are the cost: each sample of a shuffled
batch read a 2 MB folio from disk for its few hundred bytes, and an epoch over 4.1 GB under
a 1.2 GB memory limit had read 352 GB after 15 minutes. A shuffled gather therefore asks
the kernel for no read-ahead (MADV_RANDOM: a fault reads its 4 KB page), and a pass in
order (`chunks`) for the default read-ahead again.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator

import numpy as np
import torch

RELEASE_BYTES = 64 << 20
WINDOW = 2 << 20  # the most one page fault maps: a 2 MB folio of the page cache


class _Mapping:
    """The array shared by every subset of one file, and whether its pages can be released
    (a memory map; an array in memory has none)."""

    def __init__(self, array: np.ndarray):
        self.array = array
        mapped = getattr(array, "_mmap", None)  # np.memmap's mmap.mmap
        self.mapped = mapped if isinstance(mapped, mmap.mmap) else None

    def read(self, sorted_rows: np.ndarray, in_order: bool = False) -> np.ndarray:
        """The rows (sorted), read from the map in groups, its pages released after each;
        `in_order`: consecutive rows (read-ahead helps), else a shuffled gather (it does not)."""
        if self.mapped is None or not hasattr(mmap, "MADV_DONTNEED"):
            return self.array[sorted_rows]
        advice = mmap.MADV_NORMAL if in_order else getattr(mmap, "MADV_RANDOM", mmap.MADV_NORMAL)
        self.mapped.madvise(advice)
        out = np.empty((len(sorted_rows), *self.array.shape[1:]), self.array.dtype)
        for start, stop in self._groups(sorted_rows):
            out[start:stop] = self.array[sorted_rows[start:stop]]
            self.mapped.madvise(mmap.MADV_DONTNEED)
        return out

    def _groups(self, sorted_rows: np.ndarray) -> list[tuple[int, int]]:
        """Runs of rows that fall in at most RELEASE_BYTES of WINDOW-sized windows."""
        row_bytes = max(1, self.array[:1].nbytes)
        windows = sorted_rows * row_bytes // WINDOW
        new = np.concatenate([[0], np.cumsum(np.diff(windows) != 0)])  # window number
        cuts = np.searchsorted(new, np.arange(0, new[-1] + 1, RELEASE_BYTES // WINDOW))
        bounds = [*cuts.tolist(), len(sorted_rows)]
        return list(zip(bounds[:-1], bounds[1:], strict=True))


class SampleStore:
    """The samples `index` (all when None) of `array` [N, ...], indexed like a tensor."""

    def __init__(self, array: np.ndarray | _Mapping, index: np.ndarray | None = None):
        self._mapping = array if isinstance(array, _Mapping) else _Mapping(array)
        n = len(self._mapping.array)
        self.index = np.arange(n, dtype=np.int64) if index is None else np.asarray(index, np.int64)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.index), *self._mapping.array.shape[1:])

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key: torch.Tensor | np.ndarray | slice | int) -> torch.Tensor:
        """The samples at `key` (an index tensor or array, a slice or one position)."""
        if isinstance(key, torch.Tensor):
            key = key.numpy()
        return torch.from_numpy(self._gather(self.index[key]))

    def subset(self, index: torch.Tensor | np.ndarray) -> SampleStore:
        """The samples at `index`, still unread."""
        index = index.numpy() if isinstance(index, torch.Tensor) else np.asarray(index)
        return SampleStore(self._mapping, self.index[index])

    def chunks(self, size: int = 4096) -> Iterator[np.ndarray]:
        """Every sample, in order, as float32 chunks of up to `size` samples."""
        for start in range(0, len(self.index), size):
            yield self._gather(self.index[start : start + size], in_order=True)

    def numpy(self) -> np.ndarray:
        """The whole split as one float32 array (a copy in memory: for modest splits)."""
        return self._gather(self.index)

    def _gather(self, rows: np.ndarray, in_order: bool = False) -> np.ndarray:
        # Sorted rows read the file front to back; the batch keeps the order asked for.
        rows = np.asarray(rows)
        if rows.ndim == 0:
            samples = self._mapping.read(rows[None])[0]
        else:
            order = np.argsort(rows, kind="stable")
            samples = np.empty((len(rows), *self._mapping.array.shape[1:]), np.float32)
            samples[order] = self._mapping.read(rows[order], in_order)
        return samples.astype(np.float32, copy=False)
