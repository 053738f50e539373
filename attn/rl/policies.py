"""Policies ``obs -> (action logits [B, A], value [B])`` chosen by ``model.name``.

Each has ``encode(obs)`` (what depends only on the episode's static entities, computed once
per episode) and ``decode(encoded, obs)`` (one step's logits and value); calling it does both.

``entity_pointer``: a Transformer encoder over the entities (items, cities) and a pointer
head that scores every entity against a context query with an ``attn.scores`` function (Kool
et al.'s attention model, used as an actor-critic). ``mlp``: separate actor and critic MLPs on
the flattened observation (the gymnax sanity runs, and a baseline on the entity tasks).

Illegal actions get logit :data:`MASKED_LOGIT` (finite, so that a state where every action is
masked gives a uniform distribution with finite log-probabilities and entropy, never NaN).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from attn import catalog, masks, weighting
from attn.attend import attend
from attn.models.options import as_config_dict, option, parse_options
from attn.models.stacks import AttentionOptions, TransformerOptions, build_encoder
from attn.nn.transformer import ACTIVATIONS

__all__ = [
    "MASKED_LOGIT",
    "POLICIES",
    "EntityPointerPolicy",
    "MLPPolicy",
    "build_policy",
    "default_config",
    "mask_logits",
    "parse_policy",
]

Array = jax.Array
Obs = Mapping[str, Array]
MASKED_LOGIT = -1e9


def mask_logits(logits: Array, action_mask: Array) -> Array:
    """``logits [..., A]`` with illegal actions (``action_mask`` False) at :data:`MASKED_LOGIT`."""
    return jnp.where(action_mask, logits.astype(jnp.float32), MASKED_LOGIT)


@dataclasses.dataclass(frozen=True)
class EntityPointerOptions(TransformerOptions):
    """``model`` of ``entity_pointer``: the encoder's options (:class:`TransformerOptions`;
    entities are a set, so ``attention.positional`` must stay ``"none"``) and the head's.

    ``pointer_score``: the catalog score of the context query against each entity;
    ``logit_clip`` C bounds the logits to ``C * tanh(score)`` (Bello et al.; 0: off).
    """

    attention: AttentionOptions = option(AttentionOptions(positional="none"))
    pointer_score: str = option("scaled_dot", catalog_kind="score")
    logit_clip: float = option(10.0, minimum=0.0)


@dataclasses.dataclass(frozen=True)
class MLPOptions:
    """``model`` of ``mlp``: ``num_layers`` hidden layers of ``features`` for actor and critic."""

    name: str
    num_layers: int = option(2, minimum=1)
    features: int = option(64, minimum=1)
    activation: str = option("tanh", choices=tuple(ACTIVATIONS))


def _linear(inputs: int, outputs: int, rngs: nnx.Rngs, scale: float | None = None) -> nnx.Linear:
    # A small output scale starts the policy near uniform (as PPO implementations do).
    init = (
        nnx.initializers.orthogonal(scale) if scale is not None else nnx.initializers.lecun_normal()
    )
    return nnx.Linear(inputs, outputs, kernel_init=init, rngs=rngs)


class EntityPointerPolicy(nnx.Module):
    """Kool et al.'s attention model as an actor-critic.

    :meth:`encode` runs the Transformer encoder over ``obs["entities"] [B, E, F]`` (static
    within an episode, so it runs once per episode); :meth:`decode` makes each step's decision
    from that encoding: a context (mean entity encoding, the encodings of ``obs["context"]
    [B, C]`` with a learned placeholder where an index is -1, and ``obs["globals"] [B, G]``)
    forms a query, which first takes a multi-head glimpse of the entities with ``attn.attend``
    under the environment's ``action_mask`` as a key mask (``attn.masks.from_array``), then
    scores every entity with ``pointer_score``: the action logits ``[B, E]`` (action = entity).
    """

    Options = EntityPointerOptions

    def __init__(self, options: EntityPointerOptions, shapes: Obs, num_actions: int, *, rngs):
        num_entities, entity_features = shapes["entities"].shape
        if num_entities != num_actions:
            raise ValueError(
                f"model.name='entity_pointer' needs one action per entity; the environment has "
                f"{num_entities} entities and {num_actions} actions"
            )
        if options.attention.positional != "none":
            raise ValueError(
                "model.attention.positional: entities are a set, use 'none' (got "
                f"{options.attention.positional!r})"
            )
        d = options.features
        if d % options.num_heads:
            raise ValueError(
                f"model.features={d} must be a multiple of model.num_heads={options.num_heads}"
            )
        num_context = shapes["context"].shape[0] if "context" in shapes else 0
        num_globals = shapes["globals"].shape[0] if "globals" in shapes else 0
        context_features = d * (1 + num_context) + num_globals
        self.options = options
        self.score = catalog.get("score", options.pointer_score)
        self.embed = _linear(entity_features, d, rngs)
        self.encoder = build_encoder(options, rngs=rngs)
        # Stands in for a context entity not chosen yet (TSP's first city at the first step).
        self.placeholder = nnx.data(
            nnx.Param(jax.random.normal(rngs.params(), (num_context, d)) * 0.1)
            if num_context
            else None
        )
        self.entity_projection = _linear(d, 3 * d, rngs)  # glimpse keys, values; pointer keys
        self.query = _linear(context_features, d, rngs)
        self.glimpse_out = _linear(d, d, rngs)
        self.value_hidden = _linear(context_features + d, d, rngs)
        self.value_out = _linear(d, 1, rngs, scale=1.0)

    def encode(self, obs: Obs) -> dict[str, Array]:
        """The per-episode part: entity encodings ``[B, E, D]`` and their projections."""
        h = self.encoder(self.embed(obs["entities"]), deterministic=True)
        glimpse_keys, glimpse_values, pointer_keys = jnp.split(self.entity_projection(h), 3, -1)
        return {
            "h": h,
            "glimpse_keys": glimpse_keys,
            "glimpse_values": glimpse_values,
            "pointer_keys": pointer_keys,
        }

    def _heads(self, x: Array) -> Array:
        """``[B, S, D] -> [B, S, N, D // N]``."""
        return x.reshape(*x.shape[:2], self.options.num_heads, -1)

    def pointer(self, encoded: dict[str, Array], obs: Obs) -> tuple[Array, Array]:
        """Unmasked pointer logits ``[B, E]`` and the value ``[B]`` of one step."""
        h = encoded["h"]
        parts = [h.mean(axis=1)]
        if "context" in obs:
            index = obs["context"]  # [B, C]
            picked = jnp.take_along_axis(h, jnp.maximum(index, 0)[..., None], axis=1)
            picked = jnp.where((index >= 0)[..., None], picked, self.placeholder[...])
            parts.append(picked.reshape(h.shape[0], -1))
        if "globals" in obs:
            parts.append(obs["globals"])
        context = jnp.concatenate(parts, axis=-1)
        query = self.query(context)[:, None, :]  # [B, T=1, D]
        legal = masks.from_array(obs["action_mask"][:, None, None, :])  # keys: legal entities
        # A state with no legal entity glimpses nothing: output 0 (attn's rule), never NaN.
        glimpse = attend(
            self._heads(query),
            self._heads(encoded["glimpse_keys"]),
            self._heads(encoded["glimpse_values"]),
            mask=legal,
        )
        glimpse = self.glimpse_out(glimpse.reshape(query.shape))  # [B, 1, D]
        logits = self.score(glimpse[:, :, None, :], encoded["pointer_keys"][:, :, None, :])
        logits = logits[:, 0, 0, :]  # [B, N=1, T=1, S=E] -> [B, E]
        if self.options.logit_clip:
            logits = self.options.logit_clip * jnp.tanh(logits)
        hidden = jax.nn.relu(self.value_hidden(jnp.concatenate([context, glimpse[:, 0]], -1)))
        return logits, self.value_out(hidden)[:, 0]

    def decode(self, encoded: dict[str, Array], obs: Obs) -> tuple[Array, Array]:
        """Masked action logits ``[B, A]`` and values ``[B]`` from :meth:`encode`'s output."""
        logits, value = self.pointer(encoded, obs)
        return mask_logits(logits, obs["action_mask"]), value

    def __call__(self, obs: Obs) -> tuple[Array, Array]:
        """Masked action logits ``[B, A]`` and values ``[B]``."""
        return self.decode(self.encode(obs), obs)

    def attention(self, encoded: dict[str, Array], obs: Obs) -> Array:
        """The pointer's attention over entities ``[B, E]``: ``attn.weighting.softmax`` of its
        logits under the action mask (rows with no legal entity are 0)."""
        logits, _ = self.pointer(encoded, obs)
        return weighting.softmax(logits, obs["action_mask"])


def flat_features(obs: Obs) -> Array:
    """Every observation array but the context indices, flattened: ``[B, F]`` (the action
    mask too: on the entity tasks it says what is packed or visited)."""
    parts = [
        value.reshape(value.shape[0], -1).astype(jnp.float32)
        for name, value in sorted(obs.items())
        if name != "context"
    ]
    return jnp.concatenate(parts, axis=-1)


class MLPPolicy(nnx.Module):
    """Actor and critic MLPs on :func:`flat_features`."""

    Options = MLPOptions

    def __init__(self, options: MLPOptions, shapes: Obs, num_actions: int, *, rngs):
        inputs = sum(math.prod(s.shape) for name, s in shapes.items() if name != "context")
        sizes = [inputs] + [options.features] * options.num_layers
        self.activation = ACTIVATIONS[options.activation]
        self.actor = nnx.List([_linear(a, b, rngs, 2**0.5) for a, b in itertools.pairwise(sizes)])
        self.critic = nnx.List([_linear(a, b, rngs, 2**0.5) for a, b in itertools.pairwise(sizes)])
        self.actor_out = _linear(options.features, num_actions, rngs, scale=0.01)
        self.critic_out = _linear(options.features, 1, rngs, scale=1.0)

    def _trunk(self, layers: nnx.List, x: Array) -> Array:
        for layer in layers:
            x = self.activation(layer(x))
        return x

    def encode(self, obs: Obs) -> None:
        """Nothing is computed once per episode."""
        return None

    def decode(self, encoded: None, obs: Obs) -> tuple[Array, Array]:
        """Masked action logits ``[B, A]`` and values ``[B]``."""
        x = flat_features(obs)
        logits = self.actor_out(self._trunk(self.actor, x))
        value = self.critic_out(self._trunk(self.critic, x))[:, 0]
        return mask_logits(logits, obs["action_mask"]), value

    def __call__(self, obs: Obs) -> tuple[Array, Array]:
        """Masked action logits ``[B, A]`` and values ``[B]``."""
        return self.decode(None, obs)

    def attention(self, encoded: None, obs: Obs) -> Array:
        """The action distribution ``[B, A]`` (an MLP attends to nothing; plots show this)."""
        logits, _ = self(obs)
        return jax.nn.softmax(logits, axis=-1)


POLICIES: dict[str, type[nnx.Module]] = {
    "entity_pointer": EntityPointerPolicy,
    "mlp": MLPPolicy,
}


def _policy_class(name: Any) -> type[nnx.Module]:
    if name not in POLICIES:
        raise ValueError(f"model.name: unknown policy {name!r}; valid: {', '.join(POLICIES)}")
    return POLICIES[name]


def default_config(name: str) -> ml_collections.ConfigDict:
    """The ``model`` section of policy ``name``: every option with its default."""
    return as_config_dict(parse_options(_policy_class(name).Options, {"name": name}, "model"))


def parse_policy(model_config: Any) -> Any:
    """The options dataclass of the policy ``model_config["name"]`` (checked, or ValueError)."""
    if isinstance(model_config, ml_collections.ConfigDict):
        model_config = model_config.to_dict()
    return parse_options(_policy_class(model_config.get("name")).Options, model_config, "model")


def build_policy(options: Any, shapes: Obs, num_actions: int, *, rngs: nnx.Rngs) -> nnx.Module:
    """Policy ``options.name`` for observations shaped like ``shapes`` (one environment's,
    arrays or ``jax.ShapeDtypeStruct``) and ``num_actions`` actions."""
    return _policy_class(options.name)(options, shapes, num_actions, rngs=rngs)
