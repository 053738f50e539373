"""Audio datasets of the TFDS catalog (spoken_digit, speech_commands, librispeech) opened
without TensorFlow.

tfds 4.9.10's ``Audio`` feature asks TensorFlow for its dtype (``tf.dtypes.as_dtype``) when it
is built, even when it stores plain arrays, so these builders cannot even describe their
features without TensorFlow; the replacement ``_info`` hands it the NumPy dtype, which is the
same feature. spoken_digit's examples are also read without TensorFlow (its generator walks
the download with ``tf.io.gfile`` and decodes WAV files through pydub). speech_commands (pydub
and ``tf.io.gfile`` in its archive split) and librispeech (``tf.io.gfile`` globs) still need
TensorFlow to be *prepared*; data prepared elsewhere as array_record reads here without it.
"""

from __future__ import annotations

import os
import types
import wave
from collections.abc import Iterator
from typing import Any
from unittest import mock

import numpy as np
import tensorflow_datasets as tfds

__all__ = ["AUDIO_OVERRIDES"]


def _audio_info(self: Any) -> tfds.core.DatasetInfo:
    from tensorflow_datasets.core.features import audio_feature

    numpy_dtypes = types.SimpleNamespace(dtypes=types.SimpleNamespace(as_dtype=np.dtype))
    with mock.patch.object(audio_feature, "tf", numpy_dtypes):
        return tfds.builder_cls(self.name)._info(self)


def _spoken_digit_examples(self: Any, path: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    # The Free Spoken Digit Dataset's recordings are 8 kHz 16-bit mono WAV files named
    # "<digit>_<speaker>_<index>.wav"; tfds's keys and features, read with the wave module.
    for root, _, names in sorted(os.walk(os.fspath(path))):
        for name in sorted(names):
            if not name.endswith(".wav"):
                continue
            with wave.open(os.path.join(root, name), "rb") as file:
                samples = np.frombuffer(file.readframes(file.getnframes()), "<i2")
            key = name.split(".")[0]
            yield (
                key,
                {
                    "audio": samples.astype(np.int64),
                    "label": int(key.split("_")[0]),
                    "audio/filename": name,
                },
            )


AUDIO_OVERRIDES: dict[str, dict[str, Any]] = {
    "spoken_digit": {"_info": _audio_info, "_generate_examples": _spoken_digit_examples},
    "speech_commands": {"_info": _audio_info},
    "librispeech": {"_info": _audio_info},
}
