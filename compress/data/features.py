"""The audio front end: waveforms to log-mel or MFCC features, one nn.Module of standard ops.

    front = FrontEnd(FeatureSettings(), stats=None)     # MLPerf Tiny KWS: 49 x 10 MFCC
    x = front(waveforms)                                # [N, 16000] -> [N, 1, 49, 10]

Framing and the DFT are ONE Conv1d whose fixed kernels are the window times cos and sin
(stride = hop), then |X| (or |X|^2), a mel filterbank MatMul, log(x + 1e-6), and for MFCC a
DCT-II MatMul; last, each coefficient is standardized with the training clips' mean and
std. The same module computes the training features and is exported inside every ONNX
artifact, so a deployer feeds raw waveforms. Its kernels are buffers, not parameters:
nothing trains, prunes or quantizes them.

The defaults reproduce MLPerf Tiny's keyword-spotting features (TensorFlow's
`tf.signal.stft` with a 30 ms periodic Hann window, 20 ms stride, FFT size 512; the
magnitude; 40 mel bins from 20 to 4000 Hz on the HTK mel scale; log(mel + 1e-6); 10
MFCCs, `tf.signal.mfccs_from_log_mel_spectrograms`' DCT-II scaled by sqrt(2 / n_mels)):
at 16 kHz, frames = 1 + (16000 - 480) // 320 = 49. Only the DFT bins the filterbank uses
are computed (0 to 4000 Hz: 129 of 257).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

LOG_EPS = 1e-6


@dataclass(frozen=True)
class FeatureSettings:
    sample_rate: int = 16000
    clip_samples: int = 16000
    features: str = "mfcc"  # "mfcc" | "logmel"
    n_mels: int = 40
    n_mfcc: int = 10
    window_ms: float = 30.0
    hop_ms: float = 20.0
    n_fft: int | None = None  # None: the next power of two at or above the window
    f_min: float = 20.0
    f_max: float = 4000.0
    spectrum: str = "magnitude"  # "magnitude" | "power"

    @property
    def window(self) -> int:
        return int(round(self.sample_rate * self.window_ms / 1000))

    @property
    def hop(self) -> int:
        return int(round(self.sample_rate * self.hop_ms / 1000))

    @property
    def fft_size(self) -> int:
        return self.n_fft or 1 << (self.window - 1).bit_length()

    @property
    def frames(self) -> int:
        return 1 + (self.clip_samples - self.window) // self.hop

    @property
    def coefficients(self) -> int:
        return self.n_mfcc if self.features == "mfcc" else self.n_mels

    def as_dict(self) -> dict:
        return {**asdict(self), "n_fft": self.fft_size, "frames": self.frames}


def _hertz_to_mel(f: torch.Tensor) -> torch.Tensor:
    return 1127.0 * torch.log1p(f / 700.0)


def mel_matrix(s: FeatureSettings) -> torch.Tensor:
    """[bins, n_mels] triangles on the HTK mel scale, as tf.signal.linear_to_mel_weight_matrix
    (the DC bin weighs nothing)."""
    bins = s.fft_size // 2 + 1
    freqs = torch.linspace(0.0, s.sample_rate / 2, bins, dtype=torch.float64)
    mel = _hertz_to_mel(freqs)[1:, None]
    edges = torch.linspace(
        float(_hertz_to_mel(torch.tensor(s.f_min, dtype=torch.float64))),
        float(_hertz_to_mel(torch.tensor(s.f_max, dtype=torch.float64))),
        s.n_mels + 2,
        dtype=torch.float64,
    )
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (mel - lower) / (center - lower)
    falling = (upper - mel) / (upper - center)
    weights = torch.clamp(torch.minimum(rising, falling), min=0.0)
    return torch.cat([torch.zeros(1, s.n_mels, dtype=torch.float64), weights])


def dft_kernels(s: FeatureSettings, bins: int) -> torch.Tensor:
    """[2 * bins, 1, window]: periodic Hann window times cos, then times -sin, per bin."""
    n = torch.arange(s.window, dtype=torch.float64)
    window = 0.5 - 0.5 * torch.cos(2 * math.pi * n / s.window)
    angle = 2 * math.pi * torch.arange(bins, dtype=torch.float64)[:, None] * n / s.fft_size
    return torch.cat([torch.cos(angle) * window, -torch.sin(angle) * window])[:, None, :]


def dct_matrix(n_mels: int, n_mfcc: int) -> torch.Tensor:
    """[n_mels, n_mfcc] DCT-II scaled by sqrt(2 / n_mels), as TensorFlow's MFCCs."""
    n = torch.arange(n_mels, dtype=torch.float64)[:, None]
    k = torch.arange(n_mfcc, dtype=torch.float64)[None, :]
    return torch.cos(math.pi * k * (2 * n + 1) / (2 * n_mels)) * math.sqrt(2.0 / n_mels)


