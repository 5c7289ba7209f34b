"""What a variant is: one way of writing the float model's file smaller, named in
[quantize] variants.

    @register_variant
    class Float16(Variant):
        name = "float16"              # the value in [quantize] variants
        suffix = "float16"            # written as <source>-float16.onnx
        order = 60                    # place in lists, legends and the report's rows
        def write(self, source, target, context): ...   # one .onnx file, metadata kept

A variant declares what the rest of the package needs to know about it, so that nothing
else recognises a variant by its name: the files it is made from (`needs`, written first),
whether it reads calibration images, the [quantize] sub-table it reads, whether its
weights are exactly the float model's (verify then holds its logits to the float
tolerance), how its stored tensors count as parameters, the onnxruntime operators its files
may hold for the compatibility table, and its colour in plots.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import onnx

from compress.config import QuantizeConfig


@dataclass(frozen=True)
class VariantContext:
    """What `Variant.write` gets besides the source and target files."""

    config: QuantizeConfig
    calibration: np.ndarray | None = None  # training inputs, for variants with `calibrated`
    inputs: Mapping[str, Path] = field(default_factory=dict)  # variant in `needs` -> its file
    ir_version: int | None = None  # [export] ir_version: the IR version files declare at least
    # Layer -> bits for the variants that read [quantize] bits, as the quantize stage
    # resolved it (for bits = "auto", its choice); None: the variant reads the config.
    widths: Mapping[str, int] | None = None
    # Intra-op threads for timing layers ([quantize] static_layers = "faster"): [verify]
    # threads, the count the artifacts' latency is measured at.
    threads: int = 1


@dataclass
class StoredCount:
    """What a variant's `count_stored` found among a file's initializers."""

    params: int = 0  # parameters of the tensors it rebuilds
    nonzero: int = 0  # of those, the non-zero ones
    names: set[str] = field(
        default_factory=set
    )  # the initializers accounted for (counted or auxiliary)


class Variant:
    name: ClassVar[str]
    suffix: ClassVar[str]
    # Place in lists and plot legends (the config's documented order): lower first.
    order: ClassVar[int]
    # Variants whose files this one is made from: the quantize stage writes them first (to a
    # temporary folder when not asked for) and passes their paths in context.inputs.
    needs: ClassVar[tuple[str, ...]] = ()
    # True if it reads calibration images ([quantize] calibration_samples, calibration_method).
    calibrated: ClassVar[bool] = False
    # The [quantize] sub-table it reads (e.g. "packed"), if any.
    section: ClassVar[str | None] = None
    # True if its weights are exactly the float model's (verify holds its logits to the
    # float tolerance, as it does dense and pruned).
    lossless: ClassVar[bool] = False
    # com.microsoft operators its files may hold -> the first onnxruntime release with them
    # (compress.encode.compat); an operator no variant lists needs the verifying release.
    contrib_ops: ClassVar[Mapping[str, str]] = {}
    # (operator, type of its weight input) -> the first onnxruntime with that kernel, for
    # kernels that came later than their opset.
    kernel_needs: ClassVar[Mapping[tuple[str, int], str]] = {}
    color: ClassVar[str] = "tab:green"  # matplotlib colour of its points

    @classmethod
    def count_stored(cls, inits: Mapping[str, onnx.TensorProto], min_dims: int) -> StoredCount:
        """The initializers of a file (any file: every variant is asked) that this variant's
        encoding wrote and that do not count as themselves: the tensors they stand for
        (those of `min_dims` dimensions or more counted) and their auxiliaries (scales, zero
        points, shapes). compress.encode.onnx_tools.parameter_counts counts the rest one by
        one. Default: none."""
        return StoredCount()

    def write(self, source: Path, target: Path, context: VariantContext) -> None:
        """Write this variant of the float model at `source` to `target`, with the source's
        metadata and `variant` set to the target's stem."""
        raise NotImplementedError
