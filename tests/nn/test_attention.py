"""attn.nn.MultiHeadAttention: shapes, a hand-written reference, KV-cache decoding, sown weights,
dropout and input errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import attn
from attn import masks
from attn.nn import MultiHeadAttention

B, T, S, D, N = 2, 7, 5, 16, 4


def randomize(module, seed=1):
    """Replace every parameter by N(0, 0.5^2) noise, so zero biases and unit norm scales cannot
    hide a missing or misplaced term."""
    state = nnx.state(module, nnx.Param)
    leaves, treedef = jax.tree.flatten(state)
    rngs = jax.random.split(jax.random.key(seed), len(leaves))
    leaves = [
        0.5 * jax.random.normal(r, x.shape, x.dtype) for r, x in zip(rngs, leaves, strict=True)
    ]
    nnx.update(module, jax.tree.unflatten(treedef, leaves))
    return module


def inputs(t=T, features=D, seed=0, batch=B):
    return jax.random.normal(jax.random.key(seed), (batch, t, features))


def rms_norm(x, scale, eps=1e-6):
    return x / jnp.sqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps) * scale


@functools.partial(nnx.jit, static_argnames="is_causal")
def reference(mha, x, context=None, *, positions=None, is_causal=False):
    """The same layer written out with jax.nn.dot_product_attention on its own parameters."""
    context = x if context is None else context
    H, K = mha.head_dim, mha.num_kv_heads

    def project(linear, y, heads):
        out = y @ linear.kernel[...]
        if linear.bias is not None:
            out = out + linear.bias[...]
        return out.reshape(*y.shape[:2], heads, H)

    q, k, v = project(mha.query, x, N), project(mha.key, context, K), project(mha.value, context, K)
    if mha.query_norm is not None:
        q = rms_norm(q, mha.query_norm.scale[...])
        k = rms_norm(k, mha.key_norm.scale[...])
    if mha.positional == "rope":
        positions = jnp.arange(x.shape[1]) if positions is None else positions
        q = attn.positional.rope(q, positions)
        k = attn.positional.rope(k, positions)
    out = jax.nn.dot_product_attention(q, k, v, is_causal=is_causal, implementation="xla")
    out = out.reshape(*x.shape[:2], N * H) @ mha.out.kernel[...]
    if mha.out.bias is not None:
        out = out + mha.out.bias[...]
    return out


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("num_kv_heads", [N, 2, 1], ids=["mha", "gqa", "mqa"])
def test_self_attention_shapes(num_kv_heads):
    mha = MultiHeadAttention(D, N, num_kv_heads=num_kv_heads, rngs=nnx.Rngs(0))
    assert mha(inputs()).shape == (B, T, D)
    assert mha.query.kernel.shape == (D, N * (D // N))
    assert mha.key.kernel.shape == (D, num_kv_heads * (D // N))
    assert mha.value.kernel.shape == (D, num_kv_heads * (D // N))


def test_cross_attention_shapes():
    mha = MultiHeadAttention(
        D, N, num_kv_heads=1, head_dim=3, kv_features=8, out_features=5, rngs=nnx.Rngs(0)
    )
    out = mha(inputs(), inputs(t=S, features=8, seed=1))
    assert out.shape == (B, T, 5)
    assert mha.key.kernel.shape == (8, 3)
    assert mha.query.kernel.shape == (D, N * 3)


# --------------------------------------------------------------------------- hand-written reference


@pytest.mark.parametrize(
    ("num_kv_heads", "use_rope", "qk_norm", "use_bias"),
    [
        (N, False, False, True),
        (2, True, False, False),
        (1, False, True, True),
        (2, True, True, False),
    ],
)
def test_matches_hand_written_composition(num_kv_heads, use_rope, qk_norm, use_bias):
    mha = randomize(
        MultiHeadAttention(
            D,
            N,
            num_kv_heads=num_kv_heads,
            use_bias=use_bias,
            positional="rope" if use_rope else "none",
            qk_norm=qk_norm,
            rngs=nnx.Rngs(0),
        )
    )
    x = inputs()
    np.testing.assert_allclose(mha(x), reference(mha, x), rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(
        mha(x, mask=masks.causal()), reference(mha, x, is_causal=True), rtol=2e-5, atol=2e-5
    )


def test_cross_attention_matches_hand_written_composition():
    mha = randomize(
        MultiHeadAttention(D, N, num_kv_heads=2, kv_features=8, use_bias=True, rngs=nnx.Rngs(0))
    )
    x, context = inputs(), inputs(t=S, features=8, seed=1)
    np.testing.assert_allclose(mha(x, context), reference(mha, x, context), rtol=2e-5, atol=2e-5)


def test_rope_uses_given_positions():
    mha = randomize(MultiHeadAttention(D, N, positional="rope", rngs=nnx.Rngs(0)))
    x = inputs()
    positions = jnp.array([[3, 1, 4, 1, 5, 9, 2], [6, 5, 3, 5, 8, 9, 7]])
    got = mha(x, positions=positions)
    np.testing.assert_allclose(got, reference(mha, x, positions=positions), rtol=2e-5, atol=2e-5)
    # Shifting every position by the same amount leaves the logits, hence the output, unchanged.
    np.testing.assert_allclose(mha(x, positions=positions + 11), got, rtol=1e-4, atol=1e-4)
    assert not np.allclose(mha(x), got, atol=1e-3)


def test_score_and_weighting_by_catalog_name():
    mha = MultiHeadAttention(
        D, N, score="cosine(temperature=0.5)", weighting="sparsemax", rngs=nnx.Rngs(0)
    )
    x = inputs()
    out = mha(x)
    mha_default = MultiHeadAttention(D, N, rngs=nnx.Rngs(0))
    assert out.shape == (B, T, D)
    assert not np.allclose(out, mha_default(x), atol=1e-4)


# --------------------------------------------------------------------------- KV-cache decoding


DECODE_CASES = [(N, False), (2, True), (1, True)]


def decode_model(num_kv_heads, use_rope):
    return randomize(
        MultiHeadAttention(
            D,
            N,
            num_kv_heads=num_kv_heads,
            positional="rope" if use_rope else "none",
            use_bias=True,
            rngs=nnx.Rngs(0),
        )
    )


@pytest.mark.parametrize(("num_kv_heads", "use_rope"), DECODE_CASES)
def test_decode_prompt_then_tokens_matches_causal_forward(num_kv_heads, use_rope):
    mha = decode_model(num_kv_heads, use_rope)
    x = inputs()
    full = mha(x, mask=masks.causal())
    mha.init_cache(B, max_length=T + 2)
    steps = [mha(x[:, :3], decode=True)]
    steps += [mha(x[:, t : t + 1], decode=True) for t in range(3, T)]
    np.testing.assert_allclose(jnp.concatenate(steps, axis=1), full, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(mha.cache_index[...], [T, T])


@pytest.mark.parametrize(("num_kv_heads", "use_rope"), DECODE_CASES)
def test_decode_ragged_prompts_match_causal_forward(num_kv_heads, use_rope):
    mha = decode_model(num_kv_heads, use_rope)
    x = inputs()
    full = mha(x, mask=masks.causal())
    lengths = np.array([3, 1])
    # Padding that differs from x shows that the padded slots never leak into later tokens.
    prompt = jnp.where(jnp.arange(3)[None, :, None] < lengths[:, None, None], x[:, :3], 7.0)
    mha.init_cache(B, max_length=T)
    prefill = mha(prompt, decode=True, prompt_lengths=jnp.asarray(lengths))
    np.testing.assert_allclose(prefill[0], full[0, :3], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(prefill[1, :1], full[1, :1], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(mha.cache_index[...], lengths)
    for step in range(3):
        position = lengths + step
        token = x[jnp.arange(B), position][:, None]
        out = mha(token, decode=True)
        np.testing.assert_allclose(
            out[:, 0], full[jnp.arange(B), position], rtol=1e-5, atol=1e-5, err_msg=f"step {step}"
        )
    np.testing.assert_array_equal(mha.cache_index[...], lengths + 3)


def test_decode_under_jit_with_user_mask():
    """Traced cache_index; a user Mask (at absolute positions) is combined with the cache's
    causal mask, so a sliding window means the same in decoding as in the full forward."""
    mha = decode_model(2, True)
    x = inputs()
    user_mask = masks.sliding_window(2) & masks.padding(kv_lengths=np.array([7, 2]))
    full = mha(x, mask=masks.causal() & user_mask)
    mha.init_cache(B, max_length=T)

    @nnx.jit
    def step(mha, chunk):
        return mha(chunk, mask=user_mask, decode=True)

    outs = [step(mha, x[:, :3])] + [step(mha, x[:, t : t + 1]) for t in range(3, T)]
    np.testing.assert_allclose(jnp.concatenate(outs, axis=1), full, rtol=1e-5, atol=1e-5)


def test_decode_attends_to_all_earlier_slots():
    """Each decoded token depends on every earlier token (not only on key 0, flax#5591)."""
    mha = decode_model(N, True)
    x = inputs()

    def last_output(x):
        mha.init_cache(B, max_length=T)
        mha(x[:, :-1], decode=True)  # eagerly: the concrete-value checks run too
        return mha(x[:, -1:], decode=True)

    base = last_output(x)
    for t in range(T - 1):
        changed = last_output(x.at[:, t].add(1.0))
        assert not np.allclose(changed, base, atol=1e-4), f"token {t} is ignored"


# --------------------------------------------------------------------------- recorded weights


def test_record_weights_sums_to_one_over_visible_keys():
    mha = MultiHeadAttention(D, N, num_kv_heads=2, record_weights=True, rngs=nnx.Rngs(0))
    x = inputs()
    lengths = np.array([5, 0])  # example 1 sees nothing
    mask = masks.causal() & masks.padding(kv_lengths=lengths)
    out, captured = nnx.capture(mha, nnx.Intermediate)(x, mask=mask)
    (weights,) = captured["attention_weights"].get_value()
    assert weights.shape == (B, N, T, T)
    visible = np.broadcast_to(mask.dense((B, N, T, T)), weights.shape)
    np.testing.assert_array_equal(np.asarray(weights)[~visible], 0.0)
    np.testing.assert_allclose(weights[0].sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(weights[1], 0.0)
    np.testing.assert_allclose(out, nnx.view(mha, record_weights=False)(x, mask=mask), rtol=1e-6)


def test_a_tiled_implementation_records_the_dense_weights():
    """Attention maps of a chunked model: the weights the chunked kernel never builds, from the
    same attention computed densely (plots of a chunked run used to fail)."""
    x = inputs()
    recorded = {}
    for implementation in ("dense", "chunked"):
        mha = MultiHeadAttention(
            D, N, implementation=implementation, record_weights=True, rngs=nnx.Rngs(0)
        )
        out, captured = nnx.capture(mha, nnx.Intermediate)(x, mask=masks.causal())
        (recorded[implementation],) = captured["attention_weights"].get_value()
        np.testing.assert_allclose(
            out, nnx.view(mha, record_weights=False)(x, mask=masks.causal()), rtol=1e-5, atol=1e-6
        )
    np.testing.assert_allclose(recorded["chunked"], recorded["dense"], rtol=1e-6)


def test_nothing_sown_when_record_weights_is_off():
    mha = MultiHeadAttention(D, N, rngs=nnx.Rngs(0))
    _, captured = nnx.capture(mha, nnx.Intermediate)(inputs())
    assert jax.tree.leaves(captured) == []
    assert jax.tree.leaves(nnx.state(mha, nnx.Intermediate)) == []


# --------------------------------------------------------------------------- dropout


def test_dropout_only_when_not_deterministic():
    x = inputs()
    mha = MultiHeadAttention(D, N, dropout_rate=0.5, rngs=nnx.Rngs(0))
    plain = MultiHeadAttention(D, N, rngs=nnx.Rngs(0))
    nnx.update(plain, nnx.state(mha, nnx.Param))
    want = plain(x)
    np.testing.assert_allclose(mha(x, deterministic=True), want, rtol=1e-6)
    first, second = mha(x), mha(x)  # deterministic=False by default, like nnx.Dropout
    assert not np.allclose(first, want, atol=1e-3)
    assert not np.allclose(first, second, atol=1e-3), "each call must draw a new dropout mask"
    np.testing.assert_allclose(nnx.view(mha, deterministic=True)(x), want, rtol=1e-6)
    mha.eval()
    np.testing.assert_allclose(mha(x), want, rtol=1e-6)
    assert not np.allclose(mha(x, deterministic=False), want, atol=1e-3)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_kv_heads": 3}, "multiple of num_kv_heads"),
        ({"num_kv_heads": 0}, "num_kv_heads must be a positive int"),
        ({"dropout_rate": 1.0}, "dropout_rate"),
        ({"score": "no_such_score"}, "unknown score"),
        ({"weighting": "no_such_weighting"}, "unknown weighting"),
        ({"positional": "rope", "rotary_dim": 8}, "rotary_dim"),
    ],
)
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MultiHeadAttention(D, N, rngs=nnx.Rngs(0), **kwargs)


