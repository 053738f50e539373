"""Speech features in NumPy: 80-bin log-mel spectrograms (25 ms Hann window, 10 ms hop) at
16 kHz, per-utterance normalisation, a WAV reader, and SpecAugment's masks.

A waveform of ``n`` samples has ``num_frames(n) = 1 + (n - 400) // 160`` frames: only whole
windows, none centred on padding.
"""

from __future__ import annotations

import math
import os
import wave

import numpy as np

__all__ = [
    "HOP",
    "NUM_MEL_BINS",
    "SAMPLE_RATE",
    "WINDOW",
    "log_mel",
    "max_samples",
    "mel_filterbank",
    "normalize",
    "num_frames",
    "read_wav",
    "resample",
    "spec_augment",
    "utterance_features",
]

SAMPLE_RATE = 16_000
WINDOW = 400  # 25 ms
HOP = 160  # 10 ms
NUM_MEL_BINS = 80
_FFT_SIZE = 512
_LOWEST_HZ = 20.0  # below speech; keeps the first triangles from sitting on DC
_LOG_FLOOR = 1e-10  # digital silence has power 0


def num_frames(num_samples: int) -> int:
    """Frames of a waveform of ``num_samples`` samples at 16 kHz."""
    return max(0, 1 + (num_samples - WINDOW) // HOP)


def max_samples(frames: int) -> int:
    """The most samples a waveform of at most ``frames`` frames may have."""
    return WINDOW + (frames - 1) * HOP + HOP - 1


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, np.float64) / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel, np.float64) / 2595.0) - 1.0)


def mel_filterbank(
    num_bins: int = NUM_MEL_BINS, fft_size: int = _FFT_SIZE, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """float32 ``[fft_size // 2 + 1, num_bins]``: triangles with peak 1, equally spaced on the
    HTK mel scale from 20 Hz to the Nyquist frequency."""
    mel_edges = np.linspace(_hz_to_mel(_LOWEST_HZ), _hz_to_mel(sample_rate / 2), num_bins + 2)
    edges = _mel_to_hz(mel_edges)
    frequencies = np.linspace(0.0, sample_rate / 2, fft_size // 2 + 1)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (frequencies[:, None] - lower) / (centre - lower)
    falling = (upper - frequencies[:, None]) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


_MEL = mel_filterbank()
# Periodic Hann (the usual STFT window): w[n] = 0.5 - 0.5 cos(2 pi n / N).
_HANN = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WINDOW) / WINDOW)).astype(np.float32)


def resample(waveform: np.ndarray, sample_rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """float32 ``waveform`` at ``target_rate`` (polyphase, scipy; unchanged if rates agree)."""
    waveform = np.asarray(waveform, np.float32)
    if sample_rate == target_rate:
        return waveform
    from scipy.signal import resample_poly  # only for audio at another rate

    common = math.gcd(int(sample_rate), int(target_rate))
    up, down = target_rate // common, sample_rate // common
    return resample_poly(waveform, up, down).astype(np.float32)


def log_mel(waveform: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """float32 ``[frames, 80]``: the natural log of mel-filtered power spectra of 25 ms Hann
    windows every 10 ms (``waveform`` mono, resampled to 16 kHz first if needed)."""
    waveform = resample(np.asarray(waveform, np.float32).reshape(-1), sample_rate)
    count = num_frames(len(waveform))
    if count == 0:
        return np.zeros((0, NUM_MEL_BINS), np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(waveform, WINDOW)[::HOP][:count]
    spectrum = np.fft.rfft(frames * _HANN, n=_FFT_SIZE)
    # float32 on both sides: a mixed-precision matmul misses BLAS and runs ~10x slower.
    power = (np.square(spectrum.real) + np.square(spectrum.imag)).astype(np.float32)
    return np.log(np.maximum(power @ _MEL, _LOG_FLOOR))


def normalize(features: np.ndarray) -> np.ndarray:
    """Each mel bin of ``features [frames, bins]`` to zero mean and unit variance over the
    utterance's frames (removes the channel's and the speaker's level)."""
    if len(features) == 0:
        return features
    mean = features.mean(axis=0)
    std = features.std(axis=0)
    return ((features - mean) / np.maximum(std, 1e-5)).astype(np.float32)


def utterance_features(
    waveform: np.ndarray, sample_rate: int, max_frames: int
) -> tuple[np.ndarray, np.int32]:
    """Model inputs of one utterance: normalised log-mel ``[max_frames, 80]`` (zeros after
    its end) and its number of frames. ``ValueError`` if it has more than ``max_frames``."""
    features = normalize(log_mel(waveform, sample_rate))
    if len(features) > max_frames:
        seconds = len(features) / 100
        raise ValueError(
            f"an utterance of {len(features)} frames ({seconds:.2f} s) does not fit "
            f"max_frames={max_frames}; raise data.max_frames"
        )
    padded = np.zeros((max_frames, NUM_MEL_BINS), np.float32)
    padded[: len(features)] = features
    return padded, np.int32(len(features))


def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """A PCM WAV file as (float32 mono waveform in [-1, 1] at 16 kHz, 16000); channels are
    averaged. ``ValueError`` if it is not 8/16/24/32-bit PCM WAV."""
    try:
        with wave.open(os.fspath(path), "rb") as file:
            channels, width = file.getnchannels(), file.getsampwidth()
            rate, data = file.getframerate(), file.readframes(file.getnframes())
    except (OSError, EOFError, wave.Error) as error:
        raise ValueError(f"cannot read WAV file {os.fspath(path)!r}: {error}") from None
    if width == 1:  # 8-bit WAV is unsigned
        samples = (np.frombuffer(data, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 3:  # 24-bit: widen each little-endian sample to 32 bits
        triples = np.frombuffer(data, np.uint8).reshape(-1, 3)
        widened = np.zeros((len(triples), 4), np.uint8)
        widened[:, 1:] = triples
        samples = widened.view("<i4").reshape(-1).astype(np.float32) / 2.0**31
    elif width in (2, 4):
        samples = np.frombuffer(data, f"<i{width}").astype(np.float32) / 2.0 ** (8 * width - 1)
    else:
        raise ValueError(f"cannot read WAV file {os.fspath(path)!r}: {width}-byte samples")
    mono = samples.reshape(-1, channels).mean(axis=1)
    return resample(mono, rate), SAMPLE_RATE


def spec_augment(
    batch: dict[str, np.ndarray],
    rng: np.random.Generator,
    *,
    freq_masks: int,
    freq_mask_width: int,
    time_masks: int,
    time_mask_width: int,
) -> dict[str, np.ndarray]:
    """SpecAugment's masks on ``batch["inputs"] [B, frames, bins]``: per utterance
    ``freq_masks`` bands of 0..``freq_mask_width`` mel bins and ``time_masks`` spans of
    0..``time_mask_width`` frames (within its ``input_lengths``) set to 0, the mean of the
    normalised features. Widths are uniform; a count of 0 disables that mask."""
    inputs = batch["inputs"].copy()
    B, _, bins = inputs.shape
    lengths = batch["input_lengths"]
    for b in range(B):
        for _ in range(freq_masks):
            width = int(rng.integers(0, freq_mask_width + 1))
            start = int(rng.integers(0, bins - width + 1))
            inputs[b, :, start : start + width] = 0.0
        for _ in range(time_masks):
            width = int(rng.integers(0, min(time_mask_width, int(lengths[b])) + 1))
            start = int(rng.integers(0, int(lengths[b]) - width + 1))
            inputs[b, start : start + width, :] = 0.0
    return {**batch, "inputs": inputs}
