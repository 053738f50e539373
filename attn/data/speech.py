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
from collections.abc import Mapping
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
from attn.data.tfds_text import as_bytes
from attn.data.tokenizers import EOS_ID, ClassLabels, SymbolTokenizer

__all__ = [
    "AUGMENT_DEFAULTS",
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
    targets = pad_to([*tokenizer.encode(text), EOS_ID], length)
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