def test_head_dim_must_divide_or_be_given():
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        MultiHeadAttention(10, N, rngs=nnx.Rngs(0))
    assert MultiHeadAttention(10, N, head_dim=3, rngs=nnx.Rngs(0)).query.kernel.shape == (10, 12)


def test_call_errors():
    mha = MultiHeadAttention(D, N, kv_features=8, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="kv_features=8 differs from in_features=16"):
        mha(jnp.ones((B, D)))
    with pytest.raises(ValueError, match=r"inputs_q must be \[B, length, 16\]"):
        mha(jnp.ones((D,)))
    with pytest.raises(ValueError, match=r"inputs_q must be \[B, length, 16\]"):
        mha(jnp.ones((B, T, 5)))
    with pytest.raises(ValueError, match=r"inputs_k must be \[B, length, 8\]"):
        mha(inputs(), inputs())
    with pytest.raises(ValueError, match=r"inputs_k has batch axes \(3,\), expected \(2,\)"):
        mha(inputs(), jnp.ones((3, 4, 8)))
    with pytest.raises(ValueError, match="prompt_lengths applies only with decode=True"):
        mha(inputs(), inputs(features=8), prompt_lengths=jnp.array([1, 1]))
    with pytest.raises(ValueError, match="decode: inputs_k must have the T_new=7 tokens"):
        mha.init_cache(B, T)
        mha(inputs(), inputs(t=S, features=8), decode=True)


