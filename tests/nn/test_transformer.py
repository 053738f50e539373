"""attn.nn.TransformerBlock, TransformerEncoder and TransformerDecoder."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attn import masks
from attn.nn import TransformerBlock, TransformerDecoder, TransformerEncoder

B, T, S, D, N, F = 2, 7, 5, 16, 4, 32


def inputs(t=T, features=D, seed=0):
    return jax.random.normal(jax.random.key(seed), (B, t, features))


@pytest.mark.parametrize(("pre_norm", "norm"), [(True, "layer_norm"), (False, "rms_norm")])
def test_block_shapes_and_composition(pre_norm, norm):
    block = TransformerBlock(D, N, F, pre_norm=pre_norm, norm=norm, causal=True, rngs=nnx.Rngs(0))
    x = inputs()
    out = block(x)
    assert out.shape == (B, T, D)

    if pre_norm:
        h = x + block.self_attention(block.self_attention_norm(x), mask=masks.causal())
        want = h + block.mlp(block.mlp_norm(h))
    else:
        h = block.self_attention_norm(x + block.self_attention(x, mask=masks.causal()))
        want = block.mlp_norm(h + block.mlp(h))
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


def test_block_with_cross_attention_gqa_rope_qk_norm():
    block = TransformerBlock(
        D,
        N,
        F,
        num_kv_heads=2,
        cross_attention=True,
        context_features=8,
        attention={"positional": "rope", "qk_norm": True},
        norm="rms_norm",
        activation="silu",
        rngs=nnx.Rngs(0),
    )
    context = inputs(t=S, features=8, seed=1)
    mask = masks.padding(kv_lengths=np.array([5, 2]))
    out = block(inputs(), context=context, context_mask=mask)
    assert out.shape == (B, T, D)
    # The context matters, and only its unmasked part does.
    other = context.at[1, 2:].set(9.0)
    np.testing.assert_allclose(block(inputs(), context=other, context_mask=mask), out, rtol=1e-6)
    assert not np.allclose(block(inputs(), context=context * 2.0, context_mask=mask), out)


def test_gradients_finite_with_fully_masked_rows():
    block = TransformerBlock(D, N, F, cross_attention=True, rngs=nnx.Rngs(0))
    lengths = jnp.array([4, 0])  # example 1 is all padding: every query row fully masked
    x, context = inputs(), inputs(t=S, seed=1)

    def loss(block, x):
        out = block(
            x,
            mask=masks.padding(lengths, lengths),
            context=context,
            context_mask=masks.padding(kv_lengths=lengths),
        )
        return jnp.sum(out**2)

    grads, x_grad = nnx.jit(nnx.grad(loss, argnums=(0, 1)))(block, x)
    leaves = [*jax.tree.leaves(grads), x_grad]
    assert all(bool(jnp.isfinite(g).all()) for g in leaves)
    assert any(bool(jnp.abs(g).sum() > 0) for g in jax.tree.leaves(grads))
    assert np.isfinite(nnx.jit(loss)(block, x))


def test_block_dropout_only_when_not_deterministic():
    block = TransformerBlock(
        D, N, F, dropout_rate=0.3, attention={"dropout_rate": 0.3}, rngs=nnx.Rngs(0)
    )
    plain = TransformerBlock(D, N, F, rngs=nnx.Rngs(0))
    nnx.update(plain, nnx.state(block, nnx.Param))
    x = inputs()
    want = plain(x)
    np.testing.assert_allclose(block(x, deterministic=True), want, rtol=1e-6)
    assert not np.allclose(block(x), want, atol=1e-3)
    block.eval()  # sets deterministic=True on every submodule
    np.testing.assert_allclose(block(x), want, rtol=1e-6)
    block.train()
    assert not np.allclose(block(x), want, atol=1e-3)


@pytest.mark.parametrize("pre_norm", [True, False])
def test_encoder(pre_norm):
    encoder = TransformerEncoder(
        2, D, N, F, pre_norm=pre_norm, norm="rms_norm", num_kv_heads=2, rngs=nnx.Rngs(0)
    )
    assert len(encoder.layers) == 2
    assert (encoder.final_norm is not None) == pre_norm
    x = inputs()
    lengths = jnp.array([7, 3])
    out = encoder(x, mask=masks.padding(lengths, lengths))
    assert out.shape == (B, T, D)
    # Bidirectional: the first position sees the last (of example 0), unlike a decoder.
    changed = encoder(x.at[:, -1].add(1.0), mask=masks.padding(lengths, lengths))
    assert not np.allclose(changed[0, 0], out[0, 0], atol=1e-5)
    np.testing.assert_allclose(changed[1, :3], out[1, :3], rtol=1e-5, atol=1e-5)


def decoder(**options):
    return TransformerDecoder(
        2,
        D,
        N,
        F,
        num_kv_heads=2,
        cross_attention=True,
        context_features=8,
        rngs=nnx.Rngs(0),
        **{"attention": {"positional": "rope"}, **options},
    )


def test_decoder_decode_matches_full_forward():
    model = decoder(pre_norm=False, norm="rms_norm")  # the ragged test below covers pre-norm
    x, context = inputs(), inputs(t=S, features=8, seed=1)
    full = model(x, context=context)
    # Causal: changing the last token changes nothing before it.
    np.testing.assert_allclose(
        model(x.at[:, -1].add(1.0), context=context)[:, :-1],
        full[:, :-1],
        rtol=1e-5,
        atol=1e-5,
    )
    model.init_cache(B, T)
    steps = [model(x[:, :3], context=context, decode=True)]
    steps += [model(x[:, t : t + 1], context=context, decode=True) for t in range(3, T)]
    np.testing.assert_allclose(jnp.concatenate(steps, axis=1), full, rtol=1e-5, atol=1e-5)


def test_decoder_ragged_prefill_under_jit():
    model = decoder()
    x, context = inputs(), inputs(t=S, features=8, seed=1)
    full = model(x, context=context)
    lengths = jnp.array([1, 3])
    model.init_cache(B, T)

    @nnx.jit
    def step(model, tokens, prompt_lengths=None):
        return model(tokens, context=context, decode=True, prompt_lengths=prompt_lengths)

    prefill = step(model, x[:, :3], lengths)
    np.testing.assert_allclose(prefill[0, :1], full[0, :1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(prefill[1], full[1, :3], rtol=1e-5, atol=1e-5)
    for k in range(2):
        position = lengths + k
        out = step(model, x[jnp.arange(B), position][:, None])
        np.testing.assert_allclose(out[:, 0], full[jnp.arange(B), position], rtol=1e-5, atol=1e-5)
    for layer in model.layers:
        np.testing.assert_array_equal(layer.self_attention.cache_index[...], lengths + 2)


def test_decoder_records_weights_of_every_layer():
    model = decoder(record_weights=True)
    x, context = inputs(), inputs(t=S, features=8, seed=1)
    _, captured = nnx.capture(model, nnx.Intermediate)(x, context=context)
    for i in range(2):
        (self_weights,) = captured["layers"][i]["self_attention"]["attention_weights"].get_value()
        (cross_weights,) = captured["layers"][i]["cross_attention"]["attention_weights"].get_value()
        assert self_weights.shape == (B, N, T, T) and cross_weights.shape == (B, N, T, S)
        np.testing.assert_array_equal(np.triu(np.asarray(self_weights), k=1), 0.0)
        np.testing.assert_allclose(self_weights.sum(-1), 1.0, rtol=1e-5)


def test_errors():
    with pytest.raises(ValueError, match="unknown norm 'batch_norm'"):
        TransformerBlock(D, N, F, norm="batch_norm", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="unknown activation"):
        TransformerBlock(D, N, F, activation="swish2", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="use TransformerDecoder"):
        TransformerEncoder(1, D, N, F, causal=True, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="num_layers"):
        TransformerEncoder(0, D, N, F, rngs=nnx.Rngs(0))
    block = TransformerBlock(D, N, F, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="context must be given exactly"):
        block(inputs(), context=inputs())
    with pytest.raises(ValueError, match="context must be given exactly"):
        decoder()(inputs())
    with pytest.raises(ValueError, match="init_cache"):
        decoder()(inputs(), context=inputs(features=8), decode=True)
