"""Speech synthesised with eSpeak NG, made into noisy 16 kHz recordings.

eSpeak NG (GPL-3) comes from the optional ``espeakng-loader`` wheel (``pip install
attn[speech]``), which ships ``libespeak-ng`` and its voice data; we drive the library through
ctypes, synthesising to memory at its native 22,050 Hz. It is imported only here, and only
when a chunk is synthesised, so ``import attn`` and reading generated data never load it.

eSpeak keeps state between utterances (its pitch "flutter" counter and random generator carry
on), so an utterance's samples depend on everything the process said before. Each chunk of
utterances is therefore synthesised by this file run as a script in a fresh interpreter, with
a fixed random seed (:func:`render_chunks`): a record depends only on its chunk, never on the
worker count or on what else ran. (multiprocessing's spawn and forkserver would re-run the
caller's main script in every worker, which breaks unguarded user scripts; forking this
process is unsafe once JAX's threads run.) As a script, this file imports only the standard
library, NumPy and SciPy.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import dataclasses
import functools
import math
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator, Sequence

import numpy as np

__all__ = [
    "ESPEAK_RATE",
    "Utterance",
    "add_noise",
    "render_chunks",
]

ESPEAK_RATE = 22_050  # what eSpeak NG synthesises
_MAX_WPM = 450  # eSpeak's fastest rate
_MAX_SHIFT_SECONDS = 0.25  # leading silence, at most
_CHUNK_SEED = 0x5EED  # eSpeak's random seed at the start of every chunk

# espeak_AUDIO_OUTPUT, espeak_PARAMETER and espeak_POSITION_TYPE values from speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_PARAMETER_RATE, _PARAMETER_PITCH, _PARAMETER_RANGE = 1, 3, 4
_POSITION_CHARACTER = 1


@dataclasses.dataclass(frozen=True)
class Utterance:
    """What to say and how: everything random about one record, drawn by the builder."""

    text: str
    voice: str  # an eSpeak voice name, "accent+variant"
    rate: int  # words per minute (raised if the clip would not fit in max_samples)
    pitch: int  # eSpeak base pitch, 0-100
    pitch_range: int  # eSpeak intonation range, 0-100
    snr_db: float  # speech power over noise power
    noise_slope: float  # noise power spectrum ~ f**slope: 0 white, -1 pink
    gain_db: float  # peak level of the stored clip, dB below full scale
    shift: float  # leading silence as a share of the room left in max_samples, in [0, 1)
    noise_seed: int


class _Espeak:
    """libespeak-ng in this process: ``say(text, voice, rate, pitch, pitch_range)`` -> int16."""

    def __init__(self) -> None:
        import espeakng_loader  # GPL-3, optional: only ever imported in a synthesis process

        self.lib = lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        data_path = espeakng_loader.get_data_path().encode()
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, 0)
        if rate != ESPEAK_RATE:
            raise RuntimeError(f"eSpeak NG initialised at {rate} Hz, expected {ESPEAK_RATE}")
        self._chunks: list[np.ndarray] = []
        callback_type = ctypes.CFUNCTYPE(
            ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
        )
        # Kept on self: the C library holds only a raw pointer to it.
        self._callback = callback_type(self._collect)
        lib.espeak_SetSynthCallback(self._callback)
        lib.espeak_ng_SetRandSeed(_CHUNK_SEED)

    def _collect(self, samples: ctypes.Array, count: int, events: int) -> int:
        if samples and count > 0:
            self._chunks.append(np.ctypeslib.as_array(samples, shape=(count,)).copy())
        return 0  # 0: go on synthesising

    def say(self, text: str, voice: str, rate: int, pitch: int, pitch_range: int) -> np.ndarray:
        self._chunks.clear()
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"eSpeak NG has no voice {voice!r}")
        for parameter, value in (
            (_PARAMETER_RATE, rate),
            (_PARAMETER_PITCH, pitch),
            (_PARAMETER_RANGE, pitch_range),
        ):
            self.lib.espeak_SetParameter(parameter, value, 0)
        data = text.encode() + b"\0"
        status = self.lib.espeak_Synth(data, len(data), 0, _POSITION_CHARACTER, 0, 0, None, None)
        if status != 0:
            raise RuntimeError(f"eSpeak NG could not synthesise {text!r} (status {status})")
        self.lib.espeak_Synchronize()
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)


def add_noise(
    speech: np.ndarray, rng: np.random.Generator, snr_db: float, slope: float, length: int
) -> np.ndarray:
    """float64 ``[length]`` noise with power spectrum ~ ``f**slope`` whose power is exactly
    ``snr_db`` below the mean power of ``speech``."""
    # Shaped at a power-of-two length (FFTs of odd lengths are several times slower), then cut.
    fft_length = 1 << max(0, length - 1).bit_length()
    spectrum = np.fft.rfft(rng.standard_normal(fft_length))
    frequencies = np.arange(len(spectrum), dtype=np.float64)
    frequencies[0] = 1.0  # keep the DC bin finite; it is dropped below
    spectrum *= frequencies ** (slope / 2)
    spectrum[0] = 0.0
    noise = np.fft.irfft(spectrum, n=fft_length)[:length]
    speech_power = np.mean(np.square(speech, dtype=np.float64))
    return noise * np.sqrt(speech_power / (10 ** (snr_db / 10)) / np.mean(np.square(noise)))


@functools.cache
def _resampling_filter(up: int, down: int) -> np.ndarray:
    """resample_poly's own low-pass filter, designed once rather than per utterance."""
    from scipy.signal import firwin

    return firwin(2 * 10 * max(up, down) + 1, 1.0 / max(up, down), window=("kaiser", 5.0))


