"""Spoken strings: digit strings and short commands said by eSpeak NG voices, with noise.

Transcripts are half 3-7 digit words (``"three one four"``) and half commands of a small
grammar (``"stop"``, ``"turn right"``, ``"move left three"``, ...): lowercase letters and
spaces only (:func:`transcript_tokenizer`).

Each utterance samples a voice, a speaking rate (130-220 words per minute; raised by steps of
10% in the rare case the clip would not fit ``max_frames``), a base pitch and an intonation
range, then gets 0-0.25 s of leading silence, additive noise at 10-30 dB SNR (white to pink)
and a random peak level (1-20 dB below full scale).

Voices: an eSpeak voice is an accent plus a variant (``"en-us+f4"``). The validation and test
voices are disjoint from the training voices: a voice is held out when its accent is in
:data:`HELD_OUT_ACCENTS` (``en-gb-scotland``) or its variant is in :data:`HELD_OUT_VARIANTS`
(``m7``, ``f3``, ``klatt4``), so evaluation hears new speakers (variants) and a new accent;
each held-out variant and accent is heard with every other accent and variant there. That
leaves 7 x 12 = 84 training voices and 36 held-out ones (:func:`split_voices`). eSpeak's
``klatt2`` is left out: its average spectrum is nearly ``klatt``'s (RMS log-mel distance 0.3,
against 0.45-2 between the other variants), so it would not be a new speaker.

Records (stored as 16 kHz int16: the usual rate of speech corpora, lossless for eSpeak's
16-bit output, half the size of float32, and the features are computed when read, so they can
change without regenerating): ``audio`` int16 ``[<= max_samples(max_frames)]``,
``transcript``, ``voice``, ``rate`` (words per minute used) and ``snr_db``.

Generation needs ``pip install attn[speech]`` (eSpeak NG, GPL-3); reading does not.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds

from attn.data.audio_features import SAMPLE_RATE, max_samples
from attn.data.builder import GeneratedBuilder, SizedConfig, split_seed
from attn.data.speech_synthesis import Utterance, render_chunks
from attn.data.tokenizers import SymbolTokenizer

__all__ = [
    "ACCENTS",
    "HELD_OUT_ACCENTS",
    "HELD_OUT_VARIANTS",
    "TARGET_LENGTH",
    "VARIANTS",
    "AttnSpokenStrings",
    "SpokenStringsConfig",
    "split_voices",
    "transcript_tokenizer",
]

ACCENTS = (
    "en",
    "en-us",
    "en-gb-x-rp",
    "en-gb-scotland",
    "en-029",
    "en-us-nyc",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
)
VARIANTS = (
    *(f"m{i}" for i in range(1, 8)),
    *(f"f{i}" for i in range(1, 6)),
    "klatt",
    "klatt3",
    "klatt4",
)
HELD_OUT_ACCENTS = ("en-gb-scotland",)
HELD_OUT_VARIANTS = ("m7", "f3", "klatt4")

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_DIRECTIONS = ("left", "right", "up", "down", "forward", "back")
_PLAIN_COMMANDS = ("stop", "go", "wait", "turn left", "turn right", "turn around", "go back")
_DIGIT_WORDS = (3, 7)  # fewest and most words of a digit string
# Utterances synthesised per process: a record depends only on its chunk; large, because each
# process spends seconds importing SciPy.
_CHUNK = 1000


def transcript_tokenizer() -> SymbolTokenizer:
    """Characters: space and the 26 lowercase letters (ids 3-29, vocab_size 30)."""
    return SymbolTokenizer([" ", *"abcdefghijklmnopqrstuvwxyz"], separator="")


def _longest_transcript() -> int:
    longest_digit = max(len(word) for word in DIGITS)
    digits = _DIGIT_WORDS[1] * (longest_digit + 1) - 1
    moves = len("move ") + max(len(d) for d in _DIRECTIONS) + 1 + longest_digit
    return max(digits, moves, *(len(command) for command in _PLAIN_COMMANDS))


TARGET_LENGTH = _longest_transcript() + 1  # characters and EOS


def split_voices(split: str) -> tuple[str, ...]:
    """The eSpeak voices of ``split``: training voices for "train", held-out ones otherwise."""
    voices = []
    for accent, variant in itertools.product(ACCENTS, VARIANTS):
        held_out = accent in HELD_OUT_ACCENTS or variant in HELD_OUT_VARIANTS
        if held_out == (split != "train"):
            voices.append(f"{accent}+{variant}")
    return tuple(voices)


def _transcript(rng: np.random.Generator) -> str:
    if rng.random() < 0.5:
        count = int(rng.integers(_DIGIT_WORDS[0], _DIGIT_WORDS[1] + 1))
        return " ".join(DIGITS[i] for i in rng.integers(0, len(DIGITS), count))
    if rng.random() < 0.4:
        return str(rng.choice(_PLAIN_COMMANDS))
    return f"move {rng.choice(_DIRECTIONS)} {rng.choice(DIGITS)}"


@dataclasses.dataclass(eq=False)
class SpokenStringsConfig(SizedConfig):
    """Sizes: ``max_frames`` bounds every clip (frames of 10 ms; 400 = 4 s), so every
    utterance fits the task's inputs by construction."""

    num_train: int = 20_000
    num_validation: int = 500
    num_test: int = 1_000
    max_frames: int = 400

    def __post_init__(self) -> None:
        # 7 long words said at eSpeak's fastest rate need about 1.3 s.
        if not isinstance(self.max_frames, int) or not 200 <= self.max_frames <= 3000:
            raise ValueError(f"max_frames must be an int in [200, 3000], got {self.max_frames!r}")
        super().__post_init__()


