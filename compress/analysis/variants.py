"""Sweep settings: `--set KEY=V1,V2` and [sweep] tables as axes, and the variants they make.

    axes = sweep_axes(config, ["prune.amount=0.9,0.95"])   # {"prune.amount": [0.9, 0.95]}
    variants = plan_variants(config, axes)                   # [{name, overrides}], validated

Values are TOML literals (`--set 'quantize.variants=["dynamic"],["static"]'`); a bare word
such as `dense` is a string. Every combination is one variant, named after what varies.
"""

from __future__ import annotations

import itertools
import re
import tomllib
from typing import Any

from compress.config import PipelineConfig, ignored_by
from compress.errors import CompressError


def split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside brackets, braces or quotes."""
    parts, depth, quote, current = [], 0, None, []
    for char in text:
        if quote:
            quote = None if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return [p.strip() for p in parts]


def parse_literal(text: str) -> Any:
    """A TOML literal (number, string, boolean, array, inline table); a bare word such as
    `dense` is taken as a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.+-]*", text):
            return text
        raise CompressError(
            f'{text!r} is not a TOML value (numbers, "strings", true/false, [arrays])'
        ) from None


def parse_set(spec: str) -> tuple[str, list[Any]]:
    """`prune.amount=0.9,0.95` -> ("prune.amount", [0.9, 0.95])."""
    key, sep, values = spec.partition("=")
    key = key.strip()
    if not sep or not key or not values.strip():
        raise CompressError(
            f"--set {spec!r}: expected KEY=VALUE[,VALUE...], e.g. prune.amount=0.9,0.95"
        )
    try:
        return key, [parse_literal(v) for v in split_top_level(values)]
    except CompressError as exc:
        raise CompressError(f"--set {spec!r}: {exc}") from None


def sweep_axes(config: PipelineConfig, sets: list[str] = ()) -> dict[str, list[Any]]:
    """The pipeline's [sweep] table, with --set options added (a --set replaces the same key)."""
    axes = {key: list(values) for key, values in config.sweep.items()}
    for spec in sets:
        key, values = parse_set(spec)
        axes[key] = values
    if not axes:
        raise CompressError(
            "nothing to sweep: give --set KEY=VALUES or a [sweep] table in the pipeline file"
        )
    return axes


def short_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "+".join(short_value(v) for v in value) or "none"
    if isinstance(value, dict):
        return "+".join(f"{k}{short_value(v)}" for k, v in value.items()) or "none"
    return str(value)


def variant_names(combos: list[dict[str, Any]], axes: dict[str, list[Any]]) -> list[str]:
    """Folder names such as `threshold-0.02_variants-dynamic` (the last part of each key
    that varies; the whole key where two end alike), made unique."""
    varying = [k for k, v in axes.items() if len(v) > 1] or list(axes)
    lasts = [k.split(".")[-1] for k in varying]
    names, seen = [], {}
    for combo in combos:
        parts = []
        for key, last in zip(varying, lasts, strict=True):
            label = last if lasts.count(last) == 1 else key
            parts.append(f"{label}-{short_value(combo[key])}")
        name = re.sub(r"[^A-Za-z0-9._+=-]", "", "_".join(parts)) or "variant"
        seen[name] = seen.get(name, 0) + 1
        names.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return names


def plan_variants(config: PipelineConfig, axes: dict[str, list[Any]]) -> list[dict]:
    """[{name, overrides}] for every combination; each is validated now, before any work."""
    keys = list(axes)
    combos = [dict(zip(keys, values, strict=True)) for values in itertools.product(*axes.values())]
    variants, reasons = [], {key: set() for key in keys}
    for name, combo in zip(variant_names(combos, axes), combos, strict=True):
        try:
            variant = config.with_overrides(combo)
        except CompressError as exc:
            settings = ", ".join(f"{k}={v!r}" for k, v in combo.items())
            raise CompressError(f"variant {name} ({settings}): {exc}") from None
        for key in keys:
            reasons[key].add(ignored_by(variant, key))
        variants.append({"name": name, "overrides": combo})
    for key, why in reasons.items():
        if None not in why:  # no variant reads it: they would all be the same run
            raise CompressError(
                f"sweep over {key}: the pipeline ignores it ({sorted(why)[0]}), "
                "so every variant would be the same run"
            )
    return variants
