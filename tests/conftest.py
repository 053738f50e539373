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


@pytest.fixture
def small_tiles(monkeypatch):
    """4 x 4 tiles for attend's tiled kernels: with lengths such as 11 and 13, full, partial,
    skipped and padded tiles all occur."""
    from attn.kernels import dispatch

    monkeypatch.setattr(dispatch, "Q_TILE", 4)
    monkeypatch.setattr(dispatch, "KV_TILE", 4)
    monkeypatch.setattr(dispatch, "PALLAS_TILE", 4)


@pytest.fixture(scope="session")
def tokamax():
    """tokamax (in the ``test`` and ``bench`` extras), with its absl flags marked parsed: it
    would otherwise parse pytest's own command line on first use. Skips only in an environment
    installed without the ``test`` extra."""
    module = pytest.importorskip(
        "tokamax", reason="tokamax is not installed (pip install -e '.[test]')"
    )
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    return module
