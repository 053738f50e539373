"""The interface every task model implements, and the pieces the models share."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = [
    "Batch",
    "TaskModel",
    "attention_maps_from",
    "audio_array",
    "batch_array",
    "cross_attention_heads",
    "image_array",
    "jit_forward",
    "padding_mask",
    "record_attention",
]

Array = jax.Array
Batch = Mapping[str, Any]


def batch_array(batch: Batch, name: str, rank: int) -> Array:
    """``batch[name]`` as an int32 array of the given rank, or a ``ValueError`` saying why not."""
    if name not in batch:
        raise ValueError(f"batch lacks {name!r}; it has {sorted(batch)}")
    array = jnp.asarray(batch[name])
    if array.ndim != rank or not jnp.issubdtype(array.dtype, jnp.integer):
        raise ValueError(
            f"batch[{name!r}] must be an int array of rank {rank}, "
            f"got {array.dtype}{list(array.shape)}"
        )
    return array.astype(jnp.int32)


def image_array(batch: Batch, image_shape: tuple[int, int, int]) -> Array:
    """``batch["inputs"]`` as float32 images ``[B, H, W, C]`` of ``image_shape``, or a
    ``ValueError`` saying why not."""
    if "inputs" not in batch:
        raise ValueError(f"batch lacks 'inputs'; it has {sorted(batch)}")
    array = jnp.asarray(batch["inputs"])
    if array.ndim != 4 or tuple(array.shape[1:]) != tuple(image_shape):
        raise ValueError(
            f"batch['inputs'] must be images [B, {', '.join(map(str, image_shape))}], "
            f"got {array.dtype}{list(array.shape)}"
        )
    return array.astype(jnp.float32)


def audio_array(batch: Batch, audio_shape: tuple[int, int]) -> tuple[Array, Array]:
    """``batch["inputs"]`` as float32 features ``[B, frames, bins]`` of ``audio_shape`` and
    ``batch["input_lengths"]`` as int32 ``[B]`` (real frames per example), or a
    ``ValueError`` saying why not."""
    if "inputs" not in batch:
        raise ValueError(f"batch lacks 'inputs'; it has {sorted(batch)}")
    features = jnp.asarray(batch["inputs"])
    if features.ndim != 3 or tuple(features.shape[1:]) != tuple(audio_shape):
        raise ValueError(
            f"batch['inputs'] must be audio features [B, {', '.join(map(str, audio_shape))}], "
            f"got {features.dtype}{list(features.shape)}"
        )
    lengths_b = batch_array(batch, "input_lengths", 1)
    if lengths_b.shape[0] != features.shape[0]:
        raise ValueError(
            f"batch['input_lengths'] must be [B] = [{features.shape[0]}], got "
            f"{list(lengths_b.shape)}"
        )
    return features.astype(jnp.float32), lengths_b


def padding_mask(valid_bs: Array) -> Array:
    """Keys that are real tokens (``valid [B, S]``) as a bool mask ``[B, 1, 1, S]``.

    A bool array rather than lengths, so padding may sit anywhere; its query axis has size 1,
    which keeps it valid for any query chunk (a KV-cache step included). The config's own
    mask (``model.attention.mask``) is applied by the attention modules themselves.
    """
    return valid_bs[:, None, None, :]


def cross_attention_heads(maps: Mapping[str, Array]) -> Array:
    """The decoder's cross-attention maps (``"decoder/layer{i}/cross"`` ``[B, N, U, S]``) of
    an :func:`attention_maps_from` dict, layer-major along one head axis: ``[B, L * N, U, S]``."""
    return jnp.concatenate([maps[name] for name in sorted(maps) if name.endswith("/cross")], 1)


def attention_maps_from(captured: nnx.State) -> dict[str, Array]:
    """Name the recorded ``attention_weights`` of a captured state by where they come from:
    ``("encoder", "layers", 0, "self_attention")`` becomes ``"encoder/layer0/self"``."""
    renames = {"self_attention": "self", "cross_attention": "cross"}
    maps = {}
    for path, value in nnx.to_flat_state(captured):
        if path[-1] != "attention_weights":
            continue
        parts, rest = [], list(path[:-1])
        while rest:
            part = rest.pop(0)
            if part == "layers" and rest and isinstance(rest[0], int):
                parts.append(f"layer{rest.pop(0)}")
            else:
                parts.append(renames.get(str(part), str(part)))
        (weights_bnts,) = value.get_value()  # sown once per call
        maps["/".join(parts)] = weights_bnts
    return maps


def record_attention(model: nnx.Module, method: str, *args: Any) -> dict[str, Array]:
    """Run ``model.<method>(*args)`` deterministically with every attention recording its
    weights; return them named as in :func:`attention_maps_from`. ``model`` is not changed."""
    recording = nnx.view(model, deterministic=True, record_weights=True)
    _, captured = nnx.capture(getattr(recording, method), nnx.Intermediate)(*args)
    return attention_maps_from(captured)


@nnx.jit
def jit_forward(model: nnx.Module, batch: Batch) -> Array:
    """``model(batch, deterministic=True)``, compiled (``batch`` holds arrays only)."""
    return model(batch, deterministic=True)


class TaskModel(nnx.Module):
    """A model for one kind of task; the training loop uses only these methods.

    Batches are dicts: ``"inputs"`` int32 ``[B, T]`` (0 = padding) or, for a model whose
    ``input_kinds`` hold ``"image"``, float32 ``[B, H, W, C]``, or for ``"audio"`` float32
    features ``[B, frames, bins]`` with int32 ``"input_lengths"`` ``[B]``; ``"targets"`` (``[B]``
    classify, ``[B, T]`` tag and lm, ``[B, U]`` seq2seq) and ``"weights"`` (unused here).
    """

    kinds: ClassVar[tuple[str, ...]] = ()
    input_kinds: ClassVar[tuple[str, ...]] = ("tokens",)  # attn.models.task.INPUT_KINDS
    Options: ClassVar[type]  # the dataclass of the model's options (its config section)

    def __call__(self, batch: Batch, *, deterministic: bool) -> Array:
        """float32 logits: classify ``[B, C]``; tag and lm ``[B, T, V]``; seq2seq ``[B, U, V]``
        (teacher-forced)."""
        raise NotImplementedError

    def predict(self, batch: Batch) -> Array:
        """int32 predictions shaped like ``batch["targets"]``, from the inputs alone."""
        raise NotImplementedError

    def attention_maps(self, batch: Batch) -> dict[str, Array]:
        """``name -> weights [B, N, T, S]`` in deterministic mode, for plots."""
        raise NotImplementedError

    def sample(self, prompt: Array, num_tokens: int, rng: Array, temperature: float = 1.0) -> Array:
        """Language models only: ``prompt [B, P]`` continued by ``num_tokens`` sampled tokens."""
        raise NotImplementedError(
            f"{type(self).__name__} does not sample; sample() is for language models "
            "(model 'decoder_lm', task kind 'lm')"
        )
