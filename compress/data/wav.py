"""WAV files to float32 mono waveforms at one sample rate and length.

    clip = read_wav("yes/0a7c2a8d.wav")          # Clip(samples [channels, n] float32, rate)
    x = to_clip(clip, sample_rate=16000, samples=16000)   # [16000] float32 in [-1, 1]

The RIFF container is parsed here (the standard library's `wave` reads PCM only, and on
some versions refuses WAVE_FORMAT_EXTENSIBLE): format 1 (PCM) in 8, 16, 24 or 32 bits,
format 3 (IEEE float) in 32 or 64 bits, and format 0xFFFE (extensible) whose sub-format is
one of those. Scaling to [-1, 1]: 8-bit (unsigned) (v - 128) / 128, 16-bit v / 32768,
24-bit v / 8388608, 32-bit v / 2147483648; float samples are kept as they are, clipped to
[-1, 1]. Anything else (A-law, mu-law, ADPCM, 12-bit, ...) is refused with the file's name.

`to_clip` mixes the channels down to mono (their mean), resamples to `sample_rate` (FFT
resampling of the whole clip: its spectrum cut or zero-padded to the new length, which is
band-limited and exact for tones that fit the clip) and pads with zeros at the end or
keeps the first `samples` samples.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compress.errors import DataError

PCM, FLOAT, EXTENSIBLE = 1, 3, 0xFFFE
FORMAT_NAMES = {2: "ADPCM", 6: "A-law", 7: "mu-law", 0x11: "IMA ADPCM", 0x55: "MP3"}
INT_SCALE = {8: 128.0, 16: 32768.0, 24: 8388608.0, 32: 2147483648.0}
SCALE_TEXT = "int PCM / 2^(bits-1) (8-bit: (v - 128) / 128), float kept, clipped to [-1, 1]"


@dataclass
class Clip:
    samples: np.ndarray  # float32 [channels, n] in [-1, 1]
    rate: int


def _chunks(data: bytes, path: str) -> dict[bytes, bytes]:
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise DataError(f"{path} is not a WAV file (no RIFF/WAVE header)")
    chunks, at = {}, 12
    while at + 8 <= len(data):
        tag, size = data[at : at + 4], struct.unpack("<I", data[at + 4 : at + 8])[0]
        body = data[at + 8 : at + 8 + size]
        if len(body) < size:
            if tag == b"data":
                raise DataError(
                    f"{path} is truncated: its data chunk claims {size} bytes, "
                    f"the file holds {len(body)}"
                )
            break  # a cut trailing chunk after the data (LIST, ...) is not needed
        chunks.setdefault(tag, body)
        at += 8 + size + (size & 1)  # chunks are padded to an even size
    for tag in (b"fmt ", b"data"):
        if tag not in chunks:
            raise DataError(f"{path} is not a readable WAV file (no {tag.decode().strip()} chunk)")
    return chunks


def _format(fmt: bytes, path: str) -> tuple[int, int, int]:
    """(format tag, channels, bits per sample), the extensible sub-format resolved."""
    if len(fmt) < 16:
        raise DataError(f"{path} is not a readable WAV file (fmt chunk of {len(fmt)} bytes)")
    tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", fmt[:16])
    if tag == EXTENSIBLE and len(fmt) >= 26:
        tag = struct.unpack("<H", fmt[24:26])[0]  # the sub-format GUID's first two bytes
    supported = (tag == PCM and bits in INT_SCALE) or (tag == FLOAT and bits in (32, 64))
    if not supported:
        name = FORMAT_NAMES.get(tag, {PCM: "PCM", FLOAT: "float"}.get(tag, f"format {tag}"))
        raise DataError(
            f"{path}: unsupported WAV encoding {name}, {bits}-bit "
            "(supported: PCM 8/16/24/32-bit, float 32/64-bit)"
        )
    if channels == 0 or rate == 0:
        raise DataError(f"{path} is not a readable WAV file ({channels} channels at {rate} Hz)")
    return tag, channels, bits


def read_wav(path: str | Path) -> Clip:
    """The samples of a WAV file (see the module docstring), as float32 [channels, n]."""
    path = str(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise DataError(f"{path} cannot be read ({exc.strerror})") from None
    chunks = _chunks(data, path)
    tag, channels, bits = _format(chunks[b"fmt "], path)
    rate = struct.unpack("<I", chunks[b"fmt "][4:8])[0]
    raw = chunks[b"data"]
    width = bits // 8
    frames = len(raw) // (width * channels)
    if frames == 0:
        raise DataError(f"{path} holds no samples (a zero-length clip)")
    raw = raw[: frames * width * channels]
    if tag == FLOAT:
        values = np.frombuffer(raw, dtype="<f4" if bits == 32 else "<f8").astype(np.float32)
        values = np.clip(np.nan_to_num(values), -1.0, 1.0)
    elif bits == 8:
        values = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif bits == 24:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        ints = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)
        values = ints.astype(np.float32) / np.float32(INT_SCALE[24])
    else:
        ints = np.frombuffer(raw, dtype="<i2" if bits == 16 else "<i4")
        values = (ints.astype(np.float64) / INT_SCALE[bits]).astype(np.float32)
    return Clip(values.reshape(frames, channels).T.copy(), rate)


def resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    """`x` [n] from `rate` to `target` Hz by FFT resampling (see the module docstring)."""
    if rate == target:
        return x
    n = len(x)
    m = max(1, int(round(n * target / rate)))
    spectrum = np.fft.rfft(x.astype(np.float64))
    keep = min(len(spectrum), m // 2 + 1)
    out = np.zeros(m // 2 + 1, dtype=np.complex128)
    out[:keep] = spectrum[:keep]
    return (np.fft.irfft(out, n=m) * (m / n)).astype(np.float32)


def to_clip(clip: Clip, sample_rate: int, samples: int) -> np.ndarray:
    """Mono (the channels' mean), at `sample_rate`, exactly `samples` long (zeros added at
    the end, or the first `samples` kept)."""
    mono = clip.samples.mean(axis=0, dtype=np.float64).astype(np.float32)
    mono = np.clip(resample(mono, clip.rate, sample_rate), -1.0, 1.0)
    if len(mono) >= samples:
        return mono[:samples]
    return np.pad(mono, (0, samples - len(mono)))


def write_wav(path: str | Path, x: np.ndarray, rate: int) -> None:
    """A mono 16-bit PCM WAV file of `x` (float in [-1, 1]), written with `wave`."""
    import wave

    ints = np.clip(np.round(np.asarray(x, dtype=np.float64) * 32767), -32768, 32767)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(ints.astype("<i2").tobytes())
