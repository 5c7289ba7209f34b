"""Variants by name: the values of [quantize] variants.

    @register_variant
    class Dynamic(Variant): name = "dynamic"; suffix = "int8-dynamic"; ...

    get_variant("dynamic")                  # the class; get_variant("x") lists the known ones
    list_variants()                         # {"dynamic": Dynamic, ...}, in their `order`
    in_order(["packed-int4", "dynamic"])    # ["static-int4", "packed-int4", "dynamic"]: needs first

The built-in variants are the modules named in BUILTIN, imported on first use, explicitly:
a new built-in variant is one module in compress/variants/ and its name added there.
"""

from __future__ import annotations

import importlib

from compress.errors import CompressError
from compress.registry import unknown_name_message

# The registry holds compress.variants.base.Variant subclasses (typed `type` here) but
# imports none of them, so compress.config and compress.encode can look a variant up by name
# (the variant modules are imported on first lookup) without an import cycle.

BUILTIN = ("dynamic", "static", "packed", "codebook")  # modules of compress.variants

_REGISTRY: dict[str, type] = {}
_loaded = False


def register_variant(variant: type) -> type:
    """Register a Variant subclass under its `name` (usable as a class decorator)."""
    name = variant.name
    if name in _REGISTRY and _REGISTRY[name] is not variant:
        raise ValueError(f"variant {name!r} is registered twice")
    same_suffix = [n for n, v in _REGISTRY.items() if v.suffix == variant.suffix and n != name]
    if same_suffix:
        raise ValueError(
            f"variant {name!r}: suffix {variant.suffix!r} is {same_suffix[0]!r}'s already"
        )
    _REGISTRY[name] = variant
    return variant


def _load_builtin() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in BUILTIN:
            importlib.import_module(f"compress.variants.{module}")


def list_variants() -> dict[str, type]:
    _load_builtin()
    return dict(sorted(_REGISTRY.items(), key=lambda item: (item[1].order, item[0])))


def get_variant(name: str) -> type:
    variants = list_variants()
    if name not in variants:
        raise CompressError(unknown_name_message("quantize variant", str(name), list(variants)))
    return variants[name]


def in_order(names: list[str]) -> list[str]:
    """`names` and the variants they need, each after what it needs (else in the given
    order): the order to write them in."""
    ordered: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in path:
            raise CompressError(f"quantize variants need each other: {' -> '.join([*path, name])}")
        if name not in ordered:
            for need in get_variant(name).needs:
                visit(need, (*path, name))
            ordered.append(name)

    for name in names:
        visit(name, ())
    return ordered


def for_artifact(stem: str) -> type | None:
    """The variant that wrote the artifact `stem` (`<source>-<suffix>`), if any."""
    return next((v for v in list_variants().values() if stem.endswith(f"-{v.suffix}")), None)
