"""Search spaces: the grammar of `--param KEY=SPACE` and of a pipeline's [search] table.

    spaces = search_spaces(
        config, ["train.l1.lambda=log(1e-5,1e-3)", "prune.threshold=(0.005,0.08)"]
    )
    spaces["prune.threshold"]            # Space("prune.threshold", "uniform", 0.005, 0.08)
    value = suggest(trial, space)        # a draw from an Optuna trial
    start = file_settings(config, spaces)  # the pipeline's own values, when each lies in its space

`(low, high)` uniform, `log(low, high)` log-uniform, `int(low, high)` whole numbers, or a
list of choices as a TOML array (`[["static"], ["static-int4"]]`): parsed, never evaluated.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from compress.analysis.variants import parse_literal
from compress.config import PipelineConfig
from compress.errors import CompressError

FLOAT_DIGITS = (
    3  # sampled floats are rounded to 3 significant digits, so near-equal draws share stages
)


@dataclass(frozen=True)
class Space:
    """One searched setting: kind is "uniform", "log", "int" or "choice"."""

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple = ()

    def describe(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(json.dumps(c) for c in self.choices)
        name = {"uniform": "", "log": "log", "int": "int"}[self.kind]
        return f"{name}({self.low:g}, {self.high:g})"


_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_RANGE = re.compile(rf"^(log|int)?\s*\(\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\)$")


def parse_space(key: str, text: str | list) -> Space:
    """`log(1e-5, 1e-3)` -> Space(key, "log", 1e-5, 1e-3); a list (or TOML array text) is
    a choice. Raises CompressError naming the key on anything else."""
    key = key.strip()
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+", key):
        raise CompressError(
            f"search key {key!r}: expected a dotted setting such as prune.threshold"
        )
    if isinstance(text, str) and text.strip().startswith("["):
        try:
            text = parse_literal(text.strip())
        except CompressError as exc:
            raise CompressError(f"search {key}: {exc}") from None
    if isinstance(text, list):
        if not text:
            raise CompressError(f"search {key}: the list of choices is empty")
        return Space(key, "choice", choices=tuple(text))
    match = _RANGE.match(str(text).strip())
    if not match:
        raise CompressError(
            f"search {key}={text!r}: expected (low, high), log(low, high), int(low, high) "
            'or a list of choices such as ["a", "b"]'
        )
    kind = match.group(1) or "uniform"
    low, high = float(match.group(2)), float(match.group(3))
    if kind == "int":
        if not (low.is_integer() and high.is_integer()):
            raise CompressError(f"search {key}={text}: int(low, high) takes whole numbers")
        low, high = int(low), int(high)
    if not low < high:
        raise CompressError(f"search {key}={text}: low ({low:g}) must be below high ({high:g})")
    if kind == "log" and low <= 0:
        raise CompressError(f"search {key}={text}: log(low, high) needs low > 0")
    return Space(key, kind, low, high)


def parse_param(spec: str) -> Space:
    """`--param KEY=SPACE`."""
    key, sep, text = spec.partition("=")
    if not sep or not key.strip() or not text.strip():
        raise CompressError(
            f"--param {spec!r}: expected KEY=SPACE, e.g. prune.threshold=(0.005,0.08)"
        )
    return parse_space(key, text)


def search_spaces(config: PipelineConfig, params: list[str] = ()) -> dict[str, Space]:
    """The pipeline's [search] table with --param options added (a --param replaces the
    same key); every corner of every space is checked against the pipeline now."""
    spaces = {key: parse_space(key, value) for key, value in config.search.items()}
    for spec in params:
        space = parse_param(spec)
        spaces[space.key] = space
    if not spaces:
        raise CompressError(
            "nothing to search: give --param KEY=SPACE or a [search] table in the pipeline file"
        )
    for space in spaces.values():
        values = list(space.choices) if space.kind == "choice" else [space.low, space.high]
        for value in values:
            try:
                config.with_overrides({space.key: value})
            except CompressError as exc:
                raise CompressError(f"search {space.key}={space.describe()}: {exc}") from None
    return spaces


def suggest(trial, space: Space) -> Any:
    """Draw a value for `space` from an Optuna trial (choices travel as JSON strings, since
    Optuna's categorical values must be plain scalars)."""
    if space.kind == "choice":
        return json.loads(
            trial.suggest_categorical(space.key, [json.dumps(c) for c in space.choices])
        )
    if space.kind == "int":
        return trial.suggest_int(space.key, space.low, space.high)
    value = trial.suggest_float(space.key, space.low, space.high, log=space.kind == "log")
    return float(f"{value:.{FLOAT_DIGITS}g}")


def file_settings(config: PipelineConfig, spaces: dict[str, Space]) -> dict[str, Any] | None:
    """The pipeline file's own value of every searched key, when each lies in its space
    (else None): the search starts from it, a known point that costs nothing, since the
    reference run has already made every one of its stages."""
    data = config.model_dump(by_alias=True)
    values = {}
    for key, space in spaces.items():
        node: Any = data
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        inside = (
            node in space.choices
            if space.kind == "choice"
            else isinstance(node, (int, float))
            and not isinstance(node, bool)
            and space.low <= node <= space.high
            and (space.kind != "int" or float(node).is_integer())
        )
        if not inside:
            return None
        values[key] = node
    return values
