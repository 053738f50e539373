"""Ring attention against dense attention on fake CPU devices, values and gradients.

Run by ``tests/kernels/test_ring.py`` as ``python ring_parity.py GROUP`` (a key of
:data:`GROUPS`) in a process of its own, started with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (the device count is fixed when JAX
starts) and XLA's backend optimisation off (compiling, not running, takes these tiny programs'
time). Prints one line ``RESULT {"case": ..., "worst": ..., ...}`` per case, where
``worst`` is the largest ``|ring - dense| / (ATOL + RTOL * |dense|)`` over the output and every
gradient: the case passes when it is at most 1.
"""

from __future__ import annotations

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

import attn
from attn import masks, positional

ATOL = RTOL = 1e-5
B, T, N, K, H = 2, 32, 4, 2, 8
# Per-example lengths that leave some query rows with no key (their output and gradients must
# be dense's zeros) and cut blocks in the middle.
Q_LENGTHS, KV_LENGTHS = np.array([13, 32]), np.array([9, 27])
# Packed sequences whose boundaries fall inside blocks of both 4 and 8 devices.
SEGMENT_IDS = np.repeat(np.array([[0, 1, 2, 3], [5, 5, 6, 7]]), [5, 14, 6, 7], axis=1)

# name -> (mask from its traced arrays, those arrays, whether an ALiBi bias rule is added).
MASKS = {
    "causal": (lambda: masks.causal(), (), False),
    "sliding_window": (lambda: masks.sliding_window(6, 2), (), False),
    "padding": (lambda q, kv: masks.padding(q, kv), (Q_LENGTHS, KV_LENGTHS), False),
    "segments": (lambda ids: masks.segments(ids) & masks.causal(), (SEGMENT_IDS,), False),
    "causal_alibi": (lambda: masks.causal(), (), True),
}
# Mesh shapes: the batch split over "data" as well, and the sequence alone over 8 devices.
MESHES = {"data2_context4": (2, 4), "context8": (1, 8)}
MODEL_CASE = "decoder_lm-context4"
# What each process runs (one per group keeps each well under a minute): case names by group.
GROUPS = {
    **{mesh: [f"{mask}-{mesh}" for mask in MASKS] for mesh in MESHES},
    "model": [MODEL_CASE],
}


def _worst(ring: object, dense: object) -> float:
    ratios = [
        float(np.max(np.abs(a - b) / (ATOL + RTOL * np.abs(b))))
        for a, b in zip(jax.tree.leaves(ring), jax.tree.leaves(dense), strict=True)
    ]
    return max(ratios)


def _attention_case(mask_name: str, mesh_shape: tuple[int, int]) -> dict[str, object]:
    make_mask, mask_arrays, alibi = MASKS[mask_name]
    rng = np.random.default_rng(0)
    q, k, v = (rng.normal(size=(B, T, n, H)).astype(np.float32) for n in (N, K, K))
    cotangent = rng.normal(size=(B, T, N, H)).astype(np.float32)
    slopes = positional.alibi_slopes(N)

    def attention(implementation: str) -> object:
        def run(q, k, v, slopes, cotangent, mask_arrays):
            def attend(q, k, v, slopes):
                bias = positional.alibi_rule(slopes) if alibi else None
                mask = make_mask(*mask_arrays)
                return attn.attend(q, k, v, mask=mask, bias=bias, implementation=implementation)

            out, pullback = jax.vjp(attend, q, k, v, slopes)
            return out, pullback(cotangent)

        return jax.jit(run)(q, k, v, slopes, cotangent, mask_arrays)

    mesh = jax.make_mesh(mesh_shape, ("data", "context"))
    with jax.set_mesh(mesh):
        ring = attention("ring")
    dense = attention("dense")
    finite = all(bool(np.isfinite(x).all()) for x in jax.tree.leaves(ring))
    return {"worst": _worst(ring, dense), "finite": finite}


def _model_case() -> dict[str, object]:
    """A decoder LM (causal and padding masks) with ``model.attention.implementation="ring"``
    on 4 devices against the same model with ``"dense"``: logits and parameter gradients."""
    from flax import nnx

    from tests.models.common import Task, build, make_batch

    task = Task("lm", input_length=8)
    batch = make_batch(task, batch_size=2)

    @nnx.jit  # one program initialises both (eagerly, every initializer compiles on its own)
    def build_both():
        return tuple(
            build("decoder_lm", "lm", task=task, implementation=implementation)[0]
            for implementation in ("ring", "dense")
        )

    @nnx.jit
    def logits_and_grads(model, batch):
        def loss(model):
            logits = model(batch, deterministic=True)
            return jnp.mean(jnp.sin(logits)), logits

        grads, logits = nnx.grad(loss, has_aux=True)(model)
        return logits, nnx.to_pure_dict(grads)

    ring_model, dense_model = build_both()
    try:  # the option reached attend: without a mesh the ring refuses to run
        ring_model(batch, deterministic=True)
        reached = False
    except ValueError as error:
        reached = "implementation='ring'" in str(error)
    with jax.set_mesh(jax.make_mesh((4,), ("context",))):
        ring = logits_and_grads(ring_model, batch)
    dense = logits_and_grads(dense_model, batch)
    finite = all(bool(np.isfinite(x).all()) for x in jax.tree.leaves(ring))
    return {"worst": _worst(ring, dense), "finite": finite, "ring_reached": reached}


def main(group: str) -> None:
    """The cases of ``group``: a key of :data:`MESHES` or ``"model"``."""
    if jax.local_device_count() != 8:
        raise SystemExit(f"needs 8 devices, got {jax.local_device_count()}")
    if group == "model":
        results = {MODEL_CASE: _model_case()}
    else:
        results = {f"{mask}-{group}": _attention_case(mask, MESHES[group]) for mask in MASKS}
    for case, result in results.items():
        print("RESULT", json.dumps({"case": case, **result}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
