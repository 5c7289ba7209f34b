"""Quantization and encoding variants by name: what the quantize stage writes, one module
per variant (compress.variants.dynamic, .static, .packed, .codebook; see BUILTIN in
compress.variants.registry).

    variant = get_variant("static")()      # a Variant (compress.variants.base)
    variant.write(source, target, VariantContext(config.quantize, calibration))

A new variant is a module with a Variant subclass, registered with @register_variant, and
its name added to BUILTIN. The stage that uses them is compress.stages.quantize.
"""

from compress.variants.base import StoredCount, Variant, VariantContext
from compress.variants.registry import (
    for_artifact,
    get_variant,
    in_order,
    list_variants,
    register_variant,
)

__all__ = [
    "StoredCount",
    "Variant",
    "VariantContext",
    "for_artifact",
    "get_variant",
    "in_order",
    "list_variants",
    "register_variant",
]
