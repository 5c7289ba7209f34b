"""Report: the size/accuracy/latency table of a run, in the terminal, Markdown, CSV and JSON.

    report = build_report(run_dir)      # reads only the run folder
    print(format_table(report))

`report.json` is a stable interface (see README, "report.json"): accuracy is a fraction in
0..1, sizes are bytes, latency milliseconds, throughput samples per second.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from compress.files import read_json, write_json, write_text

# (key, header, format) of the columns shown in the terminal and Markdown tables.
COLUMNS = [
    ("name", "artifact", "{}"),
    ("val_accuracy", "val %", "{:.2%}"),
    ("accuracy", "test %", "{:.2%}"),
    ("accuracy_delta", "Δ pts", "{:+.2f}"),
    ("bytes", "bytes", "{:,}"),
    ("gzip_bytes", "gzip", "{:,}"),
    ("deploy_bytes", "deploy", "{:,}"),
    ("compression", "ratio", "{:.1f}x"),
    ("sparsity", "sparsity", "{:.1%}"),
    ("latency_ms_b1_p50", "p50 ms", "{:.3f}"),
    ("latency_ms_b1_p95", "p95 ms", "{:.3f}"),
    ("latency_vs_dense", "vs dense", "{:.2f}x"),
    ("slower_than_dense", "slower", "{}"),
    ("macs", "MACs", "{:,}"),
    ("weight_bytes", "weights held", "{:,}"),
    ("throughput", "img/s", "{:,.0f}"),
    ("min_onnxruntime", "ort ≥", "{}"),  # the oldest onnxruntime that loads the file
    ("status", "status", "{}"),
]
CSV_FIELDS = [
    "name", "path", "val_accuracy", "accuracy", "accuracy_delta", "bytes", "gzip_bytes", "xz_bytes", "deploy_bytes",
    "deploy_form", "deploy_path", "compression", "params", "nonzero_params", "sparsity", "agreement",
    "max_logit_diff", "latency_ms_b1_p50", "latency_ms_b1_p95", "latency_vs_dense", "slower_than_dense",
    "macs", "weight_bytes", "throughput", "status",
    "weights", "nonzero_weights", "min_onnxruntime", "ir_version", "opset",
]


def add_comparisons(artifacts: list[dict], baseline: str = "dense") -> None:
    """Ratio of the baseline's .onnx bytes to each deployable package; accuracy change in points."""
    base = next((a for a in artifacts if a["name"] == baseline), artifacts[0])
    for a in artifacts:
        a["compression"] = round(base["bytes"] / a["deploy_bytes"], 2)
        a["accuracy_delta"] = round(100 * (a["accuracy"] - base["accuracy"]), 2)


def format_cell(value: Any, fmt: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):  # a flag: shown only where it is raised
        return "SLOWER" if value else ""
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def table_rows(artifacts: list[dict], columns=COLUMNS) -> tuple[list[str], list[list[str]]]:
    headers = [header for _, header, _ in columns]
    rows = [[format_cell(a.get(key), fmt) for key, _, fmt in columns] for a in artifacts]
    return headers, rows


def format_table(report: dict, columns=COLUMNS) -> str:
    headers, rows = table_rows(report["artifacts"], columns)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(  # noqa: E731
        c.ljust(w) if i == 0 or c.startswith(("ok", "failed")) else c.rjust(w)
        for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    )
    lines = [line(headers), "  ".join("-" * w for w in widths), *map(line, rows)]
    ds = report["dataset"]
    title = f"{report['pipeline']} ({report.get('model', '')}) on {ds['name']}, {_samples(ds)}"
    note = (
        "latency: all artifacts timed interleaved in one process; weights held: bytes a session keeps\n"
        "ratio = dense .onnx bytes / deploy bytes (smaller of .onnx.gz and .onnx.xz)"
    )
    return "\n".join([title, *lines, note])


def _samples(dataset: dict) -> str:
    val = dataset.get("val_samples")
    held = f"{val:,} validation and " if val is not None else ""
    return f"{held}{dataset['test_samples']:,} test samples"


def format_markdown(report: dict, columns=COLUMNS) -> str:
    headers, rows = table_rows(report["artifacts"], columns)
    out = [f"# {report['pipeline']}", ""]
    ds = report["dataset"]
    out.append(
        f"Model `{report.get('model', '')}` on {ds['name']} ({_samples(ds)}), "
        f"measured in onnxruntime {report['versions']['onnxruntime']} on {report['device']}."
    )
    out += ["", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    out += ["", "ratio = dense .onnx bytes / deploy bytes (the smaller of .onnx.gz and .onnx.xz)."]
    out += [
        "Latency: batch 1, all artifacts timed interleaved in rounds in one process; SLOWER: p50 more "
        "than the verify margin above dense's. Weights held: initializer bytes an onnxruntime "
        "session keeps after its load-time folding.",
        "",
    ]
    out += ["## Stages", "", "| stage | seconds | cached |", "|---|---|---|"]
    out += [f"| {s['name']} | {s['seconds']:.1f} | {'yes' if s['cached'] else 'no'} |" for s in report["stages"]]
    return "\n".join(out) + "\n"


def format_csv(report: dict) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for a in report["artifacts"]:
        writer.writerow(a)
    return buffer.getvalue()


def write_reports(run_dir: Path, report: dict) -> None:
    write_json(run_dir / "report.json", report)
    write_text(run_dir / "report.md", format_markdown(report))
    write_text(run_dir / "report.csv", format_csv(report))


def load_report(run_dir: Path) -> dict:
    from compress.errors import CompressError

    path = Path(run_dir) / "report.json"
    if not path.is_file():
        raise CompressError(f"{path} does not exist: is {run_dir} a finished run folder?")
    try:
        report = read_json(path)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise CompressError(f"{path} is not valid JSON ({exc}): run the pipeline again to rewrite it") from None
    if not isinstance(report, dict) or not isinstance(report.get("artifacts"), list):
        raise CompressError(f"{path} is not a compress report (no artifacts list)")
    return report