def test_decode_errors():
    mha = MultiHeadAttention(D, N, rngs=nnx.Rngs(0))
    x = inputs()
    with pytest.raises(ValueError, match="call init_cache"):
        mha(x[:, :1], decode=True)
    mha.init_cache(B, max_length=4)
    with pytest.raises(ValueError, match="overflow"):
        mha(x[:, :5], decode=True)
    mha(x[:, :3], decode=True)
    with pytest.raises(ValueError, match="overflow"):
        mha(x[:, :2], decode=True)
    mha(x[:, :1], decode=True)  # fills the last slot
    with pytest.raises(ValueError, match="overflow"):
        mha(x[:, :1], decode=True)
    mha.init_cache(3, max_length=4)
    with pytest.raises(ValueError, match="made for 3"):
        mha(x[:, :1], decode=True)
    mha.init_cache(B, max_length=4)
    with pytest.raises(ValueError, match=r"prompt_lengths must be in \[0, T_new=2\]"):
        mha(x[:, :2], decode=True, prompt_lengths=jnp.array([3, 1]))
    with pytest.raises(ValueError, match="prompt_lengths must be an int array"):
        mha(x[:, :2], decode=True, prompt_lengths=jnp.array([1.0, 1.0]))


# --------------------------------------------------------------------------- attention variants


