"""Catalog speech datasets (spoken_digit, speech_commands, librispeech) on mock records.

Records come from tests/data/mock_speech.py: tfds resolves the real builders (their info built
without TensorFlow by attn.data.tfds_audio), only the records are ours.
"""

from __future__ import annotations

import wave

import numpy as np
import pytest
import tensorflow_datasets as tfds

import attn.data
from attn.data import audio_features
from attn.data.speech import SPEECH_COMMANDS_LABELS
from attn.data.tfds_audio import AUDIO_OVERRIDES
from data.mock_speech import mock_speech_data


def _task(name: str, data_dir, **options) -> attn.data.Task:
    with mock_speech_data():
        return attn.data.get_task(
            {"name": name, "data_dir": str(data_dir), "batch_size": 2, **options}
        )


def test_spoken_digit_keeps_fsdd_test_split_and_resamples(tmp_path):
    task = _task("spoken_digit", tmp_path)
    assert (task.kind, task.audio_shape, task.target_vocab_size) == ("classify", (250, 80), 10)
    # Recordings 0-4 of each speaker and digit are FSDD's test split.
    assert (task.num_examples("train"), task.num_examples("test")) == (3, 5)
    example = task.example("train", 0)  # recording 5: 0.55 s at 8 kHz
    assert example["targets"] == 5 and example["inputs"].shape == (250, 80)
    assert example["input_lengths"] == audio_features.num_frames(2 * 4_400)
    assert task.target_tokenizer.decode([5]) == "five"


def test_speech_commands_twelve_classes_in_tfds_order(tmp_path):
    task = _task("speech_commands", tmp_path)
    assert (task.kind, task.audio_shape, task.target_vocab_size) == ("classify", (100, 80), 12)
    batch = next(task.eval_batches("test"))
    assert batch["inputs"].shape == (2, 100, 80)
    np.testing.assert_array_equal(batch["input_lengths"], [98, 98])
    np.testing.assert_array_equal(batch["targets"], [0, 1])
    assert task.train_batch(0)["inputs"].shape == (2, 100, 80)


def test_speech_commands_labels_match_the_builders_info(tmp_path):
    from attn.data.builder import tfds_code_path_fix

    base = tfds.builder_cls("speech_commands")
    builder_cls = type(
        "SpeechCommands",
        (tfds_code_path_fix, base),
        {"name": base.name, "_code_path_of": base, **AUDIO_OVERRIDES["speech_commands"]},
        skip_registration=True,
    )
    features = builder_cls(data_dir=str(tmp_path), file_format="array_record").info.features
    assert tuple(features["label"].names) == SPEECH_COMMANDS_LABELS


def test_librispeech_lowercase_characters_and_splits(tmp_path):
    task = _task("librispeech", tmp_path, max_frames=200, target_length=20)
    assert set(task.split_names) == {"train", "validation", "test", "test_other"}
    assert (task.kind, task.audio_shape, task.target_vocab_size) == ("seq2seq", (200, 80), 31)
    example = task.example("validation", 1)
    assert task.target_tokenizer.decode(example["targets"]) == "he said it's mine"
    assert example["input_lengths"] == audio_features.num_frames(9_600)
    short = _task("librispeech", tmp_path, max_frames=200, target_length=10)
    with pytest.raises(ValueError, match="target_length=10"):
        short.example("test", 1)
    too_short = _task("librispeech", tmp_path, max_frames=50)
    with pytest.raises(ValueError, match="max_frames=50"):
        too_short.example("test", 1)


def test_spoken_digit_examples_read_without_tensorflow(tmp_path):
    folder = tmp_path / "recordings"
    folder.mkdir()
    for name, count in (("3_theo_12.wav", 800), ("0_lucas_4.wav", 1200)):
        with wave.open(str(folder / name), "wb") as file:
            file.setnchannels(1)
            file.setsampwidth(2)
            file.setframerate(8_000)
            file.writeframes(np.arange(count, dtype="<i2").tobytes())
    generate = AUDIO_OVERRIDES["spoken_digit"]["_generate_examples"]
    examples = dict(generate(None, tmp_path))
    assert set(examples) == {"3_theo_12", "0_lucas_4"}
    assert examples["3_theo_12"]["label"] == 3
    np.testing.assert_array_equal(examples["0_lucas_4"]["audio"], np.arange(1200))
