"""`codebook` -> <source>-codebook.onnx: the weight-shared model ([finetune] share) with
every shared tensor stored as codes + codebook (compress.encode.codebook), rebuilt at load
by ops onnxruntime folds: exactly the float model's weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from compress.encode.codebook import code_entropy_bits, encode_codebook
from compress.encode.onnx_tools import compact_names, get_metadata, save_model, set_metadata
from compress.errors import CompressError
from compress.variants.base import StoredCount, Variant, VariantContext
from compress.variants.registry import register_variant

# The parts of a codebook-encoded tensor `<name>.cb`, `.gap`, `.code`, `.numel`, `.shape`, ...
# (compress.encode.codebook): counted once, as the tensor they rebuild.
CODEBOOK = ".cb"
ENCODING_NOTE = (
    "codebook: weights rebuilt from codes at session creation (onnxruntime graph optimizations, "
    "its default, fold it); with optimizations disabled the decode runs on every call"
)


@register_variant
class Codebook(Variant):
    name = "codebook"
    suffix = "codebook"
    order = 50
    lossless = True

    @classmethod
    def count_stored(cls, inits: Mapping[str, onnx.TensorProto], min_dims: int) -> StoredCount:
        bases = {n.removesuffix(CODEBOOK) for n in inits if n.endswith(CODEBOOK)}
        found = StoredCount(names={n for n in inits if n.rpartition(".")[0] in bases})
        for base in bases:  # a tensor stored as codes: its size, and codes that are not 0
            if len(numpy_helper.to_array(inits[f"{base}.shape"])) >= min_dims:
                found.params += int(numpy_helper.to_array(inits[f"{base}.numel"])[0])
                found.nonzero += int(np.count_nonzero(numpy_helper.to_array(inits[f"{base}.code"])))
        return found

    def write(self, source: Path, target: Path, context: VariantContext) -> None:
        write_codebook(source, target)


def write_codebook(source: Path, target: Path) -> dict:
    """The float model with every weight-shared tensor as codes + codebook (exactly the same
    weights); returns encode_codebook's statistics."""
    model = onnx.load(str(source))
    stats = encode_codebook(model)
    compact_names(model)
    if not stats:
        raise CompressError(
            f"{source.name} has no weight-shared tensor (at most 255 distinct values) to store as "
            "a codebook: set [finetune] share.bits"
        )
    metadata = get_metadata(model)
    metadata["variant"] = target.stem
    metadata["encoding"] = ENCODING_NOTE
    metadata["code_entropy_bits"] = f"{code_entropy_bits(stats):.4f}"
    set_metadata(model, metadata)
    save_model(model, target)
    return stats
