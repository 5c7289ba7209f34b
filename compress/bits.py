"""Per-layer widths: how many bits each layer's weights get, one number or a table by the
model's module names.

    bits = 4                                          # every layer
    bits = { default = 4, "conv1" = 8, "fc1" = 2 }    # per layer; the others at the default

    widths_for(4, ["conv1", "fc1"])                           # {"conv1": 4, "fc1": 4}
    widths_for({"default": 4, "fc1": 2}, ["conv1", "fc1"])    # {"conv1": 4, "fc1": 2}
    widths_for({"default": 4, "fc9": 2}, ["conv1", "fc1"], "quantize.bits")
    # CompressError: quantize.bits names fc9, not a Linear/Conv layer of the model: conv1, fc1
    code_range(3)                                             # (-3, 3)

[quantize] bits, [finetune] qat_bits and [finetune] share.bits read this way; the codes a
width stands for (`code_range`) are one rule for fake quantization (compress.qat) and the
packed files (compress.variants.packed), so both hold the same weights.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from compress.errors import CompressError

Widths = int | dict[str, int]
DEFAULT = "default"  # the key of a table's width for the layers it does not name
MIN_BITS, MAX_BITS = 2, 8

# The symmetric codes of a b-bit weight: q in [qmin, qmax], scale = 2 max|w| / (qmax - qmin)
# per output channel. 4 and 8 bits are onnxruntime.quantization's symmetric int4 and int8
# (so packed at 4 bits holds static-int4's codes); the other widths keep the range
# symmetric, which for 2 bits is ternary {-1, 0, +1} * max|w|.
_RANGES = {4: (-8, 7), 8: (-127, 127)}


def code_range(bits: int) -> tuple[int, int]:
    """(qmin, qmax) of a `bits`-bit weight."""
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"weights take {MIN_BITS} to {MAX_BITS} bits, not {bits}")
    top = 2 ** (bits - 1) - 1
    return _RANGES.get(bits, (-top, top))


def check_widths(value: Widths, low: int = MIN_BITS, high: int = MAX_BITS) -> Widths:
    """`value` if it is a width in [low, high] or a table of them with a `default`; else
    ValueError (for the config's validators)."""
    table = value if isinstance(value, dict) else {DEFAULT: value}
    if DEFAULT not in table:
        raise ValueError(f"a table of widths needs a {DEFAULT!r} width for the layers it omits")
    bad = {k: v for k, v in table.items() if isinstance(v, bool) or not low <= v <= high}
    if bad:
        raise ValueError(f"widths are {low} to {high} bits: {bad}")
    return value


def widths_for(bits: Widths, layers: Iterable[str], key: str = "bits") -> dict[str, int]:
    """Each of `layers` -> its width; a name in the table that is not among `layers` is a
    CompressError that names `key` and lists the layers."""
    layers = list(layers)
    if not isinstance(bits, Mapping):
        return dict.fromkeys(layers, int(bits))
    check_layers(bits, layers, key)
    # a table naming every layer (a choice of bits = "auto") needs no default
    return {layer: int(bits[layer] if layer in bits else bits[DEFAULT]) for layer in layers}


def check_layers(bits: Widths, layers: Iterable[str], key: str) -> None:
    if not isinstance(bits, Mapping):
        return
    layers = list(layers)
    unknown = [name for name in bits if name != DEFAULT and name not in layers]
    if unknown:
        raise CompressError(
            f"{key} names {', '.join(unknown)}, not a Linear/Conv layer of the model: "
            f"{', '.join(layers)}"
        )


def widest(bits: Widths) -> int:
    return max(bits.values()) if isinstance(bits, Mapping) else int(bits)
