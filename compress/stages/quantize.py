"""Quantize stage: the [quantize] variants of an exported float model, one file each.

Files go to the stage folder (`quantize/<source>-<suffix>.onnx`); verify writes the final
artifacts. Each variant is one module of compress.variants (its name, suffix, settings and
how it writes its file):

    dynamic      -> <source>-int8-dynamic.onnx  quantize_dynamic: int8 weights, activations at
                                                run time
    static       -> <source>-int8-static.onnx   quantize_static: QDQ, int8 weights and
                                                activations
    static-int4  -> <source>-int4-static.onnx   quantize_static: QDQ, 4-bit weights, int8
                                                activations
    packed-int4  -> <source>-int4-packed.onnx   static-int4's codes stored packed
                                                (compress/encode/packed.py)
    packed       -> <source>-packed.onnx        the same at each layer's width, [quantize]
                                                bits (2-8; "auto": compress.variants.allocate)
    codebook     -> <source>-codebook.onnx      the weight-shared model as codes + codebooks,
                                                rebuilt at load (compress.encode.codebook)

Variants are written after the ones they need (packed-int4 packs static-int4's very codes
and scales); a needed variant that is not asked for is written to a temporary folder only.
Calibrated variants get `calibration_samples` training inputs drawn across the split (the
same ones every run: Dataset.spread_index). With `static_layers = "faster"` the static
variants quantize only the layers whose int8 kernel is faster on this machine
(compress.variants.layer_timing); the stage's JSON gives each such file's table
(`int8_layers`). With `bits = "auto"` the widths are chosen on
the validation split first (with [finetune] qat_bits = "quantize", by the finetune stage
before it trains at them, and checked here on the fine-tuned model); the stage's JSON gives
the packed artifact's widths (`bits`) and that choice's evidence (`allocation`).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx

from compress.config import QuantizeConfig
from compress.encode.inputs import take_used
from compress.encode.onnx_tools import get_metadata
from compress.errors import ExportError
from compress.stages.context import StageContext
from compress.variants import VariantContext, get_variant, in_order
from compress.variants.allocate import allocate, measured
from compress.variants.packed import layer_widths

log = logging.getLogger(__name__)


def variant_name(source: str, variant: str) -> str:
    """The file stem of `variant` of the float model `source`: `<source>-<suffix>`."""
    return f"{source}-{get_variant(variant).suffix}"


def write_variant(
    source: Path,
    target: Path,
    variant: str,
    config: QuantizeConfig,
    calibration: np.ndarray | None,
    inputs: Mapping[str, Path] | None = None,
    ir_version: int | None = None,
    widths: Mapping[str, int] | None = None,
    threads: int = 1,
) -> None:
    """Write the `variant` of the float model at `source` to `target` (metadata kept).

    `inputs`: the files of variants it needs, already written (name -> path) with every
    layer quantized; the others it needs are written first, to a temporary folder.
    `threads`: intra-op threads for timing layers (static_layers = "faster").
    """
    inputs = dict(inputs or {})
    # What another variant is made from quantizes every layer (packed-int4 packs all of
    # static-int4's codes and runs at dense speed anyway): static_layers is the asked-for
    # file's choice only.
    whole = config.model_copy(update={"static_layers": "all"})
    with tempfile.TemporaryDirectory() as tmp:
        for name in in_order([variant])[:-1]:
            if name not in inputs:
                inputs[name] = Path(tmp) / f"{variant_name(source.stem, name)}.onnx"
                write_variant(
                    source, inputs[name], name, whole, calibration, inputs, ir_version, widths
                )
        context = VariantContext(config, calibration, inputs, ir_version, widths, threads)
        get_variant(variant)().write(source, target, context)


def run(ctx: StageContext) -> dict:
    config = ctx.config.quantize
    source = ctx.input("export", f"{config.source}.onnx")
    calibration = None
    if not source.is_file():  # pruned-inputs: export found no first layer reading the input
        raise ExportError(
            f"quantize.source = {config.source!r}: {source.name} was not exported "
            "(no Linear or Conv reads the model's input directly)"
        )
    if any(get_variant(v).calibrated for v in in_order(config.variants)):
        # what the artifact takes (sound: waveforms, its front end in the graph)
        images = ctx.data.artifact_inputs("train", limit=config.calibration_samples, spread=True)
        calibration = images.numpy().astype(np.float32)
        used = get_metadata(onnx.load(str(source), load_external_data=False)).get("inputs")
        if used:  # a file that takes only the used inputs is calibrated on those
            calibration = take_used(calibration, json.loads(used))
    widths, extra = _packed_widths(ctx, source, config)
    written: dict[str, Path] = {}
    whole: dict[str, Path] = {}  # those with every layer quantized: what others are made from
    for variant in in_order(config.variants):
        if variant not in config.variants:
            continue  # only needed by another: write_variant writes it to a temporary folder
        target = ctx.output(f"{variant_name(config.source, variant)}.onnx")
        started = time.perf_counter()
        write_variant(
            source,
            target,
            variant,
            config,
            calibration,
            whole,
            ctx.config.export.ir_version,
            widths,
            ctx.config.verify.threads,
        )
        written[variant] = target
        if config.static_layers == "all" or not get_variant(variant).calibrated:
            whole[variant] = target
        log.info(
            "quantized %s -> %s (%d bytes) in %.1fs",
            source.name,
            target.name,
            target.stat().st_size,
            time.perf_counter() - started,
        )
    return {
        target.stem: {
            "path": str(target.relative_to(ctx.run_dir)),
            "bytes": target.stat().st_size,
            **(extra if variant == "packed" else {}),
            **(_layer_timing(target) if config.static_layers == "faster" else {}),
        }
        for variant, target in ((v, written[v]) for v in config.variants)
    }


def _layer_timing(target: Path) -> dict:
    """static_layers = "faster": each layer's float and int8 timing and whether it was
    quantized, and the whole files' check (the file's int8_layers and int8_check metadata),
    for the stage's JSON."""
    metadata = get_metadata(onnx.load(str(target), load_external_data=False))
    return {k: json.loads(metadata[k]) for k in ("int8_layers", "int8_check") if k in metadata}


