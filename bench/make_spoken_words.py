"""Synthesize an offline keyword-spotting set: 10 spoken words as 1 s, 16 kHz WAV clips.

    python bench/make_spoken_words.py --out /tmp/spoken-words
    python bench/make_spoken_words.py --out /tmp/spoken-words-val --val-voices 2
    compress run pipelines/kws.toml --data-root /tmp/spoken-words

Each of yes no up down left right on off stop go is spoken by espeak-ng (`-w out.wav`) in
several voices, speeds (`-s`) and pitches (`-p`), resampled to 16 kHz (FFT resampling,
compress.data.wav), placed at a random offset in a 1 s clip and mixed with seeded noise at
a random level (white and low-passed). The split is by voice: the test/ clips are spoken by
voices (accent + variant) that no train/ clip has, so the test accuracy is on unseen
speakers; 22 voices x 9 clips = 198 training and 3 x 9 = 27 test clips per word.
`--val-voices N` moves N of the training voices (chosen by their own generator, seeded with
--seed) to val/, the validation split, so recipes are chosen on speakers that neither
train/ nor test/ has; every clip is the same as without it (test/ exactly as it was).
`train/_background_noise_/` gets a few 10 s noise clips for training-time augmentation.
Nothing is downloaded; the output goes wherever --out says (never into the repository).
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from compress.data.wav import read_wav, to_clip, write_wav

WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
# A voice is an accent and a variant (espeak-ng -v ACCENT+VARIANT); the test voices are
# combinations that no training clip has.
ACCENTS = ("en-us", "en-gb", "en-029", "en-gb-scotland", "en-gb-x-rp")
VARIANTS = ("m1", "m3", "f2", "f4", "klatt")
TEST_VOICES = ("en-gb-x-rp+f2", "en-029+m3", "en-us+f4")
TRAIN_VOICES = tuple(
    v for v in (f"{a}+{b}" for a in ACCENTS for b in VARIANTS) if v not in TEST_VOICES
)
SPEEDS = (120, 150, 180)
PITCHES = (25, 50, 75)
RATE = 16000


def speak(word: str, voice: str, speed: int, pitch: int, tmp: Path) -> np.ndarray:
    out = tmp / "w.wav"
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(out), word],
        check=True,
        capture_output=True,
    )
    clip = read_wav(out)
    n = int(round(clip.samples.shape[1] * RATE / clip.rate))
    return to_clip(clip, RATE, n)


def noise(rng: np.random.Generator, n: int) -> np.ndarray:
    white = rng.normal(size=n)
    if rng.random() < 0.5:  # a low hum-like noise: a moving average of white noise
        white = np.convolve(white, np.ones(16) / 4, mode="same")
    return white / (np.abs(white).max() + 1e-9)


def place(speech: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The word at a random offset in 1 s, peak 0.3 to 0.9, plus noise at 0 to 0.05."""
    speech = speech[:RATE] / (np.abs(speech).max() + 1e-9) * rng.uniform(0.3, 0.9)
    clip = np.zeros(RATE, dtype=np.float64)
    start = int(rng.integers(0, RATE - len(speech) + 1))
    clip[start : start + len(speech)] = speech
    clip += noise(rng, RATE) * rng.uniform(0.0, 0.05)
    return np.clip(clip, -1, 1)


def val_voice_choice(count: int, seed: int) -> list[str]:
    """`count` training voices for val/, drawn by a generator of their own (the clips'
    generator draws the same numbers with or without val/)."""
    if count == 0:
        return []
    chosen = np.random.default_rng([seed, 1]).choice(len(TRAIN_VOICES), count, replace=False)
    return [TRAIN_VOICES[i] for i in sorted(chosen)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--val-voices",
        type=int,
        default=0,
        help="training voices whose clips go to val/ instead (0: no val/ folder)",
    )
    args = parser.parse_args()
    if not 0 <= args.val_voices < len(TRAIN_VOICES):
        parser.error(f"--val-voices must be from 0 to {len(TRAIN_VOICES) - 1}")
    val_voices = set(val_voice_choice(args.val_voices, args.seed))
    rng = np.random.default_rng(args.seed)
    count = 0
    with tempfile.TemporaryDirectory() as tmp:
        # the clips are made in the same order with or without val/: the noise and offsets
        # drawn from `rng` are the same, only the folder of the val voices' clips changes
        for split, voices in (("train", TRAIN_VOICES), ("test", TEST_VOICES)):
            for word in WORDS:
                for voice in voices:
                    folder = args.out / ("val" if voice in val_voices else split) / word
                    folder.mkdir(parents=True, exist_ok=True)
                    for speed in SPEEDS:
                        for pitch in PITCHES:
                            x = place(speak(word, voice, speed, pitch, Path(tmp)), rng)
                            name = f"{voice.replace('+', '_')}-s{speed}-p{pitch}.wav"
                            write_wav(folder / name, x, RATE)
                            count += 1
    folder = args.out / "train" / "_background_noise_"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(4):
        write_wav(folder / f"noise{i}.wav", noise(rng, 10 * RATE) * 0.5, RATE)
    val = f"; val/: {', '.join(sorted(val_voices))}" if val_voices else ""
    print(f"wrote {count} clips ({len(WORDS)} words) and 4 noise clips under {args.out}{val}")


if __name__ == "__main__":
    main()
