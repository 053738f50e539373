"""attn.nn.MultiHeadAttention against flax itself: nnx.MultiHeadAttention and linen's
MultiHeadDotProductAttention with the same weights (moved by attn.nn.convert, both ways) give
the same outputs, gradients, dropout and sown weights for flax's own arguments."""

import functools

import flax.linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attn.nn import MultiHeadAttention, convert

from .test_attention import randomize

B, T, S, D, N = 2, 6, 5, 16, 4
TOL = {"rtol": 2e-5, "atol": 2e-5}


def data(*shape, seed=0):
    return jax.random.normal(jax.random.key(seed), shape)


def pair(**kwargs):
    """flax's module and ours from the same keyword arguments, flax's weights copied into ours."""
    kwargs.setdefault("decode", False)  # flax insists on being told
    theirs = randomize(nnx.MultiHeadAttention(**kwargs, rngs=nnx.Rngs(0, dropout=1)))
    kwargs.setdefault("use_bias", True)  # flax's default; ours is False
    ours = MultiHeadAttention(**kwargs, rngs=nnx.Rngs(0, dropout=1))
    convert.load(ours, convert.from_flax(convert.params(theirs)))
    return theirs, ours


def outputs_and_grads(jit, module, args, kwargs):
    """Output and gradients with respect to the inputs and the parameters (as a pure dict),
    compiled by ``jit``."""

    graphdef, params, rest = nnx.split(module, nnx.Param, ...)

    def loss(params, *args):
        out = nnx.merge(graphdef, params, rest)(*args, **kwargs)
        return jnp.sum(jnp.sin(out)), out

    grad = jax.grad(loss, argnums=tuple(range(len(args) + 1)), has_aux=True)
    grads, out = jit(grad)(params, *args)
    return out, (nnx.to_pure_dict(grads[0]), *grads[1:])


CONSTRUCTOR_CASES = {
    "defaults": {},
    "no_bias": {"use_bias": False},
    "gqa": {"num_kv_heads": 2},
    "qkv_and_out_features": {"qkv_features": 8, "out_features": 5},
    "normalize_qk": {"normalize_qk": True, "num_kv_heads": 1},
    "precision": {"precision": "highest"},
}


@pytest.mark.parametrize("name", sorted(CONSTRUCTOR_CASES))
def test_self_attention_values_and_gradients(name, quick_jit):
    theirs, ours = pair(num_heads=N, in_features=D, **CONSTRUCTOR_CASES[name])
    x = data(B, T, D)
    got_out, got_grads = outputs_and_grads(quick_jit, ours, (x,), {})
    want_out, want_grads = outputs_and_grads(quick_jit, theirs, (x,), {})
    np.testing.assert_allclose(got_out, want_out, **TOL)
    np.testing.assert_allclose(got_grads[1], want_grads[1], **TOL)  # d inputs
    converted = convert.from_flax(want_grads[0])  # d params, in our layout
    for got, want in zip(jax.tree.leaves(got_grads[0]), jax.tree.leaves(converted), strict=True):
        np.testing.assert_allclose(got, want, **TOL)


def flax_mask(kv_length):
    """A float 0/1 mask as flax builds them: causal & key padding, [B, 1, T, S]."""
    padding = nnx.make_attention_mask(jnp.ones((B, T)), jnp.arange(kv_length)[None] < 4)
    causal = nnx.make_causal_mask(jnp.ones((B, T)))[..., :kv_length]
    return nnx.combine_masks(padding, causal)


CALL_CASES = {
    "separate_keys_and_values": ((data(B, T, D), data(B, S, 8, seed=1), data(B, S, 8, seed=2)), {}),
    "float_mask": ((data(B, T, 8, seed=3), data(B, S, 8, seed=1)), {"mask": flax_mask(S)}),
    "bool_mask": ((data(B, T, 8, seed=3),), {"mask": flax_mask(T).astype(bool)}),
    "is_causal": ((data(B, T, 8, seed=3),), {"is_causal": True}),
    "no_batch_axis": ((data(T, 8, seed=4),), {}),
    # flax needs the mask's batch axes whole (it flattens them without broadcasting).
    "two_batch_axes": (
        (data(3, B, T, 8, seed=5),),
        {"mask": jnp.broadcast_to(flax_mask(T), (3, B, 1, T, T))},
    ),
}


@pytest.mark.parametrize("name", sorted(CALL_CASES))
def test_call_arguments(name, quick_jit):
    args, kwargs = CALL_CASES[name]
    in_features = args[0].shape[-1]
    in_kv = args[1].shape[-1] if len(args) > 1 else in_features
    theirs, ours = pair(num_heads=N, in_features=in_features, in_kv_features=in_kv)
    got_out, got_grads = outputs_and_grads(quick_jit, ours, args, kwargs)
    want_out, want_grads = outputs_and_grads(quick_jit, theirs, args, kwargs)
    np.testing.assert_allclose(got_out, want_out, **TOL)
    for got, want in zip(got_grads[1:], want_grads[1:], strict=True):
        np.testing.assert_allclose(got, want, **TOL)


