"""What a model needs to know about its task, and the checks of it."""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import numpy as np

__all__ = ["TASK_KINDS", "TaskInfo", "TaskSpec", "check_task"]

# What a task asks for: a class per example, a tag per token, an output sequence, the next token.
TASK_KINDS = ("classify", "tag", "seq2seq", "lm")


class TaskSpec(Protocol):
    """What a model needs to know about its task (``attn.data`` tasks have these attributes).

    Token id 0 is padding in inputs and targets.
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
    input_vocab_size: int
    target_vocab_size: int
    input_length: int
    target_length: int  # 0 where the task kind does not use it


def _positive_int(task: TaskSpec, field: str) -> int:
    value = getattr(task, field)
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
        raise ValueError(f"task.{field} must be a positive int, got {value!r}")
    return int(value)


def check_task(task: TaskSpec, model_name: str, kinds: tuple[str, ...]) -> TaskInfo:
    """``task`` as a :class:`TaskInfo`, or ``ValueError`` unless it has the :class:`TaskSpec`
    fields and a kind in ``kinds``."""
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
    return TaskInfo(
        kind=kind,
        input_vocab_size=_positive_int(task, "input_vocab_size"),
        target_vocab_size=_positive_int(task, "target_vocab_size"),
        input_length=_positive_int(task, "input_length"),
        # Only seq2seq reads it: the other kinds' targets follow the inputs or are [B].
        target_length=_positive_int(task, "target_length") if kind == "seq2seq" else 0,
    )
