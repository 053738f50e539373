"""Context-parallel (ring) attention: parity with dense on 4 and 8 fake CPU devices (each group
of cases in a process of its own, see ``ring_parity.py``), its block schedule and its errors."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import attn
from attn import masks
from attn.kernels import ring

from . import ring_parity

ROOT = pathlib.Path(__file__).parents[2]


@pytest.mark.parametrize("group", list(ring_parity.GROUPS))
def test_ring_matches_dense_values_and_gradients(group):
    environment = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0",
        "PYTHONPATH": str(ROOT),
    }
    result = subprocess.run(
        [sys.executable, str(pathlib.Path(ring_parity.__file__)), group],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line.removeprefix("RESULT ") for line in result.stdout.splitlines()]
    results = {r["case"]: r for r in map(json.loads, lines)}
    assert sorted(results) == sorted(ring_parity.GROUPS[group])
    bad = {
        case: r
        for case, r in results.items()
        if not (r["finite"] and r["worst"] <= 1.0 and r.get("ring_reached", True))
    }
    assert not bad, f"beyond atol=rtol={ring_parity.ATOL} of dense (worst > 1): {bad}"


@pytest.mark.parametrize("n", [4, 8])
def test_causal_skips_the_blocks_above_the_diagonal(n):
    kinds = ring.block_kinds(masks.causal(), (1, 1, 8 * n, 8 * n), n)
    assert isinstance(kinds, np.ndarray)  # static: decided at trace time
    np.testing.assert_array_equal(kinds == ring.EMPTY, np.triu(np.ones((n, n), bool), 1))
    np.testing.assert_array_equal(kinds == ring.PARTIAL, np.eye(n, dtype=bool))
    assert (kinds == ring.EMPTY).sum() == n * (n - 1) // 2


def test_traced_lengths_give_a_traced_schedule():
    @jax.jit
    def kinds(kv_lengths):
        return ring.block_kinds(masks.padding(kv_lengths=kv_lengths), (2, 1, 16, 16), 4)

    # Example 0 sees keys 0-4 (blocks 0 full, 1 partial), example 1 keys 0-7 (blocks 0, 1 full):
    # over the batch block 1 is partial, blocks 2 and 3 are empty for every query block.
    expected = np.array([ring.FULL, ring.PARTIAL, ring.EMPTY, ring.EMPTY])
    np.testing.assert_array_equal(kinds(jnp.array([5, 8])), np.tile(expected, (4, 1)))


def _qkv(T):
    q = k = v = jnp.ones((1, T, 2, 8), jnp.float32)
    return q, k, v


def test_without_a_context_axis_it_names_the_axis():
    with pytest.raises(ValueError, match=r"implementation='ring' cannot .*mesh axis 'context'"):
        attn.attend(*_qkv(8), implementation="ring")


def test_lengths_that_do_not_split_evenly_are_refused():
    mesh = jax.sharding.AbstractMesh((4,), ("context",))
    with pytest.raises(ValueError, match="T=6 queries and S=6 keys over the 4 devices"):
        ring.ring_attention(*_qkv(6), mesh=mesh)


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        (dict(weighting="sigmoid"), "weighting sigmoid"),
        (dict(weighting="softmax_with_sink(sink_logit=0.0)"), "softmax without a sink"),
        (dict(bias=jnp.zeros((1, 2, 8, 8))), "bias array"),
    ],
)
def test_what_the_ring_cannot_merge_is_refused(arguments, reason):
    mesh = jax.make_mesh((1,), ("context",))
    with jax.set_mesh(mesh), pytest.raises(ValueError, match=f"'ring' cannot .*{reason}"):
        attn.attend(*_qkv(8), implementation="ring", **arguments)
