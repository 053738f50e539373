"""Speech tasks: how spoken_strings, spoken_digit, speech_commands and librispeech become a
:class:`~attn.data.task.Task` with audio inputs.

Batches: ``inputs`` float32 ``[B, frames, 80]``, 80-bin log-mel features normalised per
utterance (see :mod:`attn.data.audio_features`), zeros after each utterance's end;
``input_lengths`` int32 ``[B]``, its real frames. Recognition tasks ("seq2seq") have character
``targets [B, U]``: the transcript's characters then EOS, padded with 0. Keyword tasks
("classify") have ``targets [B]``. SpecAugment masks train batches (:data:`AUGMENT_DEFAULTS`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from attn.data import spoken_strings
from attn.data.audio_features import (
    NUM_MEL_BINS,
    SAMPLE_RATE,
    spec_augment,
    utterance_features,
)
from attn.data.loaders import generated_splits, make_config
from attn.data.task import Task, pad_to
from attn.data.tfds_audio import AUDIO_OVERRIDES
from attn.data.tfds_text import as_bytes, load_catalog_splits
from attn.data.tokenizers import EOS_ID, ClassLabels, SymbolTokenizer

__all__ = [
    "AUGMENT_DEFAULTS",
    "SPEECH_COMMANDS_LABELS",
    "librispeech_tokenizer",
    "load_librispeech",
    "load_speech_commands",
    "load_spoken_digit",
    "load_spoken_strings",
]

# SpecAugment (Park et al. 2019): masks per utterance and their widest extent. Narrower time
# masks than LibriSpeech's (T=100): a digit word lasts only about 30 frames here.
AUGMENT_DEFAULTS: dict[str, int] = {
    "freq_masks": 2,
    "freq_mask_width": 15,
    "time_masks": 2,
    "time_mask_width": 10,
}


def _augment(options: Mapping[str, Any]) -> Any:
    masks = {key: options[key] for key in AUGMENT_DEFAULTS}
    if masks["freq_masks"] == 0 and masks["time_masks"] == 0:
        return None
    return functools.partial(spec_augment, **masks)


def _speech_task(
    kind: str,
    target_tokenizer: SymbolTokenizer | ClassLabels,
    target_length: int,
    max_frames: int,
    options: Mapping[str, Any],
    **task_kwargs: Any,
) -> Task:
    return Task(
        kind=kind,
        input_vocab_size=0,
        target_vocab_size=target_tokenizer.vocab_size,
        input_length=max_frames,
        target_length=target_length,
        tokenizer=None,
        target_tokenizer=target_tokenizer,
        audio_shape=(max_frames, NUM_MEL_BINS),
        augment=_augment(options),
        **task_kwargs,
    )


def _waveform(audio: Any) -> np.ndarray:
    """Stored integer samples (int16, or int64 in some catalog datasets) -> float32 [-1, 1]."""
    return np.asarray(audio).reshape(-1).astype(np.float32) / 32768.0


def _transcribed(
    waveform: np.ndarray,
    sample_rate: int,
    text: str,
    *,
    tokenizer: SymbolTokenizer,
    max_frames: int,
    length: int,
) -> dict[str, np.ndarray]:
    inputs, input_lengths = utterance_features(waveform, sample_rate, max_frames)
    ids = tokenizer.encode(text)
    if len(ids) >= length:
        raise ValueError(
            f"a transcript of {len(ids)} characters and EOS does not fit target_length={length}; "
            f"raise data.target_length"
        )
    targets = pad_to([*ids, EOS_ID], length)
    return {
        "inputs": inputs,
        "input_lengths": input_lengths,
        "targets": targets,
        "weights": (targets != 0).astype(np.float32),
    }


def _labelled(
    waveform: np.ndarray, sample_rate: int, label: int, *, max_frames: int
) -> dict[str, np.ndarray]:
    inputs, input_lengths = utterance_features(waveform, sample_rate, max_frames)
    return {
        "inputs": inputs,
        "input_lengths": input_lengths,
        "targets": np.int32(label),
        "weights": np.float32(1.0),
    }


# ----------------------------------------------------------------------------- spoken_strings


def _spoken_strings_record(record: Mapping[str, Any], **kwargs: Any) -> dict[str, np.ndarray]:
    text = as_bytes(record["transcript"]).decode()
    return _transcribed(_waveform(record["audio"]), SAMPLE_RATE, text, **kwargs)


def load_spoken_strings(options: dict, data_dir: str, **task_kwargs: Any) -> Task:
    config = make_config(spoken_strings.SpokenStringsConfig, options)
    tokenizer = spoken_strings.transcript_tokenizer()
    return _speech_task(
        "seq2seq",
        tokenizer,
        spoken_strings.TARGET_LENGTH,
        config.max_frames,
        options,
        splits=generated_splits(spoken_strings.AttnSpokenStrings, config, data_dir),
        preprocess=functools.partial(
            _spoken_strings_record,
            tokenizer=tokenizer,
            max_frames=config.max_frames,
            length=spoken_strings.TARGET_LENGTH,
        ),
        **task_kwargs,
    )


# ----------------------------------------------------------------------------- TFDS catalog


class _Subset(Sequence[Any]):
    """The records of ``source`` at ``indices``, in that order."""

    def __init__(self, source: Sequence[Any], indices: Sequence[int]):
        self.source, self.indices = source, [int(i) for i in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Any:  # type: ignore[override]
        return self.source[self.indices[index]]

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        chosen = [self.indices[int(i)] for i in indices]
        if hasattr(self.source, "__getitems__"):
            return list(self.source.__getitems__(chosen))
        return [self.source[i] for i in chosen]


def _spoken_digit_record(record: Mapping[str, Any], *, max_frames: int) -> dict[str, np.ndarray]:
    return _labelled(_waveform(record["audio"]), 8_000, int(record["label"]), max_frames=max_frames)


def load_spoken_digit(options: dict, data_dir: str, **task_kwargs: Any) -> Task:
    """Free Spoken Digit Dataset (8 kHz, resampled): the digit said, as a class. tfds has one
    split; FSDD's own is kept: recordings 0-4 of each speaker and digit are the test split."""
    overrides = AUDIO_OVERRIDES["spoken_digit"]
    source = load_catalog_splits("spoken_digit", ("train",), data_dir, overrides)["train"]
    held_out = [
        int(as_bytes(source[i]["audio/filename"]).decode().split(".")[0].split("_")[-1]) < 5
        for i in range(len(source))
    ]
    splits = {
        "train": _Subset(source, [i for i, test in enumerate(held_out) if not test]),
        "test": _Subset(source, [i for i, test in enumerate(held_out) if test]),
    }
    labels = ClassLabels(list(spoken_strings.DIGITS))
    return _speech_task(
        "classify",
        labels,
        1,
        options["max_frames"],
        options,
        splits=splits,
        preprocess=functools.partial(_spoken_digit_record, max_frames=options["max_frames"]),
        **task_kwargs,
    )


