"""A stand-in task, tiny configs and batches for the model tests."""

from __future__ import annotations

import dataclasses
import typing

import numpy as np
from flax import nnx

import attn.models

# Tiny sizes keep each compile to a fraction of a second on CPU; tests that need depth (layer
# naming, leaks across layers, a cache per layer) ask for num_layers=2.
SMALL = dict(num_layers=1, features=16, num_heads=4, num_kv_heads=2, mlp_features=32)
RNN_SMALL = dict(embed_features=8, hidden_features=16)

# (model name, task kind) pairs the models handle.
MODEL_KINDS = [
    ("encoder_classifier", "classify"),
    ("encoder_classifier", "tag"),
    ("decoder_lm", "lm"),
    ("encoder_decoder", "seq2seq"),
    ("rnn_seq2seq", "seq2seq"),
]


@dataclasses.dataclass(frozen=True)
class Task:
    kind: str
    input_vocab_size: int = 13
    target_vocab_size: int = 11
    input_length: int = 7
    target_length: int = 5


def build(name: str, kind: str, seed: int = 0, task: Task | None = None, **overrides):
    """The model ``name`` at the tiny sizes with ``overrides``; keys of its ``attention``
    section (score, weighting, positional, mask, variant, ...) may be given flat here."""
    task = task or Task(kind)
    sizes = RNN_SMALL if name == "rnn_seq2seq" else SMALL
    attention_class = typing.get_type_hints(attn.models.MODELS[name].Options)["attention"]
    attention_keys = {field.name for field in dataclasses.fields(attention_class)}
    attention = {key: overrides.pop(key) for key in list(overrides) if key in attention_keys}
    config = {"name": name, **sizes, **overrides, "attention": attention}
    return attn.models.build_model(config, task, rngs=nnx.Rngs(seed)), task


def make_batch(task: Task, batch_size: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    """Random tokens; example 0 is right-padded by 2 (inputs and, for seq2seq, targets)."""
    rng = np.random.default_rng(seed)
    T, U = task.input_length, task.target_length
    inputs = rng.integers(1, task.input_vocab_size, (batch_size, T)).astype(np.int32)
    inputs[0, T - 2 :] = 0
    if task.kind == "classify":
        targets = rng.integers(0, task.target_vocab_size, (batch_size,))
    elif task.kind == "seq2seq":
        targets = rng.integers(1, task.target_vocab_size, (batch_size, U))
        targets[0, U - 2 :] = 0
    else:
        targets = rng.integers(1, task.target_vocab_size, (batch_size, T))
    targets = targets.astype(np.int32)
    return {"inputs": inputs, "targets": targets, "weights": (targets != 0).astype(np.float32)}
