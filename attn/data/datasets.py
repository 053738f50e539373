"""The datasets a config's ``data.name`` may name, how each becomes a
:class:`~attn.data.task.Task`, and ``get_task``.

    check_config({"name": "reverse", "length": 32})    # every key and value, no data touched
    task = get_task({"name": "reverse", "batch_size": 64, "length": 32})
    task = DATASETS["reverse"](batch_size=64, length=32)          # the same

Every dataset takes the common keys (``batch_size``, ``eval_batch_size``, ``data_dir``,
``seed``, ``cache``) plus its own size keys, listed in ``DATASETS[name].defaults``.
``data_dir`` None means ``$TFDS_DATA_DIR``, else tfds's default ``~/tensorflow_datasets``.
Our generated datasets are written there on first use and reused afterwards.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from attn.data import (
    dates,
    images,
    listops,
    loaders,
    mqar,
    sequence_tasks,
    shapes_captions,
    speech,
    spoken_strings,
)
from attn.data.builder import SizedConfig
from attn.data.task import Task, check_batching

__all__ = [
    "COMMON_DEFAULTS",
    "DATASETS",
    "DatasetSpec",
    "audio_shape_of",
    "check_config",
    "get_task",
    "image_shape_of",
    "resolve_data_dir",
]

# Keys every dataset takes; "cache" has a per-dataset default in DatasetSpec.defaults.
COMMON_DEFAULTS: dict[str, Any] = {
    "batch_size": 32,
    "eval_batch_size": None,
    "data_dir": None,
    "seed": 0,
}


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """An entry of :data:`DATASETS`. Calling it with config keys returns the :class:`Task`."""

    name: str
    kind: str  # the task kind its Task has (attn.models.TASK_KINDS)
    description: str
    defaults: Mapping[str, Any]  # the dataset's own keys and their defaults
    load: Callable[..., Task]  # load(options, data_dir, **Task fields) -> Task
    # The builder config of a generated dataset: checks the size keys without generating.
    builder_config: type[SizedConfig] | None = None
    # Image inputs: their (H, W, C) from the dataset's options (None: token inputs).
    image_shape: Callable[[Mapping[str, Any]], tuple[int, int, int]] | None = None
    # Audio inputs: their (frames, bins) from the dataset's options (None: not audio).
    audio_shape: Callable[[Mapping[str, Any]], tuple[int, int]] | None = None

    def __call__(self, **config: Any) -> Task:
        return get_task({"name": self.name, **config})


def resolve_data_dir(data_dir: str | os.PathLike | None) -> str:
    """``data_dir``, else ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets`` (read now)."""
    if data_dir:
        return os.fspath(data_dir)
    return os.environ.get("TFDS_DATA_DIR") or os.path.join(
        os.path.expanduser("~"), "tensorflow_datasets"
    )


def _generated_spec(
    name: str,
    kind: str,
    description: str,
    config_cls: type[SizedConfig],
    load: Callable[..., Task],
    *,
    cache: bool = True,
    image_shape: Callable[[Mapping[str, Any]], tuple[int, int, int]] | None = None,
    audio_shape: Callable[[Mapping[str, Any]], tuple[int, int]] | None = None,
    extra_defaults: Mapping[str, Any] | None = None,
) -> DatasetSpec:
    defaults = {**loaders.config_fields(config_cls), **(extra_defaults or {}), "cache": cache}
    return DatasetSpec(
        name, kind, description, defaults, load, config_cls, image_shape, audio_shape
    )


def _fixed(shape: tuple[int, int, int]) -> Callable[[Mapping[str, Any]], tuple[int, int, int]]:
    return lambda options: shape


def _square(options: Mapping[str, Any]) -> tuple[int, int, int]:
    return (options["image_size"], options["image_size"], 3)


def _mel_frames(options: Mapping[str, Any]) -> tuple[int, int]:
    return (options["max_frames"], speech.NUM_MEL_BINS)


DATASETS: dict[str, DatasetSpec] = {
    "reverse": _generated_spec(
        "reverse",
        "tag",
        "output the input sequence reversed",
        sequence_tasks.SequenceConfig,
        functools.partial(loaders.load_sequence, sequence_tasks.AttnReverse),
    ),
    "copy": _generated_spec(
        "copy",
        "tag",
        "output the input sequence unchanged",
        sequence_tasks.SequenceConfig,
        functools.partial(loaders.load_sequence, sequence_tasks.AttnCopy),
    ),
    "sort": _generated_spec(
        "sort",
        "tag",
        "output the input sequence sorted",
        sequence_tasks.SequenceConfig,
        functools.partial(loaders.load_sequence, sequence_tasks.AttnSort),
    ),
    "mqar": _generated_spec(
        "mqar",
        "lm",
        "multi-query associative recall (Zoology), scored at query positions",
        mqar.MqarConfig,
        loaders.load_mqar,
    ),
    "dates": _generated_spec(
        "dates",
        "seq2seq",
        "human-readable date -> ISO 8601, test dates held out of training",
        dates.DatesConfig,
        loaders.load_dates,
    ),
    "listops": _generated_spec(
        "listops",
        "classify",
        "value of a nested ListOps expression (LRA semantics)",
        listops.ListopsConfig,
        loaders.load_listops,
        cache=False,  # 96k examples of up to 2000 tokens by default
    ),
    "tiny_shakespeare": DatasetSpec(
        "tiny_shakespeare",
        "lm",
        "next byte of Shakespeare, in windows of seq_len (TFDS catalog)",
        {"seq_len": 256, "cache": False},
        loaders.load_tiny_shakespeare,
    ),
    "digits": DatasetSpec(
        "digits",
        "classify",
        "scikit-learn's 8x8 handwritten digits, fixed stratified 75/25 split (no download)",
        {"max_shift": 1, "cache": True},
        images.load_digits,
        image_shape=_fixed((8, 8, 1)),
    ),
    "shapes_captions": _generated_spec(
        "shapes_captions",
        "seq2seq",
        "caption 1-3 coloured shapes; test images hold unseen (colour, shape, cell) triples",
        shapes_captions.ShapesCaptionsConfig,
        images.load_shapes_captions,
        image_shape=_square,
    ),
    "spoken_strings": _generated_spec(
        "spoken_strings",
        "seq2seq",
        "transcribe digit strings and commands said by eSpeak NG voices with noise (characters; "
        "validation and test voices unseen in training)",
        spoken_strings.SpokenStringsConfig,
        speech.load_spoken_strings,
        # 20k utterances of 400 frames are 2.6 GB as float32 features: computing them once
        # beats recomputing the FFTs every step; set cache=False to trade speed for memory.
        cache=True,
        audio_shape=_mel_frames,
        extra_defaults=speech.AUGMENT_DEFAULTS,
    ),
    "spoken_digit": DatasetSpec(
        "spoken_digit",
        "classify",
        "Free Spoken Digit Dataset: the digit said (8 kHz, resampled); recordings 0-4 of each "
        "speaker and digit are the test split (TFDS catalog)",
        {"max_frames": 250, **speech.AUGMENT_DEFAULTS, "cache": True},
        speech.load_spoken_digit,
        audio_shape=_mel_frames,
    ),
    "speech_commands": DatasetSpec(
        "speech_commands",
        "classify",
        "Speech Commands V2 keyword spotting, 12 classes: 10 words, silence, unknown (1 s clips, "
        "TFDS catalog)",
        {"max_frames": 100, **speech.AUGMENT_DEFAULTS, "cache": False},
        speech.load_speech_commands,
        audio_shape=_mel_frames,
    ),
    "librispeech": DatasetSpec(
        "librispeech",
        "seq2seq",
        "LibriSpeech read English, lowercased characters; train-clean-100, dev-clean, test-clean "
        "and test-other (TFDS catalog)",
        {"max_frames": 2500, "target_length": 500, **speech.AUGMENT_DEFAULTS, "cache": False},
        speech.load_librispeech,
        audio_shape=_mel_frames,
    ),
    "mnist": DatasetSpec(
        "mnist",
        "classify",
        "28x28 handwritten digits (TFDS catalog)",
        {"max_shift": 2, "cache": False},
        images.load_mnist,
        image_shape=_fixed((28, 28, 1)),
    ),
    "cifar10": DatasetSpec(
        "cifar10",
        "classify",
        "32x32 colour images of 10 classes, random crop and flip (TFDS catalog)",
        {"max_shift": 4, "cache": False},
        images.load_cifar10,
        image_shape=_fixed((32, 32, 3)),
    ),
    "coco_captions": DatasetSpec(
        "coco_captions",
        "seq2seq",
        "COCO 2014 images (centre square, image_size) and their first caption as bytes "
        "(TFDS catalog, Karpathy splits)",
        {"image_size": 64, "caption_length": 64, "cache": False},
        images.load_coco_captions,
        image_shape=_square,
    ),
    "imdb_reviews": DatasetSpec(
        "imdb_reviews",
        "classify",
        "sentiment of a movie review, bytes truncated to max_length (TFDS catalog)",
        {"max_length": 1000, "cache": False},
        loaders.load_imdb_reviews,
    ),
}


_NON_NEGATIVE = ("seed", "max_shift", "masks", "mask_width")  # int keys that may be 0


def _check_value(name: str, key: str, value: Any, default: Any) -> None:
    """Types follow the default's; counts and lengths are positive (generated datasets' sizes
    are checked again by their builder configs)."""
    if key in ("data_dir", "eval_batch_size") or (value is None and default is None):
        return
    if isinstance(default, bool):
        ok = isinstance(value, (bool, np.bool_))
    elif isinstance(default, int):
        ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
        ok = ok and (value >= 0 if key.endswith(_NON_NEGATIVE) else value >= 1)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
    elif isinstance(default, tuple):
        ok = isinstance(value, (int, tuple, list))
    else:
        ok = True
    if not ok:
        if isinstance(default, int) and not isinstance(default, bool):
            wanted = "a non-negative int" if key.endswith(_NON_NEGATIVE) else "a positive int"
        else:
            wanted = f"like {default!r} ({type(default).__name__})"
        raise ValueError(f"data.{key} must be {wanted} for dataset {name!r}, got {value!r}")


def _resolve(config: Mapping[str, Any] | Any) -> tuple[DatasetSpec, dict[str, Any]]:
    """The dataset's spec and its checked options with every default filled in."""
    options = dict(config.to_dict() if hasattr(config, "to_dict") else config)
    name = options.pop("name", None)
    if name not in DATASETS:
        raise ValueError(f"data.name: unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    spec = DATASETS[name]
    allowed = {**COMMON_DEFAULTS, **spec.defaults}
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"data.{unknown[0]}: unknown key for dataset {name!r}; valid keys: "
            f"{', '.join(sorted(allowed))}"
        )
    for key, value in options.items():
        _check_value(name, key, value, allowed[key])
    merged = {**allowed, **options}
    check_batching(merged["batch_size"], merged["eval_batch_size"], merged["seed"])
    if spec.builder_config is not None:
        try:
            loaders.make_config(spec.builder_config, merged)
        except (TypeError, ValueError) as error:
            raise ValueError(f"data ({name}): {error}") from None
    return spec, merged


