"""Shared fixtures. float64 is switched on explicitly, per test, never on import."""

from __future__ import annotations

import jax
import pytest


@pytest.fixture
def x64():
    """Run the test body with JAX's float64 mode on (restored afterwards)."""
    with jax.enable_x64(True):
        yield
