"""Sound: WAV decoding, the MFCC front end (in torch and inside the ONNX graph), waveform
augmentation, and a whole audiofolder run whose artifacts take the raw waveform."""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
import zlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn
from data_files import tone, wav_bytes, write_audio_folder, write_speech_commands
from tiny_mnist import pipeline_text

from compress.config import VerifyConfig, load_pipeline, parse_pipeline
from compress.data import check_files, load_data, peek_data
from compress.data.augment import AudioAugmentation, augment_audio, time_shift
from compress.data.features import FeatureSettings, FrontEnd, WithFrontEnd
from compress.data.wav import read_wav, resample, to_clip
from compress.encode.frontend import frontend_model, frontend_node_names, generate_constants
from compress.encode.onnx_tools import get_metadata, parameter_counts
from compress.pipeline import run_pipeline
from compress.stages.export import to_onnx
from compress.stages.verify import check_frontend

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.mark.parametrize(
    "tag, bits, extensible, step",
    [
        (1, 8, False, 1 / 64),
        (1, 16, False, 1 / 16384),
        (1, 24, False, 1e-6),
        (1, 32, False, 1e-6),
        (3, 32, False, 1e-7),
        (3, 64, False, 1e-7),
        (1, 16, True, 1 / 16384),
        (3, 32, True, 1e-7),
    ],
    ids=["pcm8", "pcm16", "pcm24", "pcm32", "float32", "float64", "ext-pcm16", "ext-float32"],
)
def test_every_supported_encoding_reads_back_the_samples(tmp_path, tag, bits, extensible, step):
    x = tone(440, 0.05)
    path = tmp_path / "a.wav"
    path.write_bytes(wav_bytes(x, 16000, bits=bits, tag=tag, extensible=extensible))
    clip = read_wav(path)
    assert clip.rate == 16000 and clip.samples.shape == (1, len(x))
    assert clip.samples.dtype == np.float32 and np.abs(clip.samples[0] - x).max() <= step


def test_stereo_is_mixed_down_to_the_mean_of_its_channels(tmp_path):
    left, right = tone(300, 0.05), tone(900, 0.05, seed=3)
    (tmp_path / "s.wav").write_bytes(wav_bytes(np.stack([left, right]), bits=32, tag=3))
    mono = to_clip(read_wav(tmp_path / "s.wav"), 16000, 800)
    assert np.abs(mono - (left + right) / 2).max() < 1e-6


def test_an_8_khz_clip_is_resampled_to_the_same_tone_at_16_khz(tmp_path):
    t8, t16 = np.arange(2000) / 8000, np.arange(4000) / 16000  # 0.25 s; 1 kHz fits exactly
    (tmp_path / "lo.wav").write_bytes(wav_bytes(0.5 * np.sin(2 * np.pi * 1000 * t8), 8000))
    x = to_clip(read_wav(tmp_path / "lo.wav"), 16000, 4000)
    assert np.abs(x - 0.5 * np.sin(2 * np.pi * 1000 * t16)).max() < 1e-3
    assert len(resample(np.ones(441, np.float32), 44100, 16000)) == 160


def test_a_clip_is_padded_with_zeros_at_the_end_or_cut_to_its_start(tmp_path):
    (tmp_path / "a.wav").write_bytes(wav_bytes(tone(440, 0.01)))
    clip = read_wav(tmp_path / "a.wav")
    padded, cut = to_clip(clip, 16000, 300), to_clip(clip, 16000, 100)
    assert np.all(padded[160:] == 0) and np.array_equal(padded[:100], cut)


def test_the_defaults_give_mlperf_tinys_49_by_10_mfcc_from_fixed_buffers():
    settings = FeatureSettings()
    assert (settings.window, settings.hop, settings.fft_size) == (480, 320, 512)
    front = FrontEnd(settings)
    assert front(torch.zeros(3, 16000)).shape == (3, 1, 49, 10)
    assert list(front.parameters()) == []  # nothing to train, prune or quantize
    assert {name for name, _ in front.named_buffers()} == {"dft", "mel", "dct", "mean", "inv_std"}
    logmel = FrontEnd(FeatureSettings(features="logmel"))
    assert logmel(torch.zeros(1, 16000)).shape == (1, 1, 49, 40)


