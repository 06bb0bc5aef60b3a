"""The NumPy original's layers, one module each: reference, fwd, bwd, and the public op.

Every op module ``jaxlayers/layers/<module>.py`` holds, with one signature
(traced arrays first, static keywords after):

* ``<op>_reference(...)`` -- plain ``jnp``; ``jax.grad`` of it is the oracle;
* ``<op>_fwd(...) -> (out, residuals)`` -- the forward pass and what the
  backward pass keeps (the NumPy original's cache);
* ``<op>_bwd(residuals, g) -> cotangents`` -- the hand-derived backward pass,
  one cotangent per differentiable argument;
* ``check_<op>(...)`` -- the arguments as the rule takes them, or a
  ``TypeError`` / ``ValueError`` naming the argument and the shapes seen
  (the helpers of :mod:`jaxlayers._checks`);
* ``<op>(...)`` -- the public op: check the arguments, call the rule.

How to add an op
----------------

1. Write ``jaxlayers/layers/<module>.py`` with the five functions above, its
   ``__all__`` listing the public names, and the rule registered in one
   statement with :func:`jaxlayers._oprule.custom_op` (static arguments and
   arguments without a cotangent named, never numbered)::

       _scale = custom_op(scale_reference, scale_fwd, scale_bwd, static=("factor",))

       def scale(x, *, factor=2.0):
           x, factor = check_scale(x, factor)
           return _scale(x, factor=factor)

2. Add one line ``from jaxlayers.layers.<module> import *`` below: this
   package exports each op module's ``__all__`` (an import error names a
   module that is missing here).
3. Declare the op once in :data:`jaxlayers.opinfo.OPS` -- its samples and
   differentiable arguments; the generic tests (values, ``jax.grad`` of the
   reference, float64 finite differences, ``vmap``, empty batches, dtypes)
   and ``jaxlayers gradcheck`` then cover it.
4. If the NumPy original has the layer, add its ``*_forward`` /
   ``*_backward`` pair to :mod:`jaxlayers.compat`, calling ``check_<op>``,
   ``<op>_fwd`` and ``<op>_bwd``.

Export the public op from :mod:`jaxlayers` too if it belongs in the
top-level namespace.
"""

import importlib as _importlib
import pkgutil as _pkgutil

from jaxlayers.layers.affine import *  # noqa: F403
from jaxlayers.layers.attention import *  # noqa: F403
from jaxlayers.layers.batchnorm import *  # noqa: F403
from jaxlayers.layers.conv import *  # noqa: F403
from jaxlayers.layers.dropout import *  # noqa: F403
from jaxlayers.layers.embedding import *  # noqa: F403
from jaxlayers.layers.groupnorm import *  # noqa: F403
from jaxlayers.layers.gru import *  # noqa: F403
from jaxlayers.layers.layernorm import *  # noqa: F403
from jaxlayers.layers.lstm import *  # noqa: F403
from jaxlayers.layers.mha import *  # noqa: F403
from jaxlayers.layers.pool import *  # noqa: F403
from jaxlayers.layers.relu import *  # noqa: F403
from jaxlayers.layers.rnn import *  # noqa: F403
from jaxlayers.layers.spatial_batchnorm import *  # noqa: F403
from jaxlayers.layers.temporal import *  # noqa: F403


def _exports() -> list[str]:
    """The ``__all__`` of every public module of this package, each star-imported above."""
    names: set[str] = set()
    for info in _pkgutil.iter_modules(__path__):  # noqa: F405
        if info.name.startswith("_"):
            continue
        module = _importlib.import_module(f"{__name__}.{info.name}")
        if any(globals().get(n) is not getattr(module, n) for n in module.__all__):
            raise ImportError(f"jaxlayers.layers: add `from {module.__name__} import *  # noqa: F403`")
        names.update(module.__all__)
    return sorted(names)


__all__ = _exports()
