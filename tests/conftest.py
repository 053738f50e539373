"""Fixtures shared by the tests of the pure core, and one JAX compilation cache per session."""

import os
import shutil
import tempfile

# Many tests compile the same programs (every smoke run of an experiment, in this process or in
# the `attn` subprocesses it starts), and compiling dominates their time: one persistent cache
# for the session. Set before jax is imported (it reads these variables once) by the process
# that loads this file first, the xdist controller; the workers and every subprocess inherit it.
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="attn-tests-jax-cache-")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
# The tests' programs are small, so compiling them costs more than running them: XLA's CPU
# backend without LLVM's optimisation passes took 36% less CPU time on two compile-bound test
# files (tests/nn/test_location_attention.py, tests/models/test_vision.py). Every process of
# the session (workers, `attn` subprocesses) inherits it; tests that set their own XLA_FLAGS
# for a subprocess replace it there.
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
    ).strip()

import jax  # noqa: E402
import pytest  # noqa: E402


def _quick_jit(fn):
    """``jax.jit`` with XLA's backend optimisation off: test programs are tiny, and compiling
    them (not running them) dominates the test time."""

    def call(*args):
        return jax.jit(fn).lower(*args).compile({"xla_backend_optimization_level": 0})(*args)

    return call


def pytest_sessionfinish(session):
    if _OWN_CACHE and not hasattr(session.config, "workerinput"):
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


@pytest.fixture(scope="session")
def quick_jit():
    return _quick_jit


@pytest.fixture
def interpreted_pallas(monkeypatch):
    """attend's "pallas" in Pallas' interpreter on every backend (off GPU it is anyway): tests
    that check the kernel's logic at tiles of 4 and head dims of 8 would otherwise, on a GPU,
    ask Triton for a kernel it cannot compile correctly, which pallas_attention refuses.
    tests/kernels/test_pallas_gpu.py checks the compiled kernel at GPU sizes."""
    import functools

    from attn.kernels import dispatch, pallas

    interpreted = functools.partial(pallas.pallas_attention, interpret=True)
    monkeypatch.setattr(dispatch, "pallas_attention", interpreted)


@pytest.fixture
def small_tiles(monkeypatch, interpreted_pallas):
    """4 x 4 tiles for attend's tiled kernels: with lengths such as 11 and 13, full, partial,
    skipped and padded tiles all occur. Pallas is interpreted (see ``interpreted_pallas``)."""
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
