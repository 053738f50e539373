"""Merging partial attention over disjoint key sets equals attention over all keys."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import attn
from attn import masks, merge

B, T, S, N, H = 2, 5, 12, 4, 8


def make_qkv():
    generator = np.random.default_rng(0)
    q = generator.standard_normal((B, T, N, H)).astype(np.float32)
    k = generator.standard_normal((B, S, 2, H)).astype(np.float32)
    v = generator.standard_normal((B, S, 2, H)).astype(np.float32)
    return q, k, v


def merged(q, k, v, split, mask, implementation):
    """Attention over keys [:split] and [split:] separately, then merged."""

    def part(keys):
        part_mask = (
            None
            if mask is None
            else masks.from_array(
                np.broadcast_to(mask.dense((B, N, T, S)), (B, N, T, S))[..., keys]
            )
        )
        return attn.attend(
            q,
            k[:, keys],
            v[:, keys],
            mask=part_mask,
            return_lse=True,
            implementation=implementation,
        )

    return merge(*part(slice(0, split)), *part(slice(split, S)))


@pytest.mark.parametrize("implementation", ["dense", "chunked"])
@pytest.mark.parametrize("mask", [None, masks.causal(S - T), masks.padding(q_lengths=[5, 2])])
def test_merge_equals_attention_over_all_keys(implementation, mask, quick_jit):
    def everything(q, k, v):
        full = attn.attend(q, k, v, mask=mask, return_lse=True, implementation="dense")
        return full, [merged(q, k, v, split, mask, implementation) for split in (1, 7)]

    (want_out, want_lse), parts = quick_jit(everything)(*make_qkv())
    for out, lse in parts:
        np.testing.assert_allclose(out, want_out, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(lse, want_lse, rtol=1e-5, atol=1e-5)


def test_merge_gradients_and_empty_rows(quick_jit):
    """Rows empty in one part take the other; rows empty in both stay 0 with zero gradients."""
    q, k, v = make_qkv()
    mask = masks.causal(S - T) & masks.padding(q_lengths=[5, 2])

    def loss(fn):
        return lambda q, k, v: jnp.sum(fn(q, k, v)[0] ** 2)

    split_loss = loss(lambda q, k, v: merged(q, k, v, 9, mask, "dense"))
    full_loss = loss(lambda q, k, v: attn.attend(q, k, v, mask=mask, return_lse=True))
    got = quick_jit(jax.grad(split_loss, argnums=(0, 1, 2)))(q, k, v)
    want = quick_jit(jax.grad(full_loss, argnums=(0, 1, 2)))(q, k, v)
    for a, b in zip(got, want, strict=True):
        assert np.isfinite(a).all()
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_merge_rejects_mismatched_parts():
    out, lse = jnp.zeros((B, T, N, H)), jnp.zeros((B, N, T))
    with pytest.raises(ValueError, match="differ in shape"):
        merge(out, lse, out[:, :1], lse)
    with pytest.raises(ValueError, match=r"lse must be \[B, N, T\]"):
        merge(out, lse.transpose(0, 2, 1), out, lse.transpose(0, 2, 1))
