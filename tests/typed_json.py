"""A small checker of JSON against the TypedDicts of compress.results: every required key
present, no key the definition lacks, each value of its declared type.

    assert mismatches(json.loads(text), Sweep) == []
"""

from __future__ import annotations

import types
import typing
from typing import Any, NotRequired, Required, get_args, get_origin, get_type_hints


def _strip(hint: Any) -> Any:
    """The type under Annotated, NotRequired and Required."""
    while True:
        origin = get_origin(hint)
        if origin is typing.Annotated:
            hint = get_args(hint)[0]
        elif origin in (NotRequired, Required):
            hint = get_args(hint)[0]
        else:
            return hint


def _is_typeddict(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, dict) and hasattr(hint, "__required_keys__")


def mismatches(value: Any, hint: Any, where: str = "$") -> list[str]:
    """Where `value` (parsed JSON) differs from `hint`; [] when it conforms."""
    hint = _strip(hint)
    origin = get_origin(hint)
    if hint is Any:
        return []
    if origin in (typing.Union, types.UnionType):
        found = [mismatches(value, option, where) for option in get_args(hint)]
        return [] if any(not f for f in found) else [f"{where}: {value!r} is none of {hint}"]
    if hint is type(None):
        return [] if value is None else [f"{where}: {value!r} is not null"]
    if _is_typeddict(hint):
        if not isinstance(value, dict):
            return [f"{where}: {type(value).__name__} is not an object ({hint.__name__})"]
        hints = get_type_hints(hint, include_extras=True)
        out = [
            f"{where}: missing {key!r} ({hint.__name__})"
            for key in sorted(hint.__required_keys__)
            if key not in value
        ]
        out += [
            f"{where}: {key!r} is no key of {hint.__name__}" for key in value if key not in hints
        ]
        for key, item in value.items():
            if key in hints:
                out += mismatches(item, hints[key], f"{where}.{key}")
        return out
    if origin is list:
        if not isinstance(value, list):
            return [f"{where}: {type(value).__name__} is not a list"]
        (item,) = get_args(hint) or (Any,)
        return [m for i, v in enumerate(value) for m in mismatches(v, item, f"{where}[{i}]")]
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            return [f"{where}: {type(value).__name__} is not an object"]
        _, item = get_args(hint) or (str, Any)
        return [m for k, v in value.items() for m in mismatches(v, item, f"{where}.{k}")]
    if hint is float:  # JSON writes a whole float as an int only when it was one
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, hint)
    return [] if ok else [f"{where}: {value!r} is not {getattr(hint, '__name__', hint)}"]