def _packed_widths(
    ctx: StageContext, source: Path, config: QuantizeConfig
) -> tuple[dict[str, int] | None, dict]:
    """Each layer's width for the packed variant ([quantize] bits; "auto": chosen on the
    validation split) and what the stage's JSON says of it."""
    if "packed" not in config.variants:
        return None, {}
    model = onnx.load(str(source))
    if config.bits != "auto":
        widths = layer_widths(model, config.bits)
        return widths, {"bits": widths}
    images, labels = ctx.data.tensors("val")
    images = images.numpy().astype(np.float32)
    used = get_metadata(model).get("inputs")
    if used:
        images = take_used(images, json.loads(used))
    chosen = ctx.metrics("finetune").get("allocation")
    if chosen is not None:  # chosen before the fine-tuning, which trained at these widths
        widths = chosen["bits"]
        check = measured(model, images, labels.numpy(), widths, config.packed.scales)
        log.info(
            "bits = auto (chosen before fine-tuning): %s; validation %.4f, float %.4f",
            widths,
            check["val_accuracy"],
            check["float_val_accuracy"],
        )
        return widths, {"bits": widths, "allocation": {**chosen, "after_finetuning": check}}
    started = time.perf_counter()
    choice = allocate(model, images, labels.numpy(), config.auto, config.packed.scales)
    log.info(
        "bits = auto: %s (validation drop %.2f points, %.1fs)",
        choice["bits"],
        choice["measured_drop"],
        time.perf_counter() - started,
    )
    return choice["bits"], {"bits": choice["bits"], "allocation": choice}
