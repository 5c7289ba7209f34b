"""Bad sound folders: one `error:` line, exit 2, nothing written (the cases of
tests/test_bad_data.py, for [data] name = "audiofolder"); stereo and 8 kHz clips are not
mistakes: they are mixed down and resampled (tests/test_audio.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from data_files import tone, wav_bytes, write_audio_folder, write_speech_commands
from test_bad_data import Case, assert_fails_in_one_line

AUDIO = {
    "name": "audiofolder",
    "root": "speech",
    "download": False,
    "batch_size": 4,
    "clip_seconds": 0.25,
}


def speech(**kwargs):
    return lambda tmp: write_audio_folder(tmp / "speech", {"yes": 4, "no": 4}, **kwargs)


def one_clip(content: bytes):
    def write(tmp: Path) -> None:
        speech()(tmp)
        (tmp / "speech" / "train" / "no" / "bad.wav").write_bytes(content)

    return write


def shipped(testing: list[str], validation: list[str] | None = None):
    """Speech Commands as it ships (root/<word>/<clip>.wav and its lists)."""
    return lambda tmp: write_speech_commands(tmp / "speech", testing=testing, validation=validation)


def no_train_folder(tmp: Path) -> None:
    speech()(tmp)
    (tmp / "speech" / "train").rename(tmp / "speech" / "words")


CLIP = wav_bytes(tone(440))
YES = "yes/speaker0_nohash_0.wav"
CASES = [
    Case("wav-not-riff", r"no/bad\.wav is not a WAV file \(no RIFF/WAVE header\)", AUDIO,
         one_clip(b"ID3\x03 an mp3 file named .wav")),
    Case("wav-truncated", r"no/bad\.wav is truncated: its data chunk claims 8000 bytes, the file "
         r"holds 3956", AUDIO, one_clip(CLIP[:4000])),
    Case("wav-a-law", r"no/bad\.wav: unsupported WAV encoding A-law, 8-bit \(supported: PCM",
         AUDIO, one_clip(wav_bytes(tone(440), bits=8, tag=6))),
    Case("wav-12-bit", r"no/bad\.wav: unsupported WAV encoding PCM, 12-bit", AUDIO,
         one_clip(wav_bytes(tone(440), bits=12))),
    Case("wav-zero-length", r"no/bad\.wav holds no samples \(a zero-length clip\)", AUDIO,
         one_clip(wav_bytes(np.zeros(0)))),
    Case("audio-empty-class-folder", r"class folder .*speech/train/maybe holds no \.wav clips",
         AUDIO, lambda tmp: (speech()(tmp), (tmp / "speech/train/maybe").mkdir())),
    Case("audio-no-class-folders", r"speech/train holds no class folders: expected", AUDIO,
         lambda tmp: (tmp / "speech/train/_background_noise_").mkdir(parents=True)),
    Case("audio-one-class", r"speech/train holds one class only \(yes\): classification needs",
         AUDIO, lambda tmp: write_audio_folder(tmp / "speech", {"yes": 4})),
    Case("audio-test-class-not-in-train", r"train/ and test/ have different classes \(only in "
         r"test/: maybe; only in train/: no\)", AUDIO, speech(test={"yes": 2, "maybe": 2})),
    Case("audio-val-class-not-in-train", r"train/ and val/ have different classes \(only in "
         r"val/: maybe; only in train/: no\)", AUDIO, speech(val={"yes": 2, "maybe": 2}),
         validate=True),
    Case("audio-listed-clip-missing", r"speech/testing_list\.txt line 2: no/gone\.wav does not "
         r"exist", AUDIO, shipped([YES, "no/gone.wav"]), validate=True),
    Case("audio-listed-clip-outside-classes", r"speech/testing_list\.txt line 1: "
         r"_background_noise_/hum\.wav is not in a class folder \(the sub-folders of .*speech "
         r"but _background_noise_\)", AUDIO, shipped(["_background_noise_/hum.wav"]),
         validate=True),
    Case("audio-clip-in-both-lists", r"speech/validation_list\.txt line 1: yes/speaker0_nohash_0"
         r"\.wav is also in testing_list\.txt \(line 1\): a clip is in one split only", AUDIO,
         shipped([YES], [YES]), validate=True),
    Case("audio-no-train-nor-lists", r"speech has no train/ folder: expected .*speech/train/"
         r"<class>/<clip>\.wav, or Speech Commands' .*speech/<word>/<clip>\.wav with "
         r"testing_list\.txt", AUDIO, no_train_folder, validate=True),
    Case("audio-no-root", r"\[data\] name = 'audiofolder' needs root", {**AUDIO, "root": None}),
    Case("audio-mfcc-above-mels", r"n_mfcc = 12 exceeds n_mels = 8", {**AUDIO, "n_mels": 8,
         "n_mfcc": 12}, speech(), validate=True),
    Case("audio-f-max-above-nyquist", r"need f_min < f_max <= sample_rate / 2",
         {**AUDIO, "sample_rate": 8000, "f_max": 6000.0}, speech(), validate=True),
]  # fmt: skip


def test_there_are_enough_audio_cases():
    assert len({c.id for c in CASES}) == len(CASES) >= 8


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_audio(case: Case, tmp_path: Path, monkeypatch):
    assert_fails_in_one_line(case, tmp_path, monkeypatch)
