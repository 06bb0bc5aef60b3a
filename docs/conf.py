"""Sphinx configuration of the jaxlayers documentation site.

Build it (warnings are errors, as in CI), from the repository root:

    pip install -e ".[docs]"
    sphinx-build -W --keep-going -b html docs docs/_build/html

then open docs/_build/html/index.html.

Sources are MyST Markdown (myst-nb also renders the notebooks of ``notebooks/``
with their stored outputs: nothing is executed here). The API reference
(``docs/api/*.md``) is written with autodoc directives; the check at the end of
this file fails the build when a name of a public module's ``__all__`` is not
documented there.
"""

from __future__ import annotations

import filecmp
import importlib
import inspect
import shutil
import sys
from pathlib import Path

from sphinx import addnodes
from sphinx.util import logging

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
# Document this checkout's jaxlayers, whatever an installed copy may be.
sys.path.insert(0, str(ROOT))

import jaxlayers  # noqa: E402

# ---------------------------------------------------------------------------
# The public modules: the one place to list them. Each needs a page in
# docs/api/ that documents every name of its ``__all__`` (the check below says
# which are missing). Adding a public module is one line here plus its page.
PUBLIC_MODULES = [
    "jaxlayers",
    "jaxlayers.train",
    "jaxlayers.data",
    "jaxlayers.nn",
    "jaxlayers.model",
    "jaxlayers.sweep",
    "jaxlayers.parallel",
    "jaxlayers.gradcheck",
    "jaxlayers.compat",
]

project = "jaxlayers"
author = "the jaxlayers developers"
copyright = "2026, the jaxlayers developers"
release = jaxlayers.__version__
version = release

extensions = [
    "myst_nb",  # MyST Markdown pages and .ipynb notebooks (it loads myst_parser itself)
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",  # Google-style docstrings: Args / Returns / Raises
    "sphinx.ext.viewcode",
]

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints", "README.md"]

# --- MyST / myst-nb ----------------------------------------------------------
myst_enable_extensions = ["colon_fence", "dollarmath", "amsmath", "deflist"]
# Headings get anchors, so pages can link to [a section](page.md#a-section).
myst_heading_anchors = 3
# The notebooks are committed with their outputs (tests/test_notebooks.py runs
# them); the site shows those outputs and executes nothing.
nb_execution_mode = "off"

# --- autodoc / napoleon --------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
add_module_names = False
python_use_unqualified_type_names = True
# No intersphinx: the build runs offline (CI and the sandbox have no network).

# --- HTML ------------------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_title = f"jaxlayers {release}"
html_theme_options = {
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "home_page_in_toc": True,
}
html_static_path: list[str] = []

# ---------------------------------------------------------------------------
# The notebooks live in <repo>/notebooks (one copy in git). Sphinx reads only
# files under docs/, so they are mirrored into docs/notebooks/ (git-ignored)
# on every build: changed ones are copied, removed ones deleted. A copy, not a
# symlink, so the build works the same on every file system.
NOTEBOOKS_SRC = ROOT / "notebooks"
NOTEBOOKS_DST = DOCS / "notebooks"


def _mirror_notebooks() -> None:
    NOTEBOOKS_DST.mkdir(exist_ok=True)
    wanted = {p.name for p in NOTEBOOKS_SRC.glob("*.ipynb")}
    for stale in NOTEBOOKS_DST.iterdir():
        if stale.is_file() and stale.name not in wanted:
            stale.unlink()
    for name in sorted(wanted):
        src, dst = NOTEBOOKS_SRC / name, NOTEBOOKS_DST / name
        if not dst.exists() or not filecmp.cmp(src, dst, shallow=False):
            shutil.copy2(src, dst)


_mirror_notebooks()

# ---------------------------------------------------------------------------
# The API completeness check. Every object description in the documents
# (autodoc's directives and the plain ``py:*`` ones, indexed or ``:no-index:``)
# is recorded as "module.name"; after reading, each name of each public
# module's ``__all__`` must be among them -- or, for a submodule listed in
# ``jaxlayers.__all__``, be a documented module. Anything else is a warning
# naming the module and the name, i.e. an error under -W.
logger = logging.getLogger("jaxlayers.docs")


def _record_descriptions(app, doctree) -> None:
    env = app.env
    if not hasattr(env, "jaxlayers_documented"):
        env.jaxlayers_documented = {}
    found = set()
    for sig in doctree.findall(addnodes.desc_signature):
        module, fullname = sig.get("module"), sig.get("fullname")
        if module and fullname:
            found.add(f"{module}.{fullname}")
    env.jaxlayers_documented[env.docname] = found


def _purge(app, env, docname) -> None:
    getattr(env, "jaxlayers_documented", {}).pop(docname, None)


def _merge(app, env, docnames, other) -> None:
    if not hasattr(env, "jaxlayers_documented"):
        env.jaxlayers_documented = {}
    for docname in docnames:
        env.jaxlayers_documented[docname] = other.jaxlayers_documented.get(docname, set())


def _check_api_complete(app, env) -> None:
    documented = set().union(*getattr(env, "jaxlayers_documented", {}).values())
    documented |= set(env.get_domain("py").modules)  # automodule / py:module
    for modname in PUBLIC_MODULES:
        try:
            module = importlib.import_module(modname)
        except ImportError as exc:
            logger.warning("API reference: public module %s does not import: %s", modname, exc)
            continue
        if modname not in documented:
            logger.warning("API reference: public module %s has no page (no automodule/py:module)", modname)
        if not hasattr(module, "__all__"):
            logger.warning("API reference: public module %s has no __all__ to check the reference against", modname)
        missing = []
        for name in getattr(module, "__all__", []):
            full = f"{modname}.{name}"
            obj = getattr(module, name, None)
            if full in documented:
                continue
            if inspect.ismodule(obj) and obj.__name__ in documented:
                continue
            missing.append(name)
        for name in missing:
            logger.warning(
                "API reference: %s.%s is in %s.__all__ but not documented in docs/api/",
                modname,
                name,
                modname,
                type="jaxlayers",
                subtype="api",
            )


def _drop_type_docstring(app, what, name, obj, options, lines) -> None:
    """A module constant without a doc comment gets its *type's* docstring from
    autodoc (``str(object='') -> str ...`` for a string): drop that text. It
    happens for constants re-exported from another module, whose ``#:`` comment
    autodoc does not see; each page describes them in the directive's content."""
    if what in ("data", "attribute") and not inspect.isclass(obj) and not callable(obj):
        type_doc = inspect.getdoc(type(obj))
        if type_doc and "\n".join(lines).strip() == inspect.cleandoc(type_doc).strip():
            lines.clear()


def setup(app):
    app.connect("autodoc-process-docstring", _drop_type_docstring)
    app.connect("doctree-read", _record_descriptions)
    app.connect("env-purge-doc", _purge)
    app.connect("env-merge-info", _merge)
    app.connect("env-check-consistency", _check_api_complete)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
