"""What a data source is: a typed [data] section and one loader.

    class NpzConfig(DataCommon):
        name: Literal["npz"]                # the [data] name it is chosen by
        file: str

    @register_source
    class Npz(DataSource):
        names = ("npz",)
        Config = NpzConfig
        def load(self, config, root): ...   # -> Dataset, its splits made by split_dataset

A source reads its files into "train" (and "test", "val" when they have them), hands them
to compress.data.split.split_dataset for the seeded, stratified test and validation parts,
and returns a Dataset whose `files` are the content hashes of what it read (the
fingerprint in every stage's cache key: a source without them would let changed data pass
for the old). Besides `load`, a source says where its files are (`root`), checks that
they exist without reading them (`check`, before any work) and, where it can, tells the
input shape and the number of classes without decoding the data (`peek`, for `compress
validate`). tests/test_data_sources.py holds every registered source to that contract.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from compress.data.dataset import Dataset
from compress.sections import DataCommon, NonNegativeInt


class ImageDataCommon(DataCommon):
    """Keys every image source has."""

    # Augmentation: each training image moved by a random whole-pixel offset of up to this
    # many pixels in each direction, in every stage that trains (dense training, gradual
    # pruning, fine-tuning), so the dense baseline is trained the same way. 0: off.
    shift: NonNegativeInt = 0


def own_root(config: DataCommon, base_dir: str | Path) -> Path | None:
    """[data] root, taken from the pipeline file's folder unless absolute (None if unset)."""
    if config.root is None:
        return None
    path = Path(config.root).expanduser()
    return path if path.is_absolute() else Path(base_dir) / path


class DataSource:
    # The [data] name values it reads; its Config's `name` is a Literal of them.
    names: ClassVar[tuple[str, ...]]
    Config: ClassVar[type[DataCommon]]
    # True for data sets known by name (read from --data-root, else [data] root, else ./data),
    # which compress.data.load_dataset reads; false for a user's own files.
    named: ClassVar[bool] = False

    def root(
        self, config: DataCommon, base_dir: str | Path, override: str | Path | None
    ) -> Path | None:
        """The folder the data is read from: --data-root (`override`), else [data] root,
        else ./data. Sources of a pipeline's own files override this: --data-root is the
        folder of the named data sets."""
        if override is not None:
            return Path(override).expanduser()
        return own_root(config, base_dir) or Path("data")

    def check(self, config: DataCommon, root: Path | None) -> None:
        """That the files `config` names exist, without reading them (cheap: `run` and
        `validate` call it before anything is loaded). Default: nothing beyond the root."""

    def load(self, config: DataCommon, root: Path | None) -> Dataset:
        """The data `config` describes, read from `root`, with its three splits."""
        raise NotImplementedError

    def peek(self, config: DataCommon, root: Path | None) -> tuple[tuple[int, ...], int] | None:
        """(input shape, number of classes) when known without decoding the data; None when
        only reading it would tell. Default: None."""
        return None


class OwnFilesSource(DataSource):
    """A source of the pipeline's own files (a CSV table, arrays): they are found from [data]
    root, else from the pipeline file's folder."""

    def root(self, config: DataCommon, base_dir: str | Path, override: str | Path | None) -> Path:
        """[data] root, else the pipeline file's folder: --data-root (the named data sets'
        folder) does not move a pipeline's own files."""
        return own_root(config, base_dir) or Path(base_dir)
