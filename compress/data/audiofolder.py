"""Sound clips in class folders, decoded once into a cache.

    [data]
    name = "audiofolder"
    root = "speech"          # speech/train/<word>/<clip>.wav, speech/test/...; else --data-root
    features = "mfcc"        # or "logmel"; the defaults give MLPerf Tiny's 49 x 10 MFCC

Two layouts, as imagefolder is for images: class names are the folder names (sorted),
clips are every .wav file, in sub-folders too.

- split folders: `root/train/<class>/<clip>.wav`, `root/test/<class>/<clip>.wav` (or a
  seeded, stratified `test_fraction` of train/, default 0.2) and, optionally,
  `root/val/<class>/<clip>.wav`: the validation split (then `validation` is not drawn);
- Speech Commands as it ships (no train/ folder, a `testing_list.txt`):
  `root/<word>/<clip>.wav`, with `testing_list.txt` and `validation_list.txt` naming the
  test and validation clips (one path relative to root a line, `/` on every OS); every
  other clip is training. The validation list replaces the seeded `validation` fraction.

A folder `_background_noise_` (beside the class folders of train/, or in root) is not a
class: its clips are the noise that training mixes in.

Each clip is decoded (compress.data.wav: PCM 8/16/24/32-bit, float 32/64-bit), mixed down
to mono (the channels' mean), resampled to `sample_rate` (FFT resampling) and padded with
zeros at the end or cut to its first `clip_seconds`: float32 waveforms in [-1, 1] (16-bit
PCM / 32768). The waveforms go to a cache file (`$COMPRESS_CACHE_DIR`,
`audiofolder-<key>.pt`) keyed by every file's contents and the decoding settings, as
imagefolder's.

Features (compress.data.features) are computed from the waveforms by the front end that
every artifact holds in its graph, after training-time augmentation (compress.data.augment:
`time_shift_ms`, background noise at `noise_volume` with `noise_probability`), per batch.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Annotated, Literal, NamedTuple

import numpy as np
import torch
from pydantic import Field, model_validator

from compress.data.augment import AudioAugmentation
from compress.data.base import DataSource, own_root
from compress.data.dataset import Dataset
from compress.data.features import FeatureSettings, FrontEnd, feature_stats
from compress.data.imagefolder import _content_key, _read_cache, _write_index, cache_dir
from compress.data.registry import register_source
from compress.data.split import DEFAULT_TEST_FRACTION, split_dataset
from compress.data.wav import read_wav, to_clip
from compress.errors import DataError
from compress.files import atomic_path
from compress.sections import DataCommon, PositiveInt

log = logging.getLogger(__name__)

NEEDS_ROOT = "[data] name = 'audiofolder' needs root: the folder holding train/<class>/<clip>.wav"
CACHE_FORMAT = "compress-audiofolder/1"
NOISE = "_background_noise_"
TEST_LIST, VAL_LIST = "testing_list.txt", "validation_list.txt"  # Speech Commands' lists
Unit = Annotated[float, Field(ge=0.0, le=1.0)]


def _wavs_under(folder: Path) -> list[str]:
    found = []
    for parent, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [
            parent + os.sep + f
            for f in files
            if not f.startswith(".") and f.lower().endswith(".wav")
        ]
    return sorted(found)


def _class_dirs(folder: Path) -> list[Path]:
    """The class folders of `folder` (sorted): its sub-folders but hidden ones and NOISE."""
    classes = sorted(
        p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", NOISE))
    )
    if not classes:
        raise DataError(f"{folder} holds no class folders: expected {folder}/<class>/<clip>.wav")
    return classes


def list_split(folder: Path) -> dict[str, list[str]]:
    """Class name -> its .wav files (sorted), for one split folder (without NOISE)."""
    found = {}
    for class_dir in _class_dirs(folder):
        files = _wavs_under(class_dir)
        if not files:
            raise DataError(f"class folder {class_dir} holds no .wav clips")
        found[class_dir.name] = files
    return found


def _listed(root: Path) -> bool:
    """Whether `root` is Speech Commands as it ships: no train/ folder, a testing_list.txt."""
    return not (root / "train").is_dir() and (root / TEST_LIST).is_file()


def check_root(root: Path) -> None:
    if not root.is_dir():
        raise DataError(
            f"audio folder {root} {'is not a folder' if root.exists() else 'does not exist'}"
        )
    if not (root / "train").is_dir() and not _listed(root):
        raise DataError(
            f"{root} has no train/ folder: expected {root}/train/<class>/<clip>.wav, or "
            f"Speech Commands' {root}/<word>/<clip>.wav with {TEST_LIST}"
        )


def _layout(
    root: Path, test_fraction: float | None
) -> tuple[dict[str, dict[str, list[str]]], dict[str, str]]:
    """The clips of each split (split -> class -> paths; "noise" too, when there is some)
    and where the splits read came from (split -> "val/", "testing_list.txt", ...)."""
    check_root(root)
    listed = _listed(root)
    layout, origin = _listed_splits(root) if listed else _split_folders(root)
    if "test" in layout and test_fraction is not None:
        what = TEST_LIST if listed else "a test/ folder"
        raise DataError(
            f"{root} has {what}: remove [data] test_fraction, or the "
            f"{'list' if listed else 'test/ folder'}"
        )
    if len(layout["train"]) < 2:
        where = root if listed else root / "train"
        raise DataError(
            f"{where} holds one class only ({next(iter(layout['train']))}): "
            "classification needs at least two class folders"
        )
    noise = [
        f for d in (root / "train" / NOISE, root / NOISE) if d.is_dir() for f in _wavs_under(d)
    ]
    if noise:
        layout["noise"] = {NOISE: noise}
    return layout, origin


def _split_folders(root: Path) -> tuple[dict, dict[str, str]]:
    """root/train/, and root/val/ and root/test/ where present, each of the same classes."""
    layout = {"train": list_split(root / "train")}
    for split in ("val", "test"):
        if (root / split).is_dir():
            layout[split] = list_split(root / split)
            unknown = sorted(set(layout[split]) - set(layout["train"]))
            missing = sorted(set(layout["train"]) - set(layout[split]))
            if unknown or missing:
                parts = [f"only in {split}/: {', '.join(unknown)}"] if unknown else []
                parts += [f"only in train/: {', '.join(missing)}"] if missing else []
                raise DataError(
                    f"{root}: train/ and {split}/ have different classes ({'; '.join(parts)})"
                )
    return layout, {split: f"{split}/" for split in layout if split != "train"}


def _listed_splits(root: Path) -> tuple[dict, dict[str, str]]:
    """Speech Commands' layout: root/<word>/<clip>.wav; the clips named in testing_list.txt
    are "test", those in validation_list.txt (if there is one) "val", the rest "train"."""
    found = list_split(root)
    listed: dict[str, tuple[str, str, int]] = {}  # path -> (split, list file, line number)
    origin = {}
    for split, name in (("test", TEST_LIST), ("val", VAL_LIST)):
        if not (root / name).is_file():
            continue
        origin[split] = name
        lines = _read_list(root, name, set(found))
        if not lines:
            raise DataError(f"{root / name} names no clips")
        for path, number in lines:
            other = listed.setdefault(path, (split, name, number))
            if other[0] != split:
                raise DataError(
                    f"{root / name} line {number}: {_relative(root, path)} is also in "
                    f"{other[1]} (line {other[2]}): a clip is in one split only"
                )
    layout = {split: {} for split in ("train", *origin)}
    for name, files in found.items():
        for split in layout:
            layout[split][name] = []
        for path in files:
            layout[listed.pop(path, ("train",))[0]][name].append(path)
        if not layout["train"][name]:
            raise DataError(
                f"every clip of {root / name} is listed in {' or '.join(origin.values())}: "
                "none is left to train on"
            )
    if listed:  # a file the class folders hold that is not a clip (hidden, not .wav)
        path, (_, name, number) = next(iter(listed.items()))
        raise DataError(
            f"{root / name} line {number}: {_relative(root, path)} is not a .wav clip "
            "(a hidden file, or another extension)"
        )
    return layout, origin


def _read_list(root: Path, name: str, classes: set[str]) -> list[tuple[str, int]]:
    """The clips a list file names (paths relative to root, with "/"), as the paths
    _wavs_under gives, each with its line number."""
    try:
        text = (root / name).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{root / name} is not UTF-8 text (one clip path a line)") from None
    clips = []
    for number, line in enumerate(text.splitlines(), 1):
        rel = line.strip()
        if not rel:
            continue
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        path = os.sep.join([str(root), *parts])
        where = f"{root / name} line {number}: {rel}"
        if not os.path.isfile(path):
            raise DataError(f"{where} does not exist")
        if len(parts) < 2 or parts[0] not in classes or ".." in parts:
            raise DataError(
                f"{where} is not in a class folder (the sub-folders of {root} but {NOISE})"
            )
        clips.append((path, number))
    return clips


def _relative(root: Path, path: str) -> str:
    return path[len(os.path.join(str(root), "")) :].replace(os.sep, "/")


def _decode_split(
    classes: dict[str, list[str]], names: list[str], rate: int, samples: int | None
) -> tuple[torch.Tensor, torch.Tensor] | list[torch.Tensor]:
    """The clips of one split as waveforms [N, samples] and labels; noise (samples None):
    each clip whole, at `rate`."""
    if samples is None:
        clips = [read_wav(path) for path in classes[NOISE]]
        return [torch.from_numpy(to_clip(c, rate, _resampled_length(c, rate))) for c in clips]
    paths = [(names.index(name), path) for name, files in classes.items() for path in files]
    waves = np.empty((len(paths), samples), dtype=np.float32)
    labels = np.empty(len(paths), dtype=np.int64)
    for i, (label, path) in enumerate(paths):
        waves[i], labels[i] = to_clip(read_wav(path), rate, samples), label
    return torch.from_numpy(waves), torch.from_numpy(labels)


def _resampled_length(clip, rate: int) -> int:
    """The number of samples of `clip` once resampled to `rate`."""
    return max(1, int(round(clip.samples.shape[1] * rate / clip.rate)))


class DecodedFolder(NamedTuple):
    splits: dict[str, tuple[torch.Tensor, torch.Tensor]]  # split -> (waveforms, labels)
    noise: list[torch.Tensor]  # background noise clips, each whole
    classes: list[str]
    key: str  # the content key: every file, the list files and the decoding settings
    origin: dict[str, str]  # split read (not drawn) -> where: "val/", "testing_list.txt", ...


def decode_folder(
    root: Path, rate: int, samples: int, test_fraction: float | None
) -> DecodedFolder:
    """The decoded splits, the noise clips, class names and the content key (cached)."""
    layout, origin = _layout(root, test_fraction)
    names = list(layout["train"])
    settings = {"kind": "audio", "sample_rate": rate, "samples": samples}
    lists = [n for n in origin.values() if n in (TEST_LIST, VAL_LIST)]
    if lists:  # which split a clip is in shows in the key already; the files too, as read
        settings["lists"] = tuple(
            (n, hashlib.blake2b((root / n).read_bytes(), digest_size=16).hexdigest()) for n in lists
        )
    started = time.perf_counter()
    key, index_path, new_index = _content_key(root, layout, settings)
    cache_file = cache_dir() / f"audiofolder-{key}.pt"
    state = _read_cache(cache_file, CACHE_FORMAT)
    if state is None:
        splits = {
            split: _decode_split(classes, names, rate, None if split == "noise" else samples)
            for split, classes in layout.items()
        }
        log.info("audio folder %s: decoded in %.1fs", root, time.perf_counter() - started)
        state = {"format": CACHE_FORMAT, "splits": splits, "classes": names}
        try:
            with atomic_path(cache_file) as tmp:
                torch.save(state, tmp)
        except OSError as exc:  # a read-only cache folder costs speed, not the run
            log.warning("cannot write the audio cache %s (%s)", cache_file, exc.strerror)
    if new_index is not None:
        _write_index(index_path, new_index)
    splits = dict(state["splits"])
    return DecodedFolder(splits, splits.pop("noise", []), state["classes"], key, origin)


class AudioFolderDataConfig(DataCommon):
    """root/train/<class>/<clip>.wav, root/test/... (or test_fraction) and root/val/... (or
    the validation fraction); or Speech Commands' root/<word>/<clip>.wav and its lists."""

    name: Literal["audiofolder"]
    sample_rate: PositiveInt = 16000  # every clip is resampled to it
    clip_seconds: Annotated[float, Field(gt=0.0)] = 1.0  # padded (zeros at the end) or cut
    # without test/ (or testing_list.txt)
    test_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] | None = None
    features: Literal["mfcc", "logmel"] = "mfcc"
    n_mels: PositiveInt = 40
    n_mfcc: PositiveInt = 10
    window_ms: Annotated[float, Field(gt=0.0)] = 30.0
    hop_ms: Annotated[float, Field(gt=0.0)] = 20.0
    n_fft: PositiveInt | None = None  # None: the next power of two at or above the window
    f_min: Annotated[float, Field(ge=0.0)] = 20.0
    f_max: Annotated[float, Field(gt=0.0)] = 4000.0
    spectrum: Literal["magnitude", "power"] = "magnitude"
    # Augmentation in every stage that trains (as the Speech Commands scripts): each clip
    # moved by up to time_shift_ms either way, and with noise_probability a stretch of a
    # _background_noise_ clip added at a volume drawn from [0, noise_volume].
    time_shift_ms: Annotated[float, Field(ge=0.0)] = 100.0
    noise_volume: Unit = 0.1
    noise_probability: Unit = 0.8

    @model_validator(mode="after")
    def _consistent(self) -> AudioFolderDataConfig:
        s = self.settings()
        if s.window > s.clip_samples:
            raise ValueError(f"window_ms = {self.window_ms} is longer than the clip")
        if s.fft_size < s.window:
            raise ValueError(f"n_fft = {self.n_fft} is shorter than the window ({s.window})")
        if not self.f_min < self.f_max <= self.sample_rate / 2:
            raise ValueError("need f_min < f_max <= sample_rate / 2")
        if self.features == "mfcc" and self.n_mfcc > self.n_mels:
            raise ValueError(f"n_mfcc = {self.n_mfcc} exceeds n_mels = {self.n_mels}")
        return self

    def settings(self) -> FeatureSettings:
        return FeatureSettings(
            sample_rate=self.sample_rate,
            clip_samples=max(1, int(round(self.clip_seconds * self.sample_rate))),
            features=self.features,
            n_mels=self.n_mels,
            n_mfcc=self.n_mfcc,
            window_ms=self.window_ms,
            hop_ms=self.hop_ms,
            n_fft=self.n_fft,
            f_min=self.f_min,
            f_max=self.f_max,
            spectrum=self.spectrum,
        )