def test_a_tone_lights_the_mel_band_of_its_frequency():
    front = FrontEnd(FeatureSettings(features="logmel"))
    low, high = (torch.from_numpy(tone(f, 1.0)).float()[None] for f in (300, 3000))
    assert front(low)[0, 0].mean(0).argmax() < front(high)[0, 0].mean(0).argmax()


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, FrontEnd]:
    """A front end and a Linear classifier exported as one graph (once: exports take s)."""
    tmp_path = tmp_path_factory.mktemp("export")
    front = FrontEnd(FeatureSettings(clip_samples=4000), stats=([1.0] * 10, [2.0] * 10))
    torch.manual_seed(0)
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(12 * 10, 3))
    path = tmp_path / "m.onnx"
    proto = to_onnx(WithFrontEnd(front, classifier).eval(), (4000,), 17)
    assert generate_constants(proto, front.settings.as_dict()) > 400_000  # bytes saved
    onnx.save(proto, path)
    return path, front


def test_the_exported_graph_computes_the_training_features_from_a_few_scalars(exported):
    path, front = exported
    waves = torch.from_numpy(np.stack([tone(f, 0.25) for f in (200, 700, 2500)])).float()
    part = frontend_model(onnx.load(path))
    got = ort.InferenceSession(part.SerializeToString()).run(None, {"input": waves.numpy()})[0]
    assert np.abs(got - front(waves)[:, 0].numpy()).max() < 1e-4
    assert parameter_counts(onnx.load(path))[0] == 12 * 10 * 3 + 3  # the classifier's only


def test_quantizers_leave_the_front_end_float(exported, tmp_path):
    from compress.config import QuantizeConfig
    from compress.stages.quantize import write_variant

    path, _ = exported
    calibration = np.stack([tone(f, 0.25) for f in (200, 700, 2500)]).astype(np.float32)
    for variant in ("static", "dynamic"):
        target = tmp_path / f"{variant}.onnx"
        write_variant(path, target, variant, QuantizeConfig(variants=[variant]), calibration)
        model = onnx.load(target)
        front = set(frontend_node_names(model))
        nodes = {n.name: n for n in model.graph.node}
        assert front and not any("Quant" in nodes[n].op_type for n in front), variant
        conv = next(nodes[n] for n in front if nodes[n].op_type == "Conv")
        assert conv.input[1] == "frontend.dft"  # computed in the graph, in float
        assert path.stat().st_size < 20_000
        assert any(
            n.op_type in ("DequantizeLinear", "DynamicQuantizeLinear") for n in nodes.values()
        )


