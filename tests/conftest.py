"""Shared fixtures. float64 is switched on explicitly, per test, never on import."""

from __future__ import annotations

import os
import shutil
import tempfile

import jax
import pytest

# pytest-xdist's default for this suite: two workers (CI's machine and the development one have two cores).
# Not in pyproject's addopts, where it would break `pytest -p no:xdist` ("unrecognized arguments: -n").
DEFAULT_WORKERS = 2


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """Add ``-n 2`` when xdist is installed and enabled and no distribution was asked for.

    Runs before xdist's own ``pytest_cmdline_main``, which turns ``numprocesses`` into workers.
    Left alone: ``-p no:xdist`` or xdist not installed, an explicit ``-n`` (``-n 0`` included),
    ``--dist``/``--tx``, ``--pdb``, and xdist's workers themselves.
    """
    if not config.pluginmanager.hasplugin("xdist") or os.environ.get("PYTEST_XDIST_WORKER"):
        return
    option = config.option
    explicit = (
        option.numprocesses is not None
        or getattr(option, "dist", "no") != "no"
        or getattr(option, "tx", None)
        or getattr(option, "distload", False)
        or config.getoption("usepdb", False)
    )
    if not explicit:
        option.numprocesses = DEFAULT_WORKERS
        # worksteal: a worker that runs out of tests takes half of the other's queue, so the run does not
        # end with one worker finishing a long queue alone (xdist's `load` hands tests out in fixed chunks).
        option.dist = "worksteal"


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the tests marked ``slow`` (a minute or so each: notebooks, docs pages, subprocess trainings) first.

    Longest first is what keeps two workers busy to the end: a slow test started last would run alone.
    A stable sort: the order within each group is unchanged (and the same on every worker).
    """
    # The notebooks (about a minute each) before the other slow tests, so the last to start are the shorter ones.
    items.sort(key=lambda item: (item.get_closest_marker("slow") is None, item.path.name != "test_notebooks.py"))


# jax's persistent compilation cache, one directory per test session, shared by the xdist workers and
# every process the tests start (`jaxlayers train` commands, the docs pages' drivers, the notebooks'
# kernels inherit the environment): the same programs -- the default net's epoch, the CLI's evaluate --
# are compiled in many processes, and a cache hit skips XLA's compile (measured: a second identical
# `jaxlayers train --epochs 2` 13.3 s -> 5.8 s on the 2-core dev machine). Programs are looked up by a
# hash of their HLO, flags and devices, so a hit runs the executable a compile would have produced;
# what the tests check is unchanged. A cache dir set by the caller is used as given and kept.
CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"
CACHE_MIN_SECS_ENV = "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"
CACHE_MIN_SECS = "0.1"  # jax's default (1 s) would skip most of this suite's compiles (~0.1-1 s each on CPU)
_created_cache_dir: str | None = None


def pytest_configure(config: pytest.Config) -> None:
    """Set up the session's compilation cache (in the controller; workers inherit its environment)."""
    global _created_cache_dir
    if not os.environ.get(CACHE_ENV):
        _created_cache_dir = tempfile.mkdtemp(prefix="jaxlayers-test-jit-cache-")
        os.environ[CACHE_ENV] = _created_cache_dir
    os.environ.setdefault(CACHE_MIN_SECS_ENV, CACHE_MIN_SECS)
    # jax read its environment when conftest imported it: point this process's config at the cache too.
    jax.config.update("jax_compilation_cache_dir", os.environ[CACHE_ENV])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(os.environ[CACHE_MIN_SECS_ENV]))


def pytest_unconfigure(config: pytest.Config) -> None:
    if _created_cache_dir:
        shutil.rmtree(_created_cache_dir, ignore_errors=True)


@pytest.fixture
def x64():
    """Run the test body with JAX's float64 mode on (restored afterwards)."""
    with jax.enable_x64(True):
        yield