@register_source
class AudioFolder(DataSource):
    names = ("audiofolder",)
    Config = AudioFolderDataConfig

    def root(self, config, base_dir: str | Path, override: str | Path | None) -> Path | None:
        """[data] root, else --data-root; None without either (check and load refuse it)."""
        if config.root is None and override is not None:
            return Path(override).expanduser()
        return own_root(config, base_dir)

    def check(self, config: AudioFolderDataConfig, root: Path | None) -> None:
        check_root(_needed(root))

    def load(self, config: AudioFolderDataConfig, root: Path | None) -> Dataset:
        """The audio folder `root` as a Dataset (see the module docstring)."""
        root = _needed(root)
        settings = config.settings()
        folder = decode_folder(
            root, settings.sample_rate, settings.clip_samples, config.test_fraction
        )
        noise, classes, key = folder.noise, folder.classes, folder.key
        waves = {split: x for split, (x, _) in folder.splits.items()}
        labels = {split: y for split, (_, y) in folder.splits.items()}
        split_dataset(waves, labels, config.validation, config.seed, config.test_fraction)
        log.info("audio folder %s: %s", root, _describe(folder.origin, waves, config))
        # standardized with the training part's statistics, after validation is held out
        frontend = FrontEnd(settings, feature_stats(settings, waves["train"]))
        samples = settings.clip_samples
        augmentation = AudioAugmentation(
            shift=int(round(config.time_shift_ms * settings.sample_rate / 1000)),
            noise=[_long_enough(n, samples) for n in noise],
            noise_volume=config.noise_volume,
            noise_probability=config.noise_probability,
        )
        keys = (
            "validation", "seed", "test_fraction", "time_shift_ms", "noise_volume",
            "noise_probability",
        )  # fmt: skip
        return Dataset(
            name="audiofolder",
            images=waves,
            labels=labels,
            classes=tuple(classes),
            mean=0.0,
            std=1.0,
            files={str(root): key},
            kind="audio",
            scale=1 / 32768,
            settings={
                "source": "audiofolder",
                **{k: getattr(config, k) for k in keys},
                "features": settings.as_dict(),
            },
            frontend=frontend,
            augmentation=augmentation,
        )

    def peek(self, config: AudioFolderDataConfig, root: Path | None):
        """Feature shape and number of classes from the settings and the folder names (the
        folders and list files checked as `load` checks them, no clip decoded)."""
        if root is None or not root.is_dir():
            return None
        s = config.settings()
        layout, _ = _layout(root, config.test_fraction)
        return (1, s.frames, s.coefficients), len(layout["train"])


def _describe(origin: dict[str, str], waves: dict, config: AudioFolderDataConfig) -> str:
    """The log line of the splits: their sizes and where each came from."""
    fraction = config.test_fraction or DEFAULT_TEST_FRACTION
    test = origin.get("test") or f"test_fraction = {fraction:g} of train"
    val = (
        f"{origin['val']}; [data] validation = {config.validation:g} not drawn"
        if "val" in origin
        else f"validation = {config.validation:g} of train"
    )
    return (
        f"{len(waves['train'])} train, {len(waves['val'])} validation ({val}), "
        f"{len(waves['test'])} test ({test}) clips"
    )


def _long_enough(clip: torch.Tensor, samples: int) -> torch.Tensor:
    """A noise clip at least `samples` long (a shorter one repeated)."""
    if len(clip) >= samples:
        return clip
    return clip.repeat(-(-samples // len(clip)))


def _needed(root: Path | None) -> Path:
    if root is None:
        raise DataError(NEEDS_ROOT)
    return root