class AttnSpokenStrings(GeneratedBuilder):
    """The dataset (see the module docstring)."""

    BUILDER_CONFIGS = [SpokenStringsConfig()]  # noqa: RUF012  (tfds reads this class attribute)
    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "First version.",
        "1.1.0": "Held-out variants m7, f3, klatt4 (were m3, f2, klatt2); klatt2 dropped.",
    }

    def features(self) -> dict[str, tfds.features.FeatureConnector]:
        return {
            "audio": tfds.features.Tensor(
                shape=(None,), dtype=np.int16, encoding=tfds.features.Encoding.BYTES
            ),
            "transcript": tfds.features.Text(),
            "voice": tfds.features.Text(),
            "rate": tfds.features.Scalar(dtype=np.int32),
            "snr_db": tfds.features.Scalar(dtype=np.float32),
        }

    def generate(self, split: str) -> Iterator[dict[str, Any]]:
        config = self.builder_config
        utterances = [
            _draw_utterance(np.random.default_rng([*split_seed(config.data_seed, split), i]), split)
            for i in range(config.num_examples(split))
        ]
        chunks = [utterances[i : i + _CHUNK] for i in range(0, len(utterances), _CHUNK)]
        recordings = itertools.chain.from_iterable(
            render_chunks(chunks, max_samples(config.max_frames), SAMPLE_RATE)
        )
        for utterance, (audio, rate) in zip(utterances, recordings, strict=True):
            yield {
                "audio": audio,
                "transcript": utterance.text,
                "voice": utterance.voice,
                "rate": rate,
                "snr_db": utterance.snr_db,
            }


def _draw_utterance(rng: np.random.Generator, split: str) -> Utterance:
    voices = split_voices(split)
    return Utterance(
        text=_transcript(rng),
        voice=voices[int(rng.integers(len(voices)))],
        rate=int(rng.integers(130, 221)),
        pitch=int(rng.integers(30, 71)),
        pitch_range=int(rng.integers(30, 81)),
        snr_db=float(rng.uniform(10.0, 30.0)),
        noise_slope=float(rng.uniform(-1.0, 0.0)),
        gain_db=float(rng.uniform(1.0, 20.0)),
        shift=float(rng.random()),
        noise_seed=int(rng.integers(2**63)),
    )
