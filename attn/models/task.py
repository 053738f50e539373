"""What a model needs to know about its task, and the checks of it."""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import numpy as np

__all__ = ["INPUT_KINDS", "TASK_KINDS", "TaskInfo", "TaskSpec", "check_task", "input_kind_of"]

# What a task asks for: a class per example, a tag per token, an output sequence, the next token.
TASK_KINDS = ("classify", "tag", "seq2seq", "lm")
# What its inputs are: int32 token ids [B, T], float32 images [B, H, W, C], or float32 audio
# features [B, frames, bins] with int32 input_lengths [B].
INPUT_KINDS = ("tokens", "image", "audio")


class TaskSpec(Protocol):
    """What a model needs to know about its task (``attn.data`` tasks have these attributes).

    Token id 0 is padding in inputs and targets. A task whose inputs are images has an
    ``image_shape`` ``(H, W, C)``, one whose inputs are audio an ``audio_shape``
    ``(frames, bins)`` (frames after padding, feature bins); for both, ``input_vocab_size``
    and ``input_length`` are unused.
    """

    kind: str  # one of TASK_KINDS
    input_vocab_size: int
    target_vocab_size: int  # classes for "classify"
    input_length: int
    target_length: int


@dataclasses.dataclass(frozen=True)
class TaskInfo:
    """The checked :class:`TaskSpec` fields as plain Python values (models keep some)."""

    kind: str
    input_vocab_size: int  # 0 for image and audio inputs
    target_vocab_size: int
    input_length: int  # 0 for image and audio inputs
    target_length: int  # 0 where the task kind does not use it
    image_shape: tuple[int, int, int] | None = None  # (H, W, C) for image inputs
    audio_shape: tuple[int, int] | None = None  # (frames, bins) for audio inputs

    @property
    def input_kind(self) -> str:
        return input_kind_of(self.image_shape, self.audio_shape)


def input_kind_of(image_shape: Any, audio_shape: Any) -> str:
    """The input kind (:data:`INPUT_KINDS`) of a task with these shapes (None: not that kind)."""
    if image_shape is not None:
        return "image"
    return "tokens" if audio_shape is None else "audio"


def _positive_int(task: TaskSpec, field: str) -> int:
    value = getattr(task, field)
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
        raise ValueError(f"task.{field} must be a positive int, got {value!r}")
    return int(value)


def _shape(task: Any, field: str, axes: str) -> tuple[int, ...] | None:
    """``task.<field>`` as a tuple of ``len(axes)`` positive ints, or ``None`` if unset."""
    shape = getattr(task, field, None)
    if shape is None:
        return None
    shape = tuple(shape)
    if len(shape) != len(axes.split(", ")) or not all(
        isinstance(n, int | np.integer) and not isinstance(n, bool) and n >= 1 for n in shape
    ):
        raise ValueError(f"task.{field} must be ({axes}) of positive ints, got {shape!r}")
    return tuple(int(n) for n in shape)


def check_task(
    task: TaskSpec,
    model_name: str,
    kinds: tuple[str, ...],
    input_kinds: tuple[str, ...] = ("tokens",),
) -> TaskInfo:
    """``task`` as a :class:`TaskInfo`, or ``ValueError`` unless it has the :class:`TaskSpec`
    fields, a kind in ``kinds`` and inputs of a kind in ``input_kinds``."""
    missing = [field for field in TaskSpec.__annotations__ if not hasattr(task, field)]
    if missing:
        raise ValueError(f"task {task!r} lacks {missing}; a task needs kind, vocab sizes, lengths")
    kind: Any = task.kind
    if kind not in TASK_KINDS:
        raise ValueError(f"task.kind={kind!r} is not valid; choose one of {', '.join(TASK_KINDS)}")
    if kind not in kinds:
        raise ValueError(
            f"model {model_name!r} does not handle task kind {kind!r}; it handles "
            f"{', '.join(kinds)}"
        )
    image_shape = _shape(task, "image_shape", "H, W, C")
    audio_shape = _shape(task, "audio_shape", "frames, bins")
    if image_shape is not None and audio_shape is not None:
        raise ValueError(
            f"task has both image_shape {image_shape} and audio_shape {audio_shape}; "
            "its inputs are one or the other"
        )
    input_kind = input_kind_of(image_shape, audio_shape)
    if input_kind not in input_kinds:
        shape = image_shape or audio_shape
        raise ValueError(
            f"model {model_name!r} reads {' or '.join(input_kinds)} inputs, but the task's "
            f"inputs are {input_kind}"
            + (f" of shape {shape}" if shape else "")
            + "; pick a model for them"
        )
    tokens = input_kind == "tokens"
    return TaskInfo(
        kind=kind,
        input_vocab_size=_positive_int(task, "input_vocab_size") if tokens else 0,
        target_vocab_size=_positive_int(task, "target_vocab_size"),
        input_length=_positive_int(task, "input_length") if tokens else 0,
        # Only seq2seq reads it: the other kinds' targets follow the inputs or are [B].
        target_length=_positive_int(task, "target_length") if kind == "seq2seq" else 0,
        image_shape=image_shape,  # type: ignore[arg-type]
        audio_shape=audio_shape,  # type: ignore[arg-type]
    )
