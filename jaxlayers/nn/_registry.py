"""The layer registry: layers rebuilt by class name from records, never by importing a name read from a file."""

from __future__ import annotations

from typing import Any

from jaxlayers._checks import require
from jaxlayers.model import Registry, record_of

_LAYERS = Registry("layer", "jaxlayers.nn.register_layer before loading")


def register_layer(cls: type) -> type:
    """Register a layer class so that :func:`layer_from_record` (and so a run directory holding a
    :class:`~jaxlayers.nn.Sequential` with it) can rebuild it by name; usable as a decorator.

    The class needs ``to_dict()`` (JSON values) and a way back: a classmethod ``from_dict(d)``, or,
    without one, ``cls(**d)``.

    Raises:
      TypeError: ``cls`` is not a class, or lacks ``init``, ``apply`` or ``to_dict``.
      ValueError: a different class is already registered under the same name.
    """
    require(isinstance(cls, type), "nn.register_layer", f"expects a class, got {cls!r}", TypeError)
    missing = [m for m in ("init", "apply", "to_dict") if not callable(getattr(cls, m, None))]
    require(
        not missing,
        "nn.register_layer",
        f"{cls.__name__} is not a layer: it lacks {', '.join(missing)} (see the layer protocol in jaxlayers.nn)",
        TypeError,
    )
    return _LAYERS.register(cls, "nn.register_layer")


def registered_layers() -> dict[str, type]:
    """The registered layer classes by name."""
    return _LAYERS.classes()


def layer_record(layer) -> dict[str, Any]:
    """``{"class": type name, "config": layer.to_dict()}``."""
    return record_of(layer)


def layer_from_record(record) -> Any:
    """Rebuild a layer from :func:`layer_record`'s output (``from_dict(config)``, else ``cls(**config)``).

    Raises:
      ValueError: an unregistered class name (naming the known ones), or a malformed record.
    """
    ok = isinstance(record, dict) and isinstance(record.get("config"), dict)
    require(ok, "nn.layer_from_record", f"a layer record is {{'class': name, 'config': dict}}, got {record!r}")
    cls = _LAYERS.lookup(record.get("class"), "nn.layer_from_record")
    from_dict = getattr(cls, "from_dict", None)
    return from_dict(record["config"]) if callable(from_dict) else cls(**record["config"])
