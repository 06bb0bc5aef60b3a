"""Shared fixtures. float64 is switched on explicitly, per test, never on import."""

from __future__ import annotations

import os

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


@pytest.fixture
def x64():
    """Run the test body with JAX's float64 mode on (restored afterwards)."""
    with jax.enable_x64(True):
        yield
