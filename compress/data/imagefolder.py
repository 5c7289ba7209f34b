"""Image folders in torchvision's ImageFolder layout, decoded once into a tensor cache.

    [data]
    name = "imagefolder"
    root = "photos"         # photos/train/<class>/<image>, photos/test/...; else --data-root

`root/train/<class>/<image>` and `root/test/<class>/<image>`: class names are the folder
names (sorted; index = output position), images are every file Pillow reads by its
extension (png, jpg, bmp, gif, webp, ...), in sub-folders too. Without `test/`, a seeded,
stratified `test_fraction` (default 0.2) of train/ is the test split. Images are converted
to `channels` (1: grayscale, 3: RGB) and resized to `image_size = [h, w]` (bilinear; without
it every image must have the first one's size). Mean and std per channel come from the
training part, after the validation split is held out.

Decoding is done once: the uint8 tensors go to a cache file (`$COMPRESS_CACHE_DIR`, default
~/.cache/compress, `imagefolder-<key>.pt`, written atomically), keyed by every file's path,
size and contents and by the settings; a later run reads the files only to hash them and
loads the tensors (an index of the files' sizes, modification times and content hashes
spares reading the unchanged ones). Errors name the file or folder: a corrupt image, an
empty class folder, one class only, train and test with different classes.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import time
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import Field

from compress.data.base import DataSource, ImageDataCommon, own_root
from compress.data.dataset import Dataset, channel_stats
from compress.data.registry import register_source
from compress.data.split import split_dataset
from compress.errors import DataError
from compress.files import atomic_path
from compress.sections import PositiveInt

log = logging.getLogger(__name__)

NEEDS_ROOT = "[data] name = 'imagefolder' needs root: the folder holding train/<class>/<image>"
CACHE_FORMAT = "compress-imagefolder/1"


def cache_dir() -> Path:
    return Path(os.environ.get("COMPRESS_CACHE_DIR") or Path.home() / ".cache" / "compress")


def image_extensions() -> set[str]:
    from PIL import Image

    return {ext.lower() for ext in Image.registered_extensions()}


def _images_under(folder: Path, extensions: set[str]) -> list[str]:
    # os.walk and plain strings: pathlib costs seconds over tens of thousands of files
    found = []
    for parent, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [
            parent + os.sep + f
            for f in files
            if not f.startswith(".") and os.path.splitext(f)[1].lower() in extensions
        ]
    return sorted(found)


def list_split(folder: Path) -> dict[str, list[str]]:
    """Class name -> its image files (sorted), for one split folder."""
    extensions = image_extensions()
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{folder} holds no class folders: expected {folder}/<class>/<image>")
    found = {}
    for class_dir in classes:
        files = _images_under(class_dir, extensions)
        if not files:
            raise DataError(
                f"class folder {class_dir} holds no images "
                f"({', '.join(sorted(extensions)[:6])}, ...)"
            )
        found[class_dir.name] = files
    return found


def check_root(root: Path) -> None:
    """That `root` is a folder with a train/ folder in it (without listing the images)."""
    if not root.is_dir():
        raise DataError(
            f"image folder {root} {'is not a folder' if root.exists() else 'does not exist'}"
        )
    if not (root / "train").is_dir():
        raise DataError(f"{root} has no train/ folder: expected {root}/train/<class>/<image>")


def _layout(root: Path, test_fraction: float | None) -> dict[str, dict[str, list[str]]]:
    check_root(root)
    train_dir, test_dir = root / "train", root / "test"
    layout = {"train": list_split(train_dir)}
    if test_dir.is_dir():
        if test_fraction is not None:
            raise DataError(
                f"{root} has a test/ folder: remove [data] test_fraction, or the test/ folder"
            )
        layout["test"] = list_split(test_dir)
        if set(layout["test"]) != set(layout["train"]):
            only_train = sorted(set(layout["train"]) - set(layout["test"]))
            only_test = sorted(set(layout["test"]) - set(layout["train"]))
            parts = [
                f"only in train/: {', '.join(only_train)}" if only_train else "",
                f"only in test/: {', '.join(only_test)}" if only_test else "",
            ]
            raise DataError(
                f"{root}: train/ and test/ have different classes "
                f"({'; '.join(p for p in parts if p)})"
            )
    if len(layout["train"]) < 2:
        raise DataError(
            f"{train_dir} holds one class only ({next(iter(layout['train']))}): "
            "classification needs at least two class folders"
        )
    return layout


def _content_key(root: Path, layout: dict, settings: dict) -> tuple[str, Path, dict | None]:
    """A hash of every file's path, size and contents, and of the settings.

    The contents' hashes are remembered in an index beside the cache (path -> size,
    modification time, hash), so a later run reads only the files whose size or
    modification time changed: on an unchanged folder it costs one stat per file.
    """
    root_key = hashlib.blake2b(str(root.resolve()).encode(), digest_size=8).hexdigest()
    index_path = cache_dir() / f"imagefolder-index-{root_key}.npz"
    index = _read_index(index_path)
    fresh = {}
    digest = hashlib.blake2b(repr(sorted(settings.items())).encode(), digest_size=16)
    prefix = len(os.path.join(str(root), ""))
    for split, classes in layout.items():
        for name, files in classes.items():
            for path in files:
                rel = path[prefix:].replace(os.sep, "/")
                stat = os.stat(path)
                known = index.get(rel)
                if known is not None and known[0] == stat.st_size and known[1] == stat.st_mtime_ns:
                    content = known[2]
                else:
                    with open(path, "rb") as f:
                        content = hashlib.blake2b(f.read(), digest_size=16).hexdigest()
                fresh[rel] = (stat.st_size, stat.st_mtime_ns, content)
                digest.update(f"{split}\0{name}\0{rel}\0{stat.st_size}\0{content}\0".encode())
    # the index is written only once the folder has decoded: a bad folder leaves nothing
    return digest.hexdigest(), index_path, (fresh if fresh != index else None)


def _read_index(path: Path) -> dict[str, tuple[int, int, str]]:
    """path -> (size, modification time in ns, content hash), as `_write_index` stored it."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            names = stored["names"].tobytes().decode().split("\n")
            sizes, times = stored["sizes"].tolist(), stored["times"].tolist()
            hashes = stored["hashes"].tobytes().hex()
    except (OSError, ValueError, KeyError, UnicodeDecodeError):
        return {}
    if not (len(names) == len(sizes) == len(times) == len(hashes) // 32):
        return {}
    return {
        n: (s, t, hashes[32 * i : 32 * i + 32])
        for i, (n, s, t) in enumerate(zip(names, sizes, times, strict=True))
    }


def _write_index(path: Path, index: dict[str, tuple[int, int, str]]) -> None:
    # numpy arrays: a JSON index of 70,000 files takes most of a second to parse
    names = np.frombuffer("\n".join(index).encode(), dtype=np.uint8)
    values = list(index.values())
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(
                f,
                names=names,
                sizes=np.array([v[0] for v in values], dtype=np.int64),
                times=np.array([v[1] for v in values], dtype=np.int64),
                hashes=np.frombuffer(bytes.fromhex("".join(v[2] for v in values)), dtype=np.uint8),
            )
    except OSError as exc:  # a read-only cache folder costs speed, not the run
        log.warning("cannot write the image index %s (%s)", path, exc.strerror)


def _decode(path: str, channels: int, size: tuple[int, int] | None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as f:
            raw = f.read()
        with Image.open(io.BytesIO(raw)) as image:
            image = image.convert("L" if channels == 1 else "RGB")
            if size is not None and image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            array = np.asarray(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{path} is not a readable image ({type(exc).__name__}: {exc})") from None
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def _decode_split(
    classes: dict[str, list[str]], names: list[str], channels: int, size: tuple[int, int] | None
) -> tuple[torch.Tensor, torch.Tensor]:
    paths = [(names.index(name), path) for name, files in classes.items() for path in files]
    first = _decode(paths[0][1], channels, size)
    shape = first.shape
    images = np.empty((len(paths), *shape), dtype=np.uint8)
    labels = np.empty(len(paths), dtype=np.int64)
    for i, (label, path) in enumerate(paths):
        array = first if i == 0 else _decode(path, channels, size)
        if array.shape != shape:
            raise DataError(
                f"{path} is {array.shape[2]}x{array.shape[1]} "
                f"but {paths[0][1]} is {shape[2]}x{shape[1]}: "
                "set [data] image_size = [h, w] to resize every image"
            )
        images[i], labels[i] = array, label
    return torch.from_numpy(images), torch.from_numpy(labels)


def _read_cache(path: Path, format: str = CACHE_FORMAT) -> dict | None:
    if not path.is_file():
        return None
    try:
        state = torch.load(path, weights_only=True)
    except Exception as exc:  # a damaged cache file is decoded again, not trusted
        log.warning("ignoring unreadable image cache %s (%s)", path, exc)
        return None
    return state if isinstance(state, dict) and state.get("format") == format else None


def decode_folder(
    root: Path, channels: int, image_size: list[int] | None, test_fraction: float | None
) -> tuple[dict, list[str], str]:
    """The decoded splits ("train", and "test" when root has test/), class names and the
    content key, from the cache when it holds them."""
    layout = _layout(root, test_fraction)
    names = list(layout["train"])
    settings = {"channels": channels, "image_size": image_size}
    started = time.perf_counter()
    key, index_path, new_index = _content_key(root, layout, settings)
    cache_file = cache_dir() / f"imagefolder-{key}.pt"
    state = _read_cache(cache_file)
    if state is not None:
        if new_index is not None:
            _write_index(index_path, new_index)
        log.info(
            "image folder %s: tensors from cache %s (%.1fs)",
            root,
            cache_file,
            time.perf_counter() - started,
        )
        return state["splits"], state["classes"], key
    size = (image_size[0], image_size[1]) if image_size else None
    splits = {
        split: _decode_split(classes, names, channels, size) for split, classes in layout.items()
    }
    count = sum(len(y) for _, y in splits.values())
    log.info(
        "image folder %s: decoded %d images in %.1fs", root, count, time.perf_counter() - started
    )
    try:
        with atomic_path(cache_file) as tmp:
            torch.save({"format": CACHE_FORMAT, "splits": splits, "classes": names}, tmp)
    except OSError as exc:  # a read-only cache folder costs speed, not the run
        log.warning(
            "cannot write the image cache %s (%s); images will be decoded again next time",
            cache_file,
            exc.strerror,
        )
    if new_index is not None:
        _write_index(index_path, new_index)
    return splits, names, key


class ImageFolderDataConfig(ImageDataCommon):
    """root/train/<class>/<image> and root/test/<class>/<image> (or test_fraction)."""

    name: Literal["imagefolder"]
    image_size: Annotated[list[PositiveInt], Field(min_length=2, max_length=2)] | None = (
        None  # [h, w]
    )
    channels: Literal[1, 3] = 3
    test_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] | None = (
        None  # without test/: default 0.2
    )


@register_source
class ImageFolder(DataSource):
    names = ("imagefolder",)
    Config = ImageFolderDataConfig

    def root(
        self, config: ImageFolderDataConfig, base_dir: str | Path, override: str | Path | None
    ) -> Path | None:
        """[data] root, else --data-root; None without either (check and load refuse it)."""
        if config.root is None and override is not None:
            return Path(override).expanduser()
        return own_root(config, base_dir)

    def check(self, config: ImageFolderDataConfig, root: Path | None) -> None:
        check_root(_needed(root))

    def load(self, config: ImageFolderDataConfig, root: Path | None) -> Dataset:
        """The image folder `root` as a Dataset (see the module docstring)."""
        root = _needed(root)
        splits, classes, key = decode_folder(
            root, config.channels, config.image_size, config.test_fraction
        )
        images = {split: x for split, (x, _) in splits.items()}
        labels = {split: y for split, (_, y) in splits.items()}
        split_dataset(images, labels, config.validation, config.seed, config.test_fraction)
        mean, std = channel_stats(images["train"])
        settings = {
            "source": "imagefolder",
            "validation": config.validation,
            "seed": config.seed,
            "test_fraction": config.test_fraction,
        }
        return Dataset(
            name="imagefolder",
            images=images,
            labels=labels,
            classes=tuple(classes),
            mean=mean,
            std=std,
            files={str(root): key},
            settings=settings,
        )

    def peek(
        self, config: ImageFolderDataConfig, root: Path | None
    ) -> tuple[tuple[int, ...], int] | None:
        """Input shape and number of classes from the folder names and the first image's
        header (None when there is no train/ folder to look at)."""
        if root is None or not (root / "train").is_dir():
            return None
        classes = list_split(root / "train")
        if config.image_size is not None:
            return (config.channels, *config.image_size), len(classes)
        from PIL import Image, UnidentifiedImageError

        first = next(iter(classes.values()))[0]
        try:
            with Image.open(first) as image:
                width, height = image.size
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(
                f"{first} is not a readable image ({type(exc).__name__}: {exc})"
            ) from None
        return (config.channels, height, width), len(classes)


def _needed(root: Path | None) -> Path:
    if root is None:
        raise DataError(NEEDS_ROOT)
    return root
