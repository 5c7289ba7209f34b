"""Pruning methods by name.

    @register_pruning_method
    class Magnitude(PruningMethod): name = "magnitude"; ...

    method = get_method("magnitude")          # the class; get_method("x") lists the known ones
    list_methods()                            # {"magnitude": Magnitude, "threshold": Threshold}

The built-in methods are the modules named in BUILTIN, imported on first use, explicitly:
a new built-in method is one module in compress/pruning/ and its name added there.
"""

from __future__ import annotations

import importlib

from compress.errors import CompressError
from compress.registry import unknown_name_message

# The registry holds compress.pruning.base.PruningMethod subclasses (typed `type` here) but
# imports none of them, so compress.config can look a [prune] method up by name (the method
# modules are imported on first lookup, as models are) without an import cycle.

BUILTIN = (
    "threshold",
    "magnitude",
    "channels",
    "variational",
)  # modules of compress.pruning, one per method

_REGISTRY: dict[str, type] = {}
_loaded = False


def register_pruning_method(method: type) -> type:
    """Register a PruningMethod subclass under its `name` (usable as a class decorator)."""
    name = method.name
    if name in _REGISTRY and _REGISTRY[name] is not method:
        raise ValueError(f"pruning method {name!r} is registered twice")
    if method.Config.model_fields["method"].default != name:
        raise ValueError(
            f"pruning method {name!r}: its Config needs method: Literal[{name!r}] = {name!r}"
        )
    _REGISTRY[name] = method
    return method


def _load_builtin() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in BUILTIN:
            importlib.import_module(f"compress.pruning.{module}")


def list_methods() -> dict[str, type]:
    _load_builtin()
    return dict(sorted(_REGISTRY.items()))


def get_method(name: str) -> type:
    methods = list_methods()
    if name not in methods:
        raise CompressError(unknown_name_message("pruning method", str(name), list(methods)))
    return methods[name]
