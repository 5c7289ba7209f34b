"""The arrays source: .npz files and memory-mapped .npy pairs of any sample shape, labels as
integers or strings, normalization from the training part written to the metadata, and
batches gathered from the map rather than from a copy of the file."""

from __future__ import annotations

import json
import mmap

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from tiny_mnist import pipeline_text

from compress.cli import main
from compress.config import parse_pipeline
from compress.data import load_data, peek_data, store
from compress.data.arrays import channel_axes
from compress.data.store import SampleStore
from compress.stages.verify import prepare_inputs


def section(**keys) -> object:
    return parse_pipeline({"data": {"name": "arrays", **keys}}, name="p").data


def write_pair(folder, x, y, prefix="train"):
    np.save(folder / f"{prefix}_x.npy", x)
    np.save(folder / f"{prefix}_y.npy", y)
    return [f"{prefix}_x.npy", f"{prefix}_y.npy"]


def sequences(n=200, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 4
    x = rng.normal(size=(n, 32, 3)).astype(np.float32) * [1.0, 5.0, 0.1] + [0.0, 10.0, -3.0]
    return x.astype(np.float32), y


def test_an_npy_pair_is_memory_mapped_and_split_without_reading_the_samples(tmp_path):
    x, y = sequences()
    data = load_data(section(train=write_pair(tmp_path, x, y)), tmp_path)
    stores = [data.images[s] for s in ("train", "val", "test")]
    assert all(isinstance(s, SampleStore) for s in stores)
    assert all(isinstance(s._mapping.array, np.memmap) for s in stores)  # one map, no copy
    assert stores[0]._mapping is stores[1]._mapping is stores[2]._mapping
    index = np.concatenate([s.index for s in stores])
    assert sorted(index.tolist()) == list(range(200))  # disjoint, and every sample once
    assert data.input_shape == (32, 3) and data.kind == "array"
    # a batch is the rows asked for, in the order asked for
    pick = torch.tensor([5, 0, 3])
    assert torch.equal(data.images["val"][pick], torch.from_numpy(x[stores[1].index[[5, 0, 3]]]))
    assert torch.equal(data.labels["val"], torch.from_numpy(y[stores[1].index]))


def test_an_npz_gives_the_same_data_as_the_npy_pair(tmp_path):
    x, y = sequences()
    np.savez(tmp_path / "train.npz", x=x, y=y)
    from_npz = load_data(section(train="train.npz"), tmp_path)
    from_npy = load_data(section(train=write_pair(tmp_path, x, y)), tmp_path)
    for split in ("train", "val", "test"):
        assert torch.equal(from_npz.images[split][:], from_npy.images[split][:])
        assert torch.equal(from_npz.labels[split], from_npy.labels[split])
    assert from_npz.preprocessing == from_npy.preprocessing


@pytest.mark.parametrize(
    "normalize, stats_shape",
    [("channel", (1, 3)), ("feature", (32, 3)), ("none", ())],
)
def test_normalization_comes_from_the_training_part_and_the_metadata_says_it(
    normalize, stats_shape, tmp_path
):
    x, y = sequences()
    data = load_data(section(train=write_pair(tmp_path, x, y), normalize=normalize), tmp_path)
    pre = data.preprocessing
    assert json.dumps(pre) and pre["normalize"] == normalize and pre["input_shape"] == [32, 3]
    assert np.shape(pre["mean"]) == np.shape(pre["std"]) == stats_shape
    train = x[data.images["train"].index].astype(np.float64)
    axes = channel_axes((32, 3), normalize)
    if normalize != "none":
        assert np.allclose(pre["mean"], train.mean(axis=axes, keepdims=True)[0])
        assert np.allclose(pre["std"], train.std(axis=axes, keepdims=True)[0])
    # what a deployer computes from the metadata alone is what training fed the model
    inputs, _ = data.tensors("test")
    metadata = {"preprocessing": json.dumps(pre)}
    raw = data.images["test"].numpy()
    assert np.allclose(prepare_inputs(raw, metadata), inputs.numpy(), atol=1e-5)
    if normalize == "channel":  # each signal of the training part ends near mean 0, std 1
        z = data.tensors("train")[0].double()
        assert torch.allclose(z.mean((0, 1)), torch.zeros(3, dtype=torch.float64), atol=1e-4)
        assert torch.allclose(z.std((0, 1)), torch.ones(3, dtype=torch.float64), atol=1e-2)


@pytest.mark.parametrize(
    "shape, axes", [((8,), (0,)), ((16, 3), (0, 1)), ((1, 6, 5), (0, 2, 3)), ((3, 4, 4), (0, 2, 3))]
)
def test_channel_statistics_follow_the_sample_shape(shape, axes):
    assert channel_axes(shape, "channel") == axes and channel_axes(shape, "feature") == (0,)


def test_labels_may_be_strings_or_integers_named_and_ordered_as_for_csv(tmp_path):
    x, _ = sequences(60)
    words = np.array(["walk", "run", "still"] * 20)
    data = load_data(section(train=write_pair(tmp_path, x, words)), tmp_path)
    assert data.classes == ("run", "still", "walk")
    numbers = np.array([10, 2, 7] * 20, dtype=np.int16)
    data = load_data(section(train=write_pair(tmp_path, x, numbers)), tmp_path)
    assert data.classes == ("2", "7", "10")  # numerically, not as text
    everything = torch.cat([data.labels[s] for s in ("train", "val", "test")])
    assert torch.bincount(everything).tolist() == [20, 20, 20]


def test_a_test_file_and_any_sample_shape_and_integer_samples(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(50, 1, 6, 5)).astype(np.uint8)
    np.savez(tmp_path / "train.npz", x=images, y=np.arange(50) % 2)
    np.savez(tmp_path / "test.npz", x=images[:10], y=np.arange(10) % 2)
    config = section(train="train.npz", test="test.npz")
    data = load_data(config, tmp_path)
    assert data.size("test") == 10 and data.size("train") + data.size("val") == 50
    assert data.input_shape == (1, 6, 5) and np.shape(data.preprocessing["mean"]) == (1, 1, 1)
    assert data.images["test"][:].dtype == torch.float32  # what the model takes
    assert peek_data(config, tmp_path) == ((1, 6, 5), 2)
    assert len(data.files) == 2 and all(len(h) == 64 for h in data.files.values())


def test_reading_a_mapped_split_hands_its_pages_back_in_groups(tmp_path, monkeypatch):
    x, y = sequences(400)  # 384 bytes a sample
    write_pair(tmp_path, x, y)
    monkeypatch.setattr(store, "WINDOW", 4096)
    monkeypatch.setattr(store, "RELEASE_BYTES", 4 * 4096)  # released every 4 windows
    samples = SampleStore(np.load(tmp_path / "train_x.npy", mmap_mode="r"))
    advice = []

    class Spy:  # stands in for the mmap, recording what the store tells the kernel
        def madvise(self, option):
            advice.append(option)

    def released():
        return advice.count(mmap.MADV_DONTNEED)

    samples._mapping.mapped = Spy()
    pick = [399, 0, 200, 5]  # windows 37, 0, 18, 0: one group
    assert np.array_equal(samples[torch.tensor(pick)].numpy(), x[pick]) and released() == 1
    # A shuffled gather reads no more than its pages: no read-ahead.
    assert advice[0] == mmap.MADV_RANDOM
    everything = np.concatenate(list(samples.chunks(100)))
    assert np.array_equal(everything, x)
    assert released() == 1 + 4 * 3  # each chunk of 100 spans 10 windows: 3 groups
    # A pass in order asks for read-ahead again before each chunk.
    assert [a for a in advice[2:] if a != mmap.MADV_DONTNEED] == [mmap.MADV_NORMAL] * 4


@pytest.mark.slow
def test_an_npz_of_sequences_trains_the_1d_model_end_to_end(tmp_path, monkeypatch):
    """cnn1d on an .npz of accelerometer-like windows: channels pruned and shrunk, int8 and
    packed int4; each artifact's accuracy is what its file and metadata give on the .npz."""
    monkeypatch.setenv("COMPRESS_CACHE_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    y = np.arange(240) % 3
    t = np.arange(32) / 8.0
    x = np.sin(
        2 * np.pi * (1 + y[:, None, None]) * t[None, :, None] + rng.uniform(0, 6, (240, 1, 3))
    )
    x = (x + rng.normal(0, 0.3, x.shape)).astype(np.float32)
    names = np.array(["still", "walk", "run"])[y]
    np.savez(tmp_path / "train.npz", x=x[:180], y=names[:180])
    np.savez(tmp_path / "test.npz", x=x[180:], y=names[180:])
    pipeline = tmp_path / "p.toml"
    pipeline.write_text(
        pipeline_text(
            None,
            data={"name": "arrays", "train": "train.npz", "test": "test.npz", "batch_size": 20},
            model={"name": "cnn1d", "kwargs": {"channels": [8, 8]}},
            train={"epochs": 1, "optimizer": "adam", "lr": 0.01, "momentum": None, "l1": None},
            prune={"method": "channels", "amount": 0.25, "threshold": None},
            finetune={"epochs": 1, "optimizer": "adam", "lr": 0.003},
            quantize={"variants": ["static", "packed-int4"]},
            export={"shrink": True},
        ).replace('[data]\nname = "mnist"\n', "[data]\n")
    )
    result = CliRunner().invoke(
        main, ["run", str(pipeline), "--out", str(tmp_path / "run"), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["dataset"]["kind"] == "array" and report["dataset"]["test_samples"] == 60
    rows = {a["name"]: a for a in report["artifacts"]}
    assert set(rows) == {"dense", "pruned", "pruned-int8-static", "pruned-int4-packed"}
    for name, row in rows.items():
        path = tmp_path / "run" / row["path"]
        meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        pre, labels = json.loads(meta["preprocessing"]), json.loads(meta["labels"])
        assert labels == ["run", "still", "walk"] and pre["input_shape"] == [32, 3]
        assert meta["layout"] == "NTF" and np.shape(pre["mean"]) == (1, 3)
        inputs = ((x[180:] - np.float32(pre["mean"])) / np.float32(pre["std"])).astype(np.float32)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        logits = session.run(None, {session.get_inputs()[0].name: inputs})[0]
        accuracy = float(np.mean(np.array(labels)[logits.argmax(1)] == names[180:]))
        assert accuracy == pytest.approx(row["accuracy"]), name
        assert row["status"] == "ok", (name, row["status"])