@pytest.mark.parametrize("broadcast_dropout", [True, False])
def test_dropout_draws_flax_masks(broadcast_dropout):
    """Same streams, same masks: from the module's own stream and from the call's ``rngs``."""
    theirs, ours = pair(
        num_heads=N, in_features=D, dropout_rate=0.5, broadcast_dropout=broadcast_dropout
    )
    x = data(B, T, D)
    for rngs in (lambda: None, lambda: nnx.Rngs(dropout=9)):
        np.testing.assert_allclose(
            ours(x, deterministic=False, rngs=rngs()),
            theirs(x, deterministic=False, rngs=rngs()),
            **TOL,
        )
    np.testing.assert_allclose(ours(x, deterministic=True), theirs(x, deterministic=True), **TOL)


def test_dropout_needs_rngs_and_deterministic_as_in_flax():
    x = data(B, T, D)
    stateless = MultiHeadAttention(D, N, dropout_rate=0.5, keep_rngs=False, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="no rngs"):
        stateless(x)
    assert stateless(x, rngs=jax.random.key(0)).shape == (B, T, D)
    undecided = MultiHeadAttention(D, N, dropout_rate=0.5, deterministic=None, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="no deterministic was given"):  # as flax
        undecided(x)
    assert MultiHeadAttention(D, N, deterministic=None, rngs=nnx.Rngs(0))(x).shape == x.shape
    np.testing.assert_array_equal(
        undecided(x, deterministic=True), nnx.view(undecided, deterministic=True)(x)
    )


def test_sown_weights_match():
    theirs, ours = pair(num_heads=N, in_features=D, num_kv_heads=2)
    x = data(B, T, D)
    captured = []
    for module in (theirs, ours):
        _, sown = nnx.capture(module, nnx.Intermediate)(x, sow_weights=True)
        (weights,) = sown["attention_weights"].get_value()
        captured.append(weights)
    assert captured[0].shape == (B, N, T, T)
    np.testing.assert_allclose(captured[1], captured[0], **TOL)


def test_our_weights_move_to_flax():
    """Ours -> flax nnx (a freshly initialised flax module takes them) gives equal outputs."""
    ours = randomize(MultiHeadAttention(D, N, num_kv_heads=2, use_bias=True, rngs=nnx.Rngs(2)))
    theirs = nnx.MultiHeadAttention(
        num_heads=N, in_features=D, num_kv_heads=2, decode=False, rngs=nnx.Rngs(3)
    )
    convert.load(theirs, convert.to_flax(convert.params(ours), num_heads=N))
    x = data(B, T, D)
    np.testing.assert_allclose(ours(x), theirs(x), **TOL)
    with pytest.raises(ValueError, match="no counterpart"):
        convert.to_flax(
            convert.params(MultiHeadAttention(D, N, qk_norm=True, rngs=nnx.Rngs(0))), num_heads=N
        )


@pytest.mark.parametrize("normalize_qk", [False, True])
@pytest.mark.parametrize("use_bias", [True, False])
def test_linen_parameters_both_ways(use_bias, normalize_qk):
    linen = flax.linen.MultiHeadDotProductAttention(
        num_heads=N, qkv_features=8, use_bias=use_bias, normalize_qk=normalize_qk
    )
    q, kv = data(B, T, D), data(B, S, D, seed=1)
    variables = linen.init(jax.random.key(0), q, kv)
    linen_params = jax.tree.map(lambda p: p + 0.3, variables["params"])  # not the init values
    ours = MultiHeadAttention(
        D, N, qkv_features=8, use_bias=use_bias, normalize_qk=normalize_qk, rngs=nnx.Rngs(0)
    )
    convert.load(ours, convert.from_flax(linen_params))
    want = linen.apply({"params": linen_params}, q, kv)
    np.testing.assert_allclose(ours(q, kv), want, **TOL)
    back = convert.to_flax(convert.params(ours), num_heads=N)
    np.testing.assert_allclose(linen.apply({"params": back}, q, kv), want, **TOL)


def test_flax_argument_names_and_errors():
    ours = MultiHeadAttention(
        in_features=D,
        num_heads=N,
        qkv_features=8,
        in_kv_features=6,
        kernel_init=nnx.initializers.zeros,
        out_bias_init=nnx.initializers.ones,
        use_bias=True,
        rngs=nnx.Rngs(0),
    )
    assert ours.head_dim == 2 and ours.key.kernel.shape == (6, 8)
    assert not np.asarray(ours.query.kernel[...]).any()
    np.testing.assert_array_equal(ours.out.bias[...], 1.0)
    np.testing.assert_array_equal(ours.query.bias[...], 0.0)
    make = functools.partial(MultiHeadAttention, D, N, rngs=nnx.Rngs(0))
    for kwargs, message in [
        ({"head_dim": 3, "qkv_features": 8}, "head_dim=3 and qkv_features // num_heads=2"),
        ({"kv_features": 4, "in_kv_features": 6}, "kv_features=4 and in_kv_features=6"),
        ({"qkv_features": 6}, "qkv_features=6 is not divisible"),
        ({"qk_norm": True, "normalize_qk": True}, "choose one"),
    ]:
        with pytest.raises(ValueError, match=message):
            make(**kwargs)
    with pytest.raises(ValueError, match=r"flax's order is \(num_heads, in_features\)"):
        MultiHeadAttention(N, D, rngs=nnx.Rngs(0))  # flax's positional order
    x = data(B, T, D)
    with pytest.raises(ValueError, match="inputs_v needs inputs_k"):
        make()(x, inputs_v=x)
    with pytest.raises(ValueError, match="not both"):
        make()(x, x, inputs_kv=x)