def _record(
    espeak: _Espeak, utterance: Utterance, max_samples: int, sample_rate: int
) -> tuple[np.ndarray, int]:
    """int16 ``[<= max_samples]`` at ``sample_rate`` (leading silence, speech, noise, gain)
    and the speaking rate used."""
    from scipy.signal import resample_poly

    rate = utterance.rate
    while True:
        raw = espeak.say(
            utterance.text, utterance.voice, rate, utterance.pitch, utterance.pitch_range
        )
        common = math.gcd(sample_rate, ESPEAK_RATE)
        up, down = sample_rate // common, ESPEAK_RATE // common
        # A copy: resample_poly scales the filter it is given in place.
        window = _resampling_filter(up, down).copy()
        speech = resample_poly(raw.astype(np.float64) / 32768.0, up, down, window=window)
        if len(speech) <= max_samples:
            break
        if rate >= _MAX_WPM:
            raise RuntimeError(f"{utterance.text!r} does not fit {max_samples} samples")
        rate = min(_MAX_WPM, round(rate * 1.1))  # by construction every clip fits
    room = min(max_samples - len(speech), round(_MAX_SHIFT_SECONDS * sample_rate))
    shift = int(utterance.shift * (room + 1))
    clip = np.zeros(shift + len(speech))
    clip[shift:] = speech
    rng = np.random.default_rng(utterance.noise_seed)
    clip += add_noise(speech, rng, utterance.snr_db, utterance.noise_slope, len(clip))
    clip *= 10 ** (-utterance.gain_db / 20) / max(np.max(np.abs(clip)), 1e-9)
    return np.round(clip * 32767).astype(np.int16), rate


def _render_chunk(
    utterances: Sequence[dict], max_samples: int, sample_rate: int
) -> list[tuple[np.ndarray, int]]:
    espeak = _Espeak()
    return [_record(espeak, Utterance(**fields), max_samples, sample_rate) for fields in utterances]


def _run_chunk(job: tuple[list[dict], int, int]) -> list[tuple[np.ndarray, int]]:
    # -P: do not put attn/data on sys.path, where our module names could shadow others.
    result = subprocess.run(
        [sys.executable, "-P", os.path.abspath(__file__)],
        input=pickle.dumps(job),
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"speech synthesis failed:\n{result.stderr.decode()[-3000:]}")
    return pickle.loads(result.stdout)


def render_chunks(
    chunks: Sequence[Sequence[Utterance]], max_samples: int, sample_rate: int
) -> Iterator[list[tuple[np.ndarray, int]]]:
    """Each chunk's (int16 recording at ``sample_rate``, words per minute) pairs, in order;
    every chunk in a fresh interpreter, up to one per CPU at a time."""
    # Plain dicts cross the pipe: the script's Utterance is __main__'s, not this module's.
    jobs = [([dataclasses.asdict(u) for u in chunk], max_samples, sample_rate) for chunk in chunks]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = max(1, min(len(jobs), cpus or 1))
    with concurrent.futures.ThreadPoolExecutor(workers) as executor:
        yield from executor.map(_run_chunk, jobs)


if __name__ == "__main__":
    # A worker: one pickled (utterances, max_samples, sample_rate) job on stdin, its
    # recordings pickled to stdout.
    sys.stdout.buffer.write(pickle.dumps(_render_chunk(*pickle.loads(sys.stdin.buffer.read()))))