# tfds's speech_commands labels (the 12-class V2 keyword-spotting setup), in its order.
SPEECH_COMMANDS_LABELS = (
    *("down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes"),
    *("_silence_", "_unknown_"),
)


def _speech_commands_record(record: Mapping[str, Any], *, max_frames: int) -> dict:
    return _labelled(
        _waveform(record["audio"]), SAMPLE_RATE, int(record["label"]), max_frames=max_frames
    )


def load_speech_commands(options: dict, data_dir: str, **task_kwargs: Any) -> Task:
    """Speech Commands V2, 12 classes: 10 keywords, silence and unknown words (1 s clips)."""
    splits = load_catalog_splits(
        "speech_commands",
        ("train", "validation", "test"),
        data_dir,
        AUDIO_OVERRIDES["speech_commands"],
    )
    return _speech_task(
        "classify",
        ClassLabels(list(SPEECH_COMMANDS_LABELS)),
        1,
        options["max_frames"],
        options,
        splits=splits,
        preprocess=functools.partial(_speech_commands_record, max_frames=options["max_frames"]),
        **task_kwargs,
    )


def librispeech_tokenizer() -> SymbolTokenizer:
    """LibriSpeech's characters: space, apostrophe, lowercase letters (vocab_size 31)."""
    return SymbolTokenizer([" ", "'", *"abcdefghijklmnopqrstuvwxyz"], separator="")


# Our split names -> LibriSpeech's (the 100-hour clean training set).
_LIBRISPEECH_SPLITS = {
    "train": "train_clean100",
    "validation": "dev_clean",
    "test": "test_clean",
    "test_other": "test_other",
}


def _librispeech_record(record: Mapping[str, Any], **kwargs: Any) -> dict[str, np.ndarray]:
    text = as_bytes(record["text"]).decode().lower()
    return _transcribed(_waveform(record["speech"]), SAMPLE_RATE, text, **kwargs)


def load_librispeech(options: dict, data_dir: str, **task_kwargs: Any) -> Task:
    """LibriSpeech (train-clean-100; dev-clean; test-clean and test-other), lowercased
    character transcripts."""
    sources = load_catalog_splits(
        "librispeech",
        tuple(_LIBRISPEECH_SPLITS.values()),
        data_dir,
        AUDIO_OVERRIDES["librispeech"],
    )
    tokenizer = librispeech_tokenizer()
    length = options["target_length"]
    return _speech_task(
        "seq2seq",
        tokenizer,
        length,
        options["max_frames"],
        options,
        splits={ours: sources[theirs] for ours, theirs in _LIBRISPEECH_SPLITS.items()},
        preprocess=functools.partial(
            _librispeech_record,
            tokenizer=tokenizer,
            max_frames=options["max_frames"],
            length=length,
        ),
        **task_kwargs,
    )
