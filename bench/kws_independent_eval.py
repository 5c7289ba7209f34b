"""Accuracy of a sound artifact on a folder of test clips, with wave + numpy + onnxruntime only.

    python bench/kws_independent_eval.py runs/kws/pruned-int4-packed.onnx /tmp/spoken-words/test

Reads nothing of compress: the file's own metadata gives the sample rate, the clip length
and the class names (`labels`, index = output position); each root/<class>/*.wav is read
with the standard library's `wave` (16-bit PCM at the file's sample rate), mixed down to
mono (the channels' mean), cut or padded with zeros at the end to `clip_samples`, scaled by
1/32768, and fed to the graph, which computes its own MFCC features. The accuracy printed
must equal the `accuracy` that verify sealed into the file (the same test clips, when the
run's test split is the folder's test/).
"""

from __future__ import annotations

import argparse
import json
import wave
from pathlib import Path

import numpy as np
import onnxruntime as ort


def read_clip(path: Path, rate: int, samples: int) -> np.ndarray:
    with wave.open(str(path), "rb") as f:
        if f.getsampwidth() != 2 or f.getframerate() != rate:
            raise SystemExit(f"{path}: expected 16-bit PCM at {rate} Hz")
        channels = f.getnchannels()
        ints = np.frombuffer(f.readframes(f.getnframes()), dtype="<i2")
    x = (ints.astype(np.float64) / 32768.0).astype(np.float32).reshape(-1, channels)
    x = x.T.mean(axis=0, dtype=np.float64).astype(np.float32)
    return x[:samples] if len(x) >= samples else np.pad(x, (0, samples - len(x)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("onnx", type=Path)
    parser.add_argument("test_root", type=Path, help="folder of <class>/*.wav")
    args = parser.parse_args()
    session = ort.InferenceSession(str(args.onnx), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    pre = json.loads(meta["preprocessing"])
    labels = json.loads(meta["labels"])
    rate, samples = pre["sample_rate"], pre["clip_samples"]
    x, y = [], []
    for label, name in enumerate(labels):
        for path in sorted((args.test_root / name).rglob("*.wav")):
            x.append(read_clip(path, rate, samples))
            y.append(label)
    x, y = np.stack(x), np.array(y)
    name = session.get_inputs()[0].name
    logits = np.concatenate(
        [session.run(None, {name: x[i : i + 1000]})[0] for i in range(0, len(x), 1000)]
    )
    accuracy = float((logits.argmax(1) == y).mean())
    print(
        f"{args.onnx.name}: {accuracy:.6f} on {len(y)} clips "
        f"(sealed in the file: {meta.get('accuracy')})"
    )


if __name__ == "__main__":
    main()
