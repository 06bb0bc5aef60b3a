"""The ``>>>`` examples in jaxlayers' docstrings run as written (the API reference renders them).

One test per module that has examples, so xdist spreads them; a module's examples share one
namespace, top to bottom, as :mod:`doctest` runs them.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import jaxlayers


def _modules_with_examples() -> list[str]:
    names = ["jaxlayers"] + [
        m.name for m in pkgutil.walk_packages(jaxlayers.__path__, "jaxlayers.") if m.name != "jaxlayers.__main__"
    ]
    finder = doctest.DocTestFinder()
    return [n for n in names if any(t.examples for t in finder.find(importlib.import_module(n)))]


MODULES = _modules_with_examples()


def test_examples_are_found():
    assert {"jaxlayers.layers.relu", "jaxlayers.layers.affine", "jaxlayers.models"} <= set(MODULES), MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    failures = []
    for test in doctest.DocTestFinder().find(module):
        out: list[str] = []
        result = runner.run(test, out=out.append)
        if result.failed:
            failures.append("".join(out))
    assert not failures, "\n".join(failures)
