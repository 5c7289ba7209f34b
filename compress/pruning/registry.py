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
from typing import TYPE_CHECKING

from compress.errors import CompressError
from compress.registry import unknown_name_message

if TYPE_CHECKING:
    from compress.pruning.base import PruningMethod

BUILTIN = ("threshold", "magnitude", "channels")  # modules of compress.pruning, one per method

_REGISTRY: dict[str, type[PruningMethod]] = {}
_loaded = False


def register_pruning_method(method: type[PruningMethod]) -> type[PruningMethod]:
    """Register a PruningMethod subclass under its `name` (usable as a class decorator)."""
    name = method.name
    if name in _REGISTRY and _REGISTRY[name] is not method:
        raise ValueError(f"pruning method {name!r} is registered twice")
    if method.Config.model_fields["method"].default != name:
        raise ValueError(f"pruning method {name!r}: its Config needs method: Literal[{name!r}] = {name!r}")
    _REGISTRY[name] = method
    return method


def _load_builtin() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in BUILTIN:
            importlib.import_module(f"compress.pruning.{module}")


def list_methods() -> dict[str, type[PruningMethod]]:
    _load_builtin()
    return dict(sorted(_REGISTRY.items()))


def get_method(name: str) -> type[PruningMethod]:
    methods = list_methods()
    if name not in methods:
        raise CompressError(unknown_name_message("pruning method", str(name), list(methods)))
    return methods[name]