@pytest.mark.parametrize("variant", ["linear(feature_map='relu')", "performer(num_features=32)"])
def test_variant_decode_matches_causal_forward(variant):
    """The variant replaces attend; cached decoding (quadratic path over the cache slots) equals
    the full causal forward (prefix-sum path)."""
    mha = randomize(
        MultiHeadAttention(
            D, N, num_kv_heads=2, positional="rope", variant=variant, rngs=nnx.Rngs(0)
        )
    )
    x = inputs()
    full = mha(x, mask=masks.causal())
    plain = randomize(MultiHeadAttention(D, N, num_kv_heads=2, positional="rope", rngs=nnx.Rngs(0)))
    assert not np.allclose(full, plain(x, mask=masks.causal()), atol=1e-3)
    mha.init_cache(B, max_length=T)
    steps = [mha(x[:, :2], decode=True)] + [mha(x[:, t : t + 1], decode=True) for t in range(2, T)]
    np.testing.assert_allclose(jnp.concatenate(steps, axis=1), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"score": "cosine"}, "replaces score"),
        ({"weighting": "sparsemax"}, "replaces weighting"),
        ({"dropout_rate": 0.1}, "no attention dropout"),
        ({"record_weights": True}, "no recorded weights"),
        ({"positional": "alibi"}, "no position bias"),
    ],
)
def test_variant_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MultiHeadAttention(D, N, variant="linear", rngs=nnx.Rngs(0), **kwargs)


def test_variant_rejects_bias():
    mha = MultiHeadAttention(D, N, variant="linear", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="bias= cannot be combined with variant"):
        mha(inputs(), bias=jnp.zeros((1, N, T, T)))


def test_linformer_projection_is_a_learned_parameter():
    mha = MultiHeadAttention(
        D, N, variant="linformer(projected_length=3, max_length=8)", rngs=nnx.Rngs(0)
    )
    assert mha.variant_projection[...].shape == (3, 8)
    graphdef, params, rest = nnx.split(mha, nnx.Param, ...)
    x = inputs()

    def loss(params):
        return jnp.sum(nnx.merge(graphdef, params, rest)(x) ** 2)

    grads = jax.grad(loss)(params)
    assert float(jnp.abs(grads["variant_projection"][...]).max()) > 0


