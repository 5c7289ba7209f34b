"""The benchmark's table: rows, the machine description, and their text/Markdown/JSON forms.

rows = [Row("train epoch", 2.1, unit="s", baseline=9.8, ratio=4.7, target=">= 4x", passed=True)]
print(format_text(describe_machine(), rows))
write_outputs(Path("runs/bench"), describe_machine(), settings, rows)
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HEADERS = ("figure", "value", "baseline", "ratio", "target", "result", "notes")
THREAD_ENV = (
    "OMP_NUM_THREADS",
    "OMP_WAIT_POLICY",
    "MKL_NUM_THREADS",
)  # change what CPU timings mean


@dataclass
class Row:
    """One figure: its value, what it is compared with, and whether it meets its target."""

    figure: str
    value: float | None
    unit: str = ""
    baseline: float | None = None
    ratio: float | None = None
    fmt: str = "{:.3f}"  # for value and baseline
    ratio_fmt: str = "{:.2f}x"
    target: str = "-"
    passed: bool | None = None  # None: no target, or not measured
    note: str = ""
    samples: dict[str, Any] = field(default_factory=dict)  # the individual runs (JSON only)

    @property
    def result(self) -> str:
        if self.value is None:
            return "skipped"
        return "-" if self.passed is None else ("pass" if self.passed else "FAIL")

    def cells(self) -> list[str]:
        unit = f" {self.unit}" if self.unit else ""
        number = lambda v: "-" if v is None else self.fmt.format(v) + unit  # noqa: E731
        ratio = "-" if self.ratio is None else self.ratio_fmt.format(self.ratio)
        return [
            self.figure,
            number(self.value),
            number(self.baseline),
            ratio,
            self.target,
            self.result,
            self.note,
        ]


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_machine() -> dict[str, Any]:
    """CPU, cores, load and library versions: what the timings depend on."""
    import onnxruntime
    import torch
    import torchvision

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "not available"
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(x, 2) for x in os.getloadavg()]
        if hasattr(os, "getloadavg")
        else None,
        "gpu": gpu,
        "thread_env": {k: os.environ[k] for k in THREAD_ENV if k in os.environ},
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def machine_lines(machine: dict[str, Any]) -> list[str]:
    load = machine.get("load_average")
    env = "".join(f", {k}={v}" for k, v in machine.get("thread_env", {}).items())
    return [
        f"CPU: {machine['cpu']}, {machine['cores']} cores ({machine['usable_cores']} usable), "
        f"torch threads {machine['torch_threads']}{env}, load average at start {load or '-'}",
        f"GPU: {machine['gpu']}",
        f"python {machine['python']}, torch {machine['torch']}, "
        f"torchvision {machine['torchvision']}, "
        f"onnxruntime {machine['onnxruntime']} ({machine['platform']})",
    ]


def format_text(machine: dict[str, Any], rows: list[Row], title: str = "compress benchmark") -> str:
    cells = [list(HEADERS)] + [r.cells() for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADERS))]
    line = lambda c: "  ".join(  # noqa: E731
        v.ljust(w) if i in (0, 4, 5, 6) else v.rjust(w)
        for i, (v, w) in enumerate(zip(c, widths, strict=True))
    ).rstrip()
    table = [line(cells[0]), "  ".join("-" * w for w in widths), *map(line, cells[1:])]
    return "\n".join([title, *machine_lines(machine), "", *table])


def format_markdown(
    machine: dict[str, Any], rows: list[Row], title: str = "compress benchmark"
) -> str:
    escape = lambda s: s.replace("|", "\\|")  # noqa: E731
    lines = [f"# {title}", "", *(f"- {line}" for line in machine_lines(machine)), ""]
    lines += ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(escape(c) for c in r.cells()) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def to_json(machine: dict[str, Any], settings: dict[str, Any], rows: list[Row]) -> dict[str, Any]:
    return {
        "machine": machine,
        "settings": settings,
        "rows": [{**asdict(r), "result": r.result} for r in rows],
    }


def write_outputs(out_dir: Path, machine: dict, settings: dict, rows: list[Row]) -> list[Path]:
    """bench.json and bench.md in `out_dir`; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "bench.json", out_dir / "bench.md"
    json_path.write_text(json.dumps(to_json(machine, settings, rows), indent=2) + "\n")
    md_path.write_text(format_markdown(machine, rows))
    return [json_path, md_path]
