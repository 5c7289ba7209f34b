"""Does an artifact fit a device: its row of report.json against [budget] limits.

    limits = Limits(flash_kb=256, ram_kb=64, max_drop=0.5)    # or limits_of(config.budget)
    misses(row, limits, drop=0.1)   # ["ram 12.3 KB over"]: empty when it fits
    violation(row, limits, drop)    # how far over, summed in fractions of each limit (0: fits)

Sizes are KB of 1024 bytes (as device datasheets count them): flash is the .onnx file
(`flash_bytes`), RAM the weights held plus the activation peak (`ram_bytes`), activation the
peak alone (`peak_activation_bytes`); latency the batch-1 p50 on this machine, in ms or as a
multiple of dense's; `max_drop` the validation accuracy points below the dense model. A
limit whose figure the row lacks (an older report, a graph not estimated) is missed:
"ram unknown".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

KB = 1024


@dataclass(frozen=True)
class Limits:
    flash_kb: float | None = None
    ram_kb: float | None = None
    activation_kb: float | None = None
    latency_ms: float | None = None
    latency_vs_dense: float | None = None
    max_drop: float | None = None

    def any(self) -> bool:
        return any(value is not None for value in asdict(self).values())


# limit -> (artifact key, what a byte or ms of it is in the limit's unit, label, unit)
SIZES = {
    "flash_kb": ("flash_bytes", 1 / KB, "flash", "KB"),
    "ram_kb": ("ram_bytes", 1 / KB, "ram", "KB"),
    "activation_kb": ("peak_activation_bytes", 1 / KB, "activation", "KB"),
    "latency_ms": ("latency_ms_b1_p50", 1.0, "latency", "ms"),
    "latency_vs_dense": ("latency_vs_dense", 1.0, "latency", "x dense"),
}


# What tune and search keep of each artifact to check device limits on.
DEVICE_KEYS = ("flash_bytes", "ram_bytes", "peak_activation_bytes", "latency_vs_dense")


def split_limits(budget: float | Limits | None) -> tuple[float | None, Limits | None]:
    """(accuracy budget in points, device limits or None) of a plain `max_drop` or a Limits."""
    if not isinstance(budget, Limits):
        return budget, None
    device = Limits(**{**asdict(budget), "max_drop": None})
    return budget.max_drop, device if device.any() else None


def limits_of(section) -> Limits:
    """Limits from a [budget] section (compress.sections.BudgetConfig) or any object with
    those attributes."""
    return Limits(**{key: getattr(section, key, None) for key in asdict(Limits())})


def overs(row: dict, limits: Limits, drop: float | None) -> dict[str, tuple]:
    """limit -> (how far over in its unit, or None when the figure is unknown; label; unit)
    of each limit the row misses."""
    out = {}
    for limit, (key, scale, label, unit) in SIZES.items():
        allowed = getattr(limits, limit)
        if allowed is None:
            continue
        value = row.get(key)
        if value is None:
            out[limit] = (None, label, unit)
        elif value * scale > allowed + 1e-9:
            out[limit] = (value * scale - allowed, label, unit)
    if limits.max_drop is not None:
        if drop is None:
            out["max_drop"] = (None, "accuracy", "pts")
        elif drop > limits.max_drop + 1e-9:
            out["max_drop"] = (drop - limits.max_drop, "accuracy", "pts")
    return out


def misses(row: dict, limits: Limits, drop: float | None = None) -> list[str]:
    """What the row misses, one phrase a limit ("ram 12.3 KB over", "flash unknown"); empty
    when it fits. `drop`: its validation points below dense (for `max_drop`)."""
    phrases = []
    for over, label, unit in overs(row, limits, drop).values():
        if over is None:
            phrases.append(f"{label} unknown")
        else:
            sep = "" if unit.startswith("x") else " "
            phrases.append(f"{label} {over:.{_digits(unit)}f}{sep}{unit} over")
    return phrases


def violation(row: dict, limits: Limits, drop: float | None = None) -> float:
    """How far the row is from fitting: each missed limit's excess as a fraction of the limit,
    summed (an unknown figure counts 1); 0.0 when it fits. What tune and search record for a
    trial outside the budget, the way they record an accuracy drop beyond it."""
    total = 0.0
    for limit, (over, _, _) in overs(row, limits, drop).items():
        allowed = getattr(limits, limit)
        total += 1.0 if over is None else over / max(allowed, 1e-9)
    return total


def _digits(unit: str) -> int:
    return {"KB": 1, "ms": 3, "x dense": 2, "pts": 2}[unit]


def check_artifacts(artifacts: list[dict], limits: Limits, baseline: str = "dense") -> None:
    """Give each artifact row its `budget`: `{fits, misses}` (drop on validation against the
    baseline row); a failed artifact never fits."""
    base = next((a for a in artifacts if a["name"] == baseline), artifacts[0])
    for row in artifacts:
        drop = None
        if row.get("val_accuracy") is not None and base.get("val_accuracy") is not None:
            drop = round(100 * (base["val_accuracy"] - row["val_accuracy"]), 4)
        missed = misses(row, limits, drop)
        failed = str(row.get("status", "ok")).startswith("failed")
        row["budget"] = {"fits": not missed and not failed, "misses": missed}


def fitting(artifacts: list[dict]) -> list[dict]:
    """The artifacts whose `budget` says they fit."""
    return [a for a in artifacts if (a.get("budget") or {}).get("fits")]


def budget_lines(artifacts: list[dict]) -> list[str]:
    """One line per artifact that misses the budget: "pruned: ram 12.3 KB over, flash ..."."""
    return [
        f"{a['name']}: {', '.join(a['budget']['misses']) or 'verification failed'}"
        for a in artifacts
        if a.get("budget") and not a["budget"]["fits"]
    ]