def test_decode_overflow_under_jit_is_an_error_not_a_silent_drop():
    """Under nnx.jit the cache index is traced: a step past the end must still fail (with the
    eager message, raised from the device), and steps that fit must not."""
    mha = MultiHeadAttention(D, N, rngs=nnx.Rngs(0))
    mha.init_cache(B, max_length=4)
    step = nnx.jit(lambda mha, x: mha(x, decode=True))
    x = inputs()
    for t in range(4):
        step(mha, x[:, t : t + 1])
    with pytest.raises(Exception, match="KV cache overflow: the cache holds max_length=4"):
        jax.block_until_ready(step(mha, x[:, 4:5]))


# --------------------------------------------------------------------------- position schemes


@pytest.mark.parametrize("positional", ["alibi", "t5"])
@pytest.mark.parametrize("implementation", ["dense", "chunked"])
def test_bias_schemes_are_rules_that_every_implementation_runs(positional, implementation):
    """ALiBi and T5 enter attend as bias rules: the chunked kernel runs them (no dense
    fallback), equal to the dense bias arrays of attn.positional."""
    mha = randomize(
        MultiHeadAttention(
            D, N, positional=positional, implementation=implementation, rngs=nnx.Rngs(0)
        )
    )
    plain = MultiHeadAttention(D, N, implementation="dense", rngs=nnx.Rngs(0))
    # The projections only: plain has no T5 table.
    nnx.update(plain, nnx.state(mha, nnx.All(nnx.Param, nnx.Not(nnx.PathContains("t5_table")))))
    if positional == "alibi":
        bias = attn.positional.alibi_bias(N, T, T)
    else:
        bias = attn.positional.t5_relative_bias(mha.t5_table[...], T, T, max_distance=128)
    x = inputs()
    np.testing.assert_allclose(
        mha(x, mask=masks.causal()), plain(x, mask=masks.causal(), bias=bias), atol=1e-5
    )


@pytest.mark.parametrize("positional", ["alibi", "t5"])
def test_bias_schemes_decode_at_absolute_positions(positional):
    """While decoding, the bias rules see each query at its cache position (ragged prompts
    included): decoding equals the full causal forward."""
    mha = randomize(MultiHeadAttention(D, N, positional=positional, rngs=nnx.Rngs(0)))
    x = inputs()
    full = mha(x, mask=masks.causal())
    lengths = np.array([3, 1])
    mha.init_cache(B, max_length=T)
    prefill = mha(x[:, :3], decode=True, prompt_lengths=jnp.asarray(lengths))
    np.testing.assert_allclose(prefill[0], full[0, :3], rtol=1e-5, atol=1e-5)
    for step in range(3):
        position = lengths + step
        out = mha(x[jnp.arange(B), position][:, None], decode=True)
        np.testing.assert_allclose(out[:, 0], full[jnp.arange(B), position], atol=1e-5)


def test_module_mask_applies_to_every_call_and_while_decoding():
    """A mask given at construction is & the call's mask, and holds at absolute positions
    while decoding."""
    window = "sliding_window(left=2)"
    mha = randomize(MultiHeadAttention(D, N, mask=window, rngs=nnx.Rngs(0)))
    plain = MultiHeadAttention(D, N, rngs=nnx.Rngs(0))
    nnx.update(plain, nnx.state(mha, nnx.Param))
    x = inputs()
    full = mha(x, mask=masks.causal())
    np.testing.assert_allclose(full, plain(x, mask=masks.sliding_window(2)), atol=1e-6)
    assert not np.allclose(full, plain(x, mask=masks.causal()), atol=1e-4)
    mha.init_cache(B, max_length=T)
    steps = [mha(x[:, t : t + 1], decode=True) for t in range(T)]
    np.testing.assert_allclose(jnp.concatenate(steps, axis=1), full, atol=1e-5)


def test_deprecated_spellings_still_work():
    with pytest.warns(DeprecationWarning, match="positional='rope'"):
        old = MultiHeadAttention(D, N, use_rope=True, rngs=nnx.Rngs(0))
    with pytest.warns(DeprecationWarning, match="variant"):
        old_variant = MultiHeadAttention(D, N, attention="linear", rngs=nnx.Rngs(0))
    assert old.positional == "rope" and old_variant.variant is not None
    new = MultiHeadAttention(D, N, positional="rope", rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(old(inputs()), new(inputs()))


def test_positional_errors():
    with pytest.raises(ValueError, match="positional='alibo' is not one of"):
        MultiHeadAttention(D, N, positional="alibo", rngs=nnx.Rngs(0))
    mha = MultiHeadAttention(D, N, positional="alibi", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="adds its own bias rule"):
        mha(inputs(), bias=jnp.zeros((1, N, T, T)))
