"""Fixtures shared by the tests of the pure core."""

import jax
import pytest


def _quick_jit(fn):
    """``jax.jit`` with XLA's backend optimisation off: test programs are tiny, and compiling
    them (not running them) dominates the test time."""

    def call(*args):
        return jax.jit(fn).lower(*args).compile({"xla_backend_optimization_level": 0})(*args)

    return call


@pytest.fixture(scope="session")
def quick_jit():
    return _quick_jit