def test_time_shift_moves_each_clip_by_its_own_seeded_offset():
    waves = torch.arange(1, 11, dtype=torch.float32).repeat(4, 1)
    a = time_shift(waves, 3, torch.Generator().manual_seed(0))
    b = time_shift(waves, 3, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == waves.shape
    for row in a:  # the same samples in order, moved by at most 3, zeros moved in
        kept = row[row != 0]
        assert torch.equal(kept, torch.arange(kept[0], kept[0] + len(kept))) and len(kept) >= 7


def test_background_noise_is_mixed_in_at_most_at_its_volume():
    waves = torch.zeros(64, 100)
    aug = AudioAugmentation(noise=[torch.ones(500)], noise_volume=0.1, noise_probability=0.5)
    mixed = augment_audio(waves, aug, torch.Generator().manual_seed(1))
    levels = mixed[:, 0]
    assert 10 < int((levels > 0).sum()) < 54 and float(levels.max()) <= 0.1
    assert torch.equal(augment_audio(waves, AudioAugmentation(), torch.Generator()), waves)


def audio_config(root: Path, **keys):
    section = {"name": "audiofolder", "root": str(root), "clip_seconds": 0.25, **keys}
    return parse_pipeline({"data": section}, name="p").data


def clips_of(root: Path, paths: list[str]) -> set[bytes]:
    """The waveforms `load` gives for these clips (paths relative to root), as bytes."""
    return {to_clip(read_wav(root / p), 16000, 4000).tobytes() for p in paths}


def rows(x: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in x}


def test_speech_commands_as_it_ships_splits_by_its_lists(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("COMPRESS_CACHE_DIR", str(tmp_path / "cache"))
    testing = ["yes/speaker0_nohash_0.wav", "no/speaker1_nohash_0.wav", "up/speaker2_nohash_0.wav"]
    validation = ["yes/speaker3_nohash_0.wav", "no/speaker3_nohash_0.wav"]
    words = {"yes": 6, "no": 6, "up": 6}
    root = write_speech_commands(tmp_path / "speech", words, testing, validation)
    config = audio_config(root, validation=0.5)
    check_files(config, tmp_path)
    assert peek_data(config, tmp_path) == ((1, 12, 10), 3)
    caplog.set_level(logging.INFO, logger="compress.data.audiofolder")
    data = load_data(config, tmp_path)
    assert data.classes == ("no", "up", "yes")  # the sub-folders but _background_noise_
    assert rows(data.images["test"]) == clips_of(root, testing)
    assert rows(data.images["val"]) == clips_of(root, validation)  # not half of train
    every = [f"{w}/speaker{i}_nohash_0.wav" for w in words for i in range(6)]
    rest = [p for p in every if p not in testing + validation]
    assert rows(data.images["train"]) == clips_of(root, rest) and len(rest) == 13
    names = [data.classes[int(y)] for y in data.labels["test"]]
    assert sorted(names) == sorted(p.split("/")[0] for p in testing)
    assert len(data.augmentation.noise) == 1  # root/_background_noise_/hum.wav
    assert "2 validation (validation_list.txt; [data] validation = 0.5 not drawn)" in caplog.text
    # which clip is in which split is part of the cache key: moving one decodes again
    (root / "testing_list.txt").write_text("\n".join(testing[:2]) + "\n")
    moved = load_data(config, tmp_path)
    assert moved.files != data.files and moved.size("test") == 2 and moved.size("train") == 14


def test_without_a_validation_list_the_validation_fraction_is_drawn(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESS_CACHE_DIR", str(tmp_path / "cache"))
    testing = ["yes/speaker0_nohash_0.wav", "no/speaker0_nohash_0.wav"]
    root = write_speech_commands(tmp_path / "speech", {"yes": 6, "no": 6}, testing)
    data = load_data(audio_config(root, validation=0.2), tmp_path)
    assert rows(data.images["test"]) == clips_of(root, testing)
    assert (data.size("train"), data.size("val")) == (8, 2)  # one a word, seeded


def test_a_val_folder_is_the_validation_split_and_the_fraction_is_not_drawn(
    tmp_path, monkeypatch, caplog
):
    monkeypatch.setenv("COMPRESS_CACHE_DIR", str(tmp_path / "cache"))
    root = write_audio_folder(
        tmp_path / "speech", {"low": 6, "high": 6}, test={"low": 2, "high": 2},
        val={"low": 3, "high": 1},
    )  # fmt: skip
    config = audio_config(root, validation=0.5)
    assert peek_data(config, tmp_path) == ((1, 12, 10), 2)
    caplog.set_level(logging.INFO, logger="compress.data.audiofolder")
    data = load_data(config, tmp_path)
    val = [f"val/{c}/{i:03d}.wav" for c, n in (("low", 3), ("high", 1)) for i in range(n)]
    train = [f"train/{c}/{i:03d}.wav" for c in ("low", "high") for i in range(6)]
    assert rows(data.images["val"]) == clips_of(root, val)
    assert rows(data.images["train"]) == clips_of(root, train)  # all of it: nothing drawn
    assert data.size("test") == 4
    assert "4 validation (val/; [data] validation = 0.5 not drawn)" in caplog.text


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_a_sound_run_exports_artifacts_that_take_the_waveform(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COMPRESS_CACHE_DIR", str(tmp_path / "cache"))
    root = write_audio_folder(
        tmp_path / "speech",
        {"low": 16, "mid": 16, "high": 16},
        test={"low": 4, "mid": 4, "high": 4},
    )
    (tmp_path / "speech" / "train" / "low" / "stereo.wav").write_bytes(
        wav_bytes(np.stack([tone(300), tone(300, seed=5)]))
    )
    (tmp_path / "speech" / "train" / "mid" / "8khz.wav").write_bytes(
        wav_bytes(tone(700, rate=8000), 8000)
    )
    data = {"name": "audiofolder", "root": str(root), "clip_seconds": 0.25, "batch_size": 16,
            "validation": 0.2}  # fmt: skip
    pipeline = tmp_path / "kws.toml"
    pipeline.write_text(
        pipeline_text(
            None,
            data=data,
            model={"name": "simplenet", "kwargs": None},
            train={"epochs": 4, "lr": 0.05, "momentum": 0.5, "l1": None},
            prune={"threshold": 0.01},
            quantize={"variants": ["static", "packed-int4"]},
        )
    )
    config = load_pipeline(pipeline)
    report = run_pipeline(config, tmp_path / "run", progress=False)
    rows = {a["name"]: a for a in report["artifacts"]}
    assert all(a["status"] == "ok" for a in rows.values()), rows
    assert rows["dense"]["accuracy"] > 0.9 and rows["pruned-int4-packed"]["accuracy"] > 0.9
    stage = json.loads((tmp_path / "run" / "verify" / "stage.json").read_text())
    assert stage["metrics"]["frontend"]["status"] == "ok"
    assert stage["metrics"]["frontend"]["max_feature_diff"] < 1e-3
    data = load_data(config.data, config.base_dir)  # the check fails where it should
    strict = VerifyConfig(feature_tolerance=1e-12)
    assert check_frontend(tmp_path / "run" / "dense.onnx", data, strict)["status"] == "failed"
    path = tmp_path / "run" / "pruned-int4-packed.onnx"
    meta = get_metadata(onnx.load(path))
    pre = json.loads(meta["preprocessing"])
    assert (
        pre["sample_rate"] == 16000
        and pre["clip_samples"] == 4000
        and pre["features"]["frames"] == 12
    )
    assert json.loads(meta["input_shape"]) == [None, 4000]
    evaluate = load_script("kws_independent_eval")
    monkeypatch.setattr(sys, "argv", ["eval", str(path), str(root / "test")])
    evaluate.main()
    printed = capsys.readouterr().out
    assert printed.startswith(f"pruned-int4-packed.onnx: {meta['accuracy']} on 12 clips"), printed


def test_val_voices_move_training_voices_to_val_and_leave_test_as_it_is(tmp_path, monkeypatch):
    make = load_script("make_spoken_words")

    def speak(word: str, voice: str, speed: int, pitch: int, tmp: Path) -> np.ndarray:
        # espeak-ng stood in for by a tone of its own per voice: the same bytes each call
        seed = zlib.crc32(f"{word} {voice} {speed} {pitch}".encode())
        return np.random.default_rng(seed).uniform(-0.5, 0.5, 4000).astype(np.float32)

    monkeypatch.setattr(make, "speak", speak)
    monkeypatch.setattr(make, "WORDS", ("yes",))  # 25 voices, one clip each
    monkeypatch.setattr(make, "SPEEDS", (150,))
    monkeypatch.setattr(make, "PITCHES", (50,))

    def files(out: Path) -> dict[str, bytes]:
        return {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*.wav")}

    written = {}
    for out, extra in (("plain", []), ("val", ["--val-voices", "2"])):
        monkeypatch.setattr(sys, "argv", ["make", "--out", str(tmp_path / out), *extra])
        make.main()
        written[out] = files(tmp_path / out)
    plain, val = written["plain"], written["val"]
    moved = {n for n in val if n.startswith("val/")}
    assert len(moved) == 2 and not any(n.startswith("val/") for n in plain)
    assert {n.replace("val/", "train/", 1) for n in moved} <= set(plain)
    voices = {n.split("/")[-1].split("-s")[0] for n in moved}
    assert not voices & {n.split("/")[-1].split("-s")[0] for n in val if n.startswith("train/")}
    assert {n: b for n, b in val.items() if n.startswith("test/")} == {
        n: b for n, b in plain.items() if n.startswith("test/")
    }  # the same clips, byte for byte
    assert all(plain[n.replace("val/", "train/", 1)] == b for n, b in val.items() if n in moved)
