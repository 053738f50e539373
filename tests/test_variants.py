"""Linear attention, Performer (FAVOR+) and Linformer against explicit quadratic forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import attn
from attn import masks
from attn.variants import (
    kernel_attention,
    linear_attention,
    linformer_project,
    performer_attention,
    positive_features,
    random_features,
)

B, T, N, K, H = 2, 10, 4, 2, 8


def make_qkv(scale=1.0, seed=0, length=T):
    generator = np.random.default_rng(seed)
    q = generator.standard_normal((B, length, N, H)).astype(np.float32) * scale
    k = generator.standard_normal((B, length, K, H)).astype(np.float32) * scale
    v = generator.standard_normal((B, length, K, H)).astype(np.float32)
    return q, k, v


def quadratic(phi_q, phi_k, v, causal):
    """Explicit ``[T, S]`` weights ``phi_q . phi_k``, normalised per row."""
    phi_k, v = np.repeat(phi_k, N // K, axis=2), np.repeat(v, N // K, axis=2)
    weights = np.einsum("btnf,bsnf->bnts", phi_q, phi_k).astype(np.float64)
    if causal:
        weights = np.tril(weights)
    with np.errstate(invalid="ignore"):  # all-zero rows: NaN here, 0 in the kernel
        weights = weights / weights.sum(-1, keepdims=True)
    return np.einsum("bnts,bsnh->btnh", weights, v)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("feature_map", ["elu", "relu"])
def test_linear_attention_equals_its_quadratic_form(feature_map, causal):
    q, k, v = make_qkv()
    phi = {"elu": lambda x: jax.nn.elu(x) + 1, "relu": jax.nn.relu}[feature_map]
    # Chunks of 4 over 10 positions: full chunks, a short last one, state carried across.
    got = linear_attention(q, k, v, feature_map=feature_map, causal=causal, chunk=4)
    want = quadratic(np.asarray(phi(q)), np.asarray(phi(k)), v, causal)
    if feature_map == "relu":  # rows whose features are all zero output 0
        want = np.nan_to_num(want)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_causal_chunking_does_not_change_values_or_gradients(quick_jit):
    def value_and_grads(chunk):
        def loss(q, k, v):
            return jnp.sum(linear_attention(q, k, v, causal=True, chunk=chunk) ** 2)

        return quick_jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(*make_qkv())

    small, whole = value_and_grads(3), value_and_grads(T)
    for a, b in zip(jax.tree.leaves(small), jax.tree.leaves(whole), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_random_features_are_orthogonal_gaussian_rows():
    projection = np.asarray(random_features(jax.random.key(0), 2 * H + 3, H))
    assert projection.shape == (2 * H + 3, H)
    directions = projection[:H] / np.linalg.norm(projection[:H], axis=1, keepdims=True)
    np.testing.assert_allclose(directions @ directions.T, np.eye(H), atol=1e-5)
    redrawn = np.asarray(random_features(jax.random.key(1), 2 * H + 3, H))
    assert not np.allclose(projection, redrawn)


@pytest.mark.parametrize("causal", [False, True])
def test_performer_approximates_softmax_attention(causal, quick_jit):
    """With many features the estimate is close; the error falls as features grow."""
    mask = attn.masks.causal() if causal else None

    def errors(q, k, v):
        exact = attn.attend(q, k, v, mask=mask, implementation="dense")
        return [
            jnp.abs(
                performer_attention(
                    q, k, v, random_features(jax.random.key(2), num_features, H), causal=causal
                )
                - exact
            ).mean()
            for num_features in (16, 2048)
        ]

    few, many = quick_jit(errors)(*make_qkv(scale=0.5))
    assert many < 0.03 and many < few / 3, (few, many)


def test_performer_is_linear_attention_on_its_features():
    q, k, v = make_qkv()
    projection = random_features(jax.random.key(3), 32, H)
    phi_q = positive_features(q, projection, is_query=True)
    phi_k = positive_features(k, projection, is_query=False)
    got = performer_attention(q, k, v, projection, causal=True, chunk=4)
    want = quadratic(np.asarray(phi_q), np.asarray(phi_k), v, causal=True)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        got, kernel_attention(phi_q, phi_k, v, causal=True), rtol=1e-5, atol=1e-6
    )


def test_linformer_with_identity_projection_is_full_attention():
    q, k, v = make_qkv()
    identity = np.eye(T, dtype=np.float32)
    got = attn.attend(q, *linformer_project(k, v, identity), implementation="dense")
    want = attn.attend(q, k, v, implementation="dense")
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    e = np.random.default_rng(4).standard_normal((3, T)).astype(np.float32)
    k_proj, v_proj = linformer_project(k, v, e, 2 * e)
    assert k_proj.shape == (B, 3, K, H) and v_proj.shape == (B, 3, K, H)
    np.testing.assert_allclose(v_proj, 2 * np.einsum("rs,bskh->brkh", e, v), rtol=1e-5)


def test_variants_reject_bad_arguments():
    q, k, v = make_qkv()
    with pytest.raises(ValueError, match="feature_map must be one of"):
        linear_attention(q, k, v, feature_map="tanh")
    with pytest.raises(ValueError, match="needs T == S"):
        linear_attention(q[:, :3], k, v, causal=True)
    with pytest.raises(ValueError, match="projection must be"):
        performer_attention(q, k, v, jnp.zeros((8, H + 1)))
    with pytest.raises(ValueError, match=r"e must be \[R, S\]"):
        linformer_project(k, v, jnp.zeros((3, T + 1)))


# --------------------------------------------------------------------------- catalog "attention"


def masked_quadratic(phi_q, phi_k, v, visible_bnts):
    """``quadratic`` with an arbitrary boolean mask ``[B, N|1, T, S]``."""
    phi_k, v = np.repeat(phi_k, N // K, axis=2), np.repeat(v, N // K, axis=2)
    weights = np.einsum("btnf,bsnf->bnts", phi_q, phi_k).astype(np.float64) * visible_bnts
    total = weights.sum(-1, keepdims=True)
    weights = weights / np.where(total > 0, total, 1.0)
    return np.einsum("bnts,bsnh->btnh", weights, v)


FACTORED_MASKS = {
    "causal": lambda: masks.causal(),
    "padding": lambda: masks.padding(np.array([T, 6]), np.array([4, T])),
    "causal_and_padding": lambda: masks.causal() & masks.padding(kv_lengths=np.array([T, 3])),
    "key_array": lambda: np.arange(T)[None, None, None, :] < np.array([7, 2])[:, None, None, None],
}
OTHER_MASKS = {
    "sliding_window": lambda: masks.sliding_window(3),
    "causal_offset": lambda: masks.causal(offset=2),
    "example_causal": lambda: masks.causal(offset=np.array([0, 3])),
    "segments": lambda: masks.segments(np.array([[0] * 4 + [1] * 6, [0] * 10])),
}


@pytest.mark.parametrize("name", [*FACTORED_MASKS, *OTHER_MASKS])
@pytest.mark.parametrize("variant", ["linear", "performer"])
def test_attention_variants_apply_masks_exactly(variant, name):
    """Factored masks (linear cost) and other masks (exact quadratic form) against NumPy."""
    make_mask = (FACTORED_MASKS | OTHER_MASKS)[name]
    q, k, v = make_qkv(seed=3)
    fn = attn.catalog.get("attention", f"{variant}(chunk=4)")
    out = jax.jit(lambda q, k, v: fn(q, k, v, mask=make_mask()))(q, k, v)
    if variant == "linear":
        phi_q, phi_k = jax.nn.elu(q) + 1, jax.nn.elu(k) + 1
    else:  # performer with its default seed
        projection = random_features(jax.random.key(0), 256, H)
        phi_q = positive_features(q, projection, is_query=True)
        phi_k = positive_features(k, projection, is_query=False)
    visible = np.asarray(masks.as_mask(make_mask()).dense((B, N, T, T)))
    expected = masked_quadratic(np.asarray(phi_q), np.asarray(phi_k), v, visible)
    np.testing.assert_allclose(out, expected, rtol=2e-5, atol=2e-5)


def test_factored_and_quadratic_paths_agree_in_values_and_gradients():
    """The same causal & padding mask as a Mask (prefix sums) and as a full array (quadratic)."""
    q, k, v = make_qkv(seed=4)
    mask = masks.causal() & masks.padding(np.array([T, 7]), np.array([5, T]))
    dense = np.asarray(mask.dense((B, N, T, T)))
    fn = attn.catalog.get("attention", "linear(feature_map='relu', chunk=4)")

    def loss(q, k, v, mask):
        return jnp.sum(jnp.sin(fn(q, k, v, mask=mask)))

    fast, fast_grads = jax.value_and_grad(loss, argnums=(0, 1, 2))(q, k, v, mask)
    slow, slow_grads = jax.value_and_grad(loss, argnums=(0, 1, 2))(q, k, v, dense)
    np.testing.assert_allclose(fast, slow, rtol=1e-5)
    for a, b in zip(fast_grads, slow_grads, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_performer_features_follow_seed_and_rng():
    q, k, v = make_qkv(seed=5)
    performer = attn.catalog.get("attention", "performer(num_features=64)")
    same = performer(q, k, v)
    np.testing.assert_array_equal(performer(q, k, v), same)
    reseeded = attn.catalog.get("attention", "performer(num_features=64, seed=1)")
    assert not np.allclose(reseeded(q, k, v), same)
    assert not np.allclose(performer(q, k, v, rng=jax.random.key(7)), same)


def test_attention_catalog_names():
    assert attn.catalog.names("attention") == ["linear", "linformer", "performer"]
    with pytest.raises(ValueError, match="valid attention names: linear, linformer, performer"):
        attn.catalog.get("attention", "favor")
    with pytest.raises(ValueError, match="feature_map must be one of"):
        attn.catalog.get("attention", "linear(feature_map='tanh')")


def linformer_inputs(seed=6):
    q, k, v = make_qkv(seed=seed)
    linformer = attn.catalog.get("attention", f"linformer(projected_length=4, max_length={T + 2})")
    projection = linformer.init_params(jax.random.key(seed))["projection"]
    return linformer, projection, q, k, v


def test_linformer_is_softmax_attention_over_projected_keys():
    linformer, projection, q, k, v = linformer_inputs()
    assert projection.shape == (4, T + 2)
    got = linformer(q, k, v, projection=projection)
    want = attn.attend(q, *linformer_project(k, v, projection[:, :T]), implementation="dense")
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    identity = np.eye(T, T + 2, dtype=np.float32)
    full = attn.catalog.get("attention", f"linformer(projected_length={T}, max_length={T + 2})")
    np.testing.assert_allclose(
        full(q, k, v, projection=identity),
        attn.attend(q, k, v, implementation="dense"),
        rtol=1e-5,
        atol=1e-6,
    )


def test_linformer_padding_ignores_padded_keys_and_zeroes_padded_queries():
    linformer, projection, q, k, v = linformer_inputs()
    mask = masks.padding(np.array([T, 6]), np.array([T, 7]))
    out = linformer(q, k, v, mask=mask, projection=projection)
    k2, v2 = k.copy(), v.copy()
    k2[1, 7:], v2[1, 7:] = 50.0, -50.0  # what sits in padded key slots must not matter
    np.testing.assert_allclose(
        linformer(q, k2, v2, mask=mask, projection=projection), out, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_array_equal(out[1, 6:], 0.0)
    np.testing.assert_allclose(out[0], linformer(q, k, v, projection=projection)[0], rtol=1e-6)


def test_linformer_rejects_masks_it_cannot_apply():
    linformer, projection, q, k, v = linformer_inputs()
    with pytest.raises(ValueError, match="applies only padding masks"):
        linformer(q, k, v, mask=masks.causal(), projection=projection)
    with pytest.raises(ValueError, match="applies only padding masks"):
        linformer(q, k, v, mask=masks.sliding_window(2), projection=projection)
    short = attn.catalog.get("attention", "linformer(projected_length=4, max_length=5)")
    with pytest.raises(ValueError, match="exceed its max_length=5"):
        short(q, k, v, projection=projection[:, :5])


def test_factored_masks_keep_linear_memory():
    """No ``[B, N, T, S]`` array for factored masks; other masks build one (quadratic form)."""
    length = 1024
    q = jnp.zeros((1, length, 2, 16))
    weights_bytes = 2 * length * length * 4
    fn = attn.catalog.get("attention", "linear")

    def temp_bytes(mask):
        compiled = jax.jit(lambda q: fn(q, q, q, mask=mask)).lower(q).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    factored = masks.causal() & masks.padding(kv_lengths=np.array([900]))
    assert temp_bytes(factored) < weights_bytes / 8
    assert temp_bytes(masks.sliding_window(64)) >= weights_bytes


@pytest.mark.parametrize("variant", ["linear", "performer", "linformer"])
def test_variants_ignore_non_finite_padded_keys_and_queries(variant):
    """NaN and inf at padded positions change nothing (selects, not products with 0)."""
    q, k, v = make_qkv(seed=6)
    q_lengths, kv_lengths = np.array([T, 7]), np.array([T, 6])
    mask = masks.padding(q_lengths, kv_lengths)
    hidden_q = np.arange(T)[None, :] >= q_lengths[:, None]
    hidden_kv = np.arange(T)[None, :] >= kv_lengths[:, None]
    fn = attn.catalog.get("attention", f"{variant}(chunk=4)" if variant != "linformer" else variant)
    params = fn.init_params(jax.random.key(0)) if variant == "linformer" else {}
    outputs = []
    for fill in (0.0, np.nan):
        q_in, k_in, v_in = q.copy(), k.copy(), v.copy()
        q_in[hidden_q], k_in[hidden_kv], v_in[hidden_kv] = fill, fill, -np.inf if fill else 0.0
        outputs.append(fn(q_in, k_in, v_in, mask=mask, **params))
    assert np.isfinite(outputs[1]).all()
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=1e-6, atol=1e-6)