def _frames_times(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """[N, T, F] @ [F, M] as one 2-d MatMul on [N * T, F]: the exported graph keeps the
    batch axis dynamic and the matrix its buffer name (torch.matmul of a 3-d tensor pins N
    to the example's 1; F.linear's transpose is folded into a renamed constant)."""
    frames = x.shape[1]
    return torch.mm(x.reshape(-1, x.shape[2]), matrix).reshape(-1, frames, matrix.shape[1])


class FrontEnd(nn.Module):
    """Waveforms [N, clip_samples] -> features [N, 1, frames, coefficients]."""

    def __init__(self, settings: FeatureSettings, stats: tuple[list, list] | None = None):
        super().__init__()
        self.settings = settings
        mel = mel_matrix(settings)
        used = int(torch.nonzero(mel.sum(1)).max()) + 1  # bins above f_max weigh nothing
        self.bins = used
        self.register_buffer("dft", dft_kernels(settings, used).float())
        self.register_buffer("mel", mel[:used].float().contiguous())  # [bins, n_mels]
        if settings.features == "mfcc":
            self.register_buffer("dct", dct_matrix(settings.n_mels, settings.n_mfcc).float())
        else:
            self.dct = None
        c = settings.coefficients
        mean, std = stats if stats is not None else ([0.0] * c, [1.0] * c)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("inv_std", 1.0 / torch.tensor(std, dtype=torch.float32))

    def raw(self, waveforms: torch.Tensor) -> torch.Tensor:
        """The features before standardization, [N, frames, coefficients]."""
        spectrum = F.conv1d(waveforms.unsqueeze(1), self.dft, stride=self.settings.hop)
        re, im = spectrum[:, : self.bins], spectrum[:, self.bins :]
        power = re * re + im * im
        magnitude = torch.sqrt(power) if self.settings.spectrum == "magnitude" else power
        features = torch.log(_frames_times(magnitude.transpose(1, 2), self.mel) + LOG_EPS)
        return features if self.dct is None else _frames_times(features, self.dct)

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        return ((self.raw(waveforms) - self.mean) * self.inv_std).unsqueeze(1)


@torch.no_grad()
def feature_stats(
    settings: FeatureSettings, waveforms: torch.Tensor, chunk: int = 512
) -> tuple[list, list]:
    """Per-coefficient mean and std of the features of `waveforms` (std 0 becomes 1)."""
    front = FrontEnd(settings)
    total = torch.zeros(settings.coefficients, dtype=torch.float64)
    squares = torch.zeros_like(total)
    count = 0
    for start in range(0, len(waveforms), chunk):
        f = front.raw(waveforms[start : start + chunk]).double().reshape(-1, total.numel())
        total += f.sum(0)
        squares += (f * f).sum(0)
        count += len(f)
    mean = total / max(count, 1)
    std = (squares / max(count, 1) - mean * mean).clamp_min(0).sqrt()
    return mean.tolist(), torch.where(std > 0, std, torch.ones_like(std)).tolist()


class WithFrontEnd(nn.Module):
    """The front end, then the classifier: the graph a sound artifact holds."""

    def __init__(self, frontend: FrontEnd, classifier: nn.Module):
        super().__init__()
        self.frontend = frontend
        self.classifier = classifier

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.frontend(waveforms))