def image_shape_of(config: Mapping[str, Any] | Any) -> tuple[int, int, int] | None:
    """The ``(H, W, C)`` of the images a ``data`` config section gives (checked, no data
    read), or None where its inputs are tokens."""
    spec, merged = _resolve(config)
    return None if spec.image_shape is None else spec.image_shape(merged)


def audio_shape_of(config: Mapping[str, Any] | Any) -> tuple[int, int] | None:
    """The ``(frames, bins)`` of the spectrograms a ``data`` config section gives (checked, no
    data read), or None where its inputs are not audio."""
    spec, merged = _resolve(config)
    return None if spec.audio_shape is None else spec.audio_shape(merged)


def check_config(config: Mapping[str, Any] | Any) -> DatasetSpec:
    """Check a ``data`` config section (names, keys, types, sizes) without reading or
    generating any data; return the dataset's :class:`DatasetSpec`. Raises ``ValueError``
    naming the key."""
    return _resolve(config)[0]


def get_task(config: Mapping[str, Any] | Any) -> Task:
    """The :class:`Task` for ``config`` (a dict or ``ml_collections.ConfigDict``).

    ``config.name`` picks the dataset; unknown names, keys or bad values raise ValueError
    naming the key and the valid choices (see :func:`check_config`).
    """
    spec, merged = _resolve(config)
    data_dir = resolve_data_dir(merged.pop("data_dir"))
    batching = {key: merged.pop(key) for key in ("batch_size", "eval_batch_size", "seed", "cache")}
    resolved = {"name": spec.name, "data_dir": data_dir, **batching, **merged}
    return spec.load(merged, data_dir, name=spec.name, config=resolved, **batching)
