"""Report: the size/accuracy/latency table of a run, in the terminal, Markdown, CSV and JSON.

    report = load_report(run_dir)       # reads only the run folder
    print(format_table(report))

`report.json` is a stable interface, typed in compress.results (Report, Artifact): accuracy
is a fraction in 0..1, sizes are bytes, latency milliseconds, throughput samples per second.
"""

from __future__ import annotations

from pathlib import Path

from compress import tables
from compress.errors import CompressError
from compress.files import read_json, write_json, write_text
from compress.results import DENSE, Artifact, Report, baseline_of, compression_ratio, delta_pts

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
    ("slower_than_dense", "slower", lambda slower: "SLOWER" if slower else ""),  # a flag: shown where raised
    ("macs", "MACs", "{:,}"),
    ("weight_bytes", "weights held", "{:,}"),
    ("throughput", "img/s", "{:,.0f}"),
    ("min_onnxruntime", "ort ≥", "{}"),  # the oldest onnxruntime that loads the file
    ("status", "status", "{}"),
]
CSV_FIELDS = [
    "name", "path", "val_accuracy", "accuracy", "accuracy_delta", "accuracy_delta_ci", "bytes", "gzip_bytes",
    "xz_bytes", "deploy_bytes",
    "deploy_form", "deploy_path", "compression", "params", "nonzero_params", "sparsity", "agreement",
    "max_logit_diff", "latency_ms_b1_p50", "latency_ms_b1_p95", "latency_vs_dense", "slower_than_dense",
    "macs", "weight_bytes", "throughput", "status",
    "weights", "nonzero_weights", "min_onnxruntime", "ir_version", "opset",
]


def add_comparisons(artifacts: list[Artifact], baseline: str = DENSE) -> None:
    """Ratio of the baseline's .onnx bytes to each deployable package; accuracy change in points."""
    base = baseline_of(artifacts, baseline)
    for a in artifacts:
        a["compression"] = compression_ratio(base, a)
        a["accuracy_delta"] = delta_pts(base, a)


def table_rows(artifacts: list[Artifact], columns=COLUMNS) -> tuple[list[str], list[list[str]]]:
    headers, rows = tables.cells(columns, artifacts)
    keys = [key for key, _, _ in columns]
    if "accuracy_delta" in keys:  # the change is shown with its interval where verify measured one
        i = keys.index("accuracy_delta")
        for row, artifact in zip(rows, artifacts, strict=True):
            if artifact.get("accuracy_delta_ci") and artifact.get("accuracy_delta") is not None:
                row[i] = format_delta(artifact["accuracy_delta"], artifact["accuracy_delta_ci"])
    return headers, rows


def format_delta(delta: float | None, interval: list[float] | None) -> str:
    """Accuracy change in points with its 95% interval, e.g. "-0.04 [-0.12, +0.03]"."""
    if delta is None:
        return "-"
    text = f"{delta:+.2f}"
    return f"{text} [{interval[0]:+.2f}, {interval[1]:+.2f}]" if interval else text


def format_table(report: Report, columns=COLUMNS) -> str:
    headers, rows = table_rows(report["artifacts"], columns)
    # the artifact name and the status read left to right; numbers line up on the right
    lines = tables.text(headers, rows, left=lambda i, cell: i == 0 or cell.startswith(("ok", "failed", "warning")), strip=True)
    ds = report["dataset"]
    title = f"{report['pipeline']} ({report.get('model', '')}) on {ds['name']}, {_samples(ds)}"
    note = (
        "latency: all artifacts timed interleaved in one process; weights held: bytes a session keeps\n"
        "Δ pts [95% CI]: paired bootstrap over the test images; "
        "ratio = dense .onnx bytes / deploy bytes (smaller of .onnx.gz and .onnx.xz)"
    )
    return "\n".join([title, *lines, note, *inputs_lines(report)])


def inputs_lines(report: dict, max_names: int = 12) -> list[str]:
    """"pruned model uses 9 of 30 features: a, b, ..." (nothing when unknown)."""
    inputs = report.get("inputs")
    if not inputs:
        return []
    if inputs.get("unit") == "channels" and inputs["used"] == inputs["total"]:
        return []  # a convolution reads every pixel: "uses 3 of 3 channels" says nothing
    text = f"pruned model uses {inputs['used']:,} of {inputs['total']:,} {inputs.get('unit', 'inputs')}"
    names = inputs.get("names")
    if names:
        more = f", ... ({len(names) - max_names} more)" if len(names) > max_names else ""
        text += ": " + ", ".join(names[:max_names]) + more
    return [text]


def _samples(dataset: dict) -> str:
    val = dataset.get("val_samples")
    held = f"{val:,} validation and " if val is not None else ""
    return f"{held}{dataset['test_samples']:,} test samples"


def format_markdown(report: Report, columns=COLUMNS) -> str:
    headers, rows = table_rows(report["artifacts"], columns)
    out = [f"# {report['pipeline']}", ""]
    ds = report["dataset"]
    out.append(
        f"Model `{report.get('model', '')}` on {ds['name']} ({_samples(ds)}), "
        f"measured in onnxruntime {report['versions']['onnxruntime']} on {report['device']}."
    )
    out += ["", *tables.markdown(headers, rows)]
    out += ["", "ratio = dense .onnx bytes / deploy bytes (the smaller of .onnx.gz and .onnx.xz). "
            "Δ pts [95% CI]: the paired bootstrap interval of the accuracy difference to dense over the "
            "test images (2,000 resamples)."]
    out += [
        "Latency: batch 1, all artifacts timed interleaved in rounds in one process; SLOWER: p50 more "
        "than the verify margin above dense's. Weights held: initializer bytes an onnxruntime "
        "session keeps after its load-time folding.",
        "",
    ]
    out += [f"The {line}.\n" for line in inputs_lines(report)]
    stages = [[s["name"], f"{s['seconds']:.1f}", "yes" if s["cached"] else "no"] for s in report["stages"]]
    out += ["## Stages", "", *tables.markdown(["stage", "seconds", "cached"], stages)]
    return "\n".join(out) + "\n"


def format_csv(report: Report) -> str:
    return tables.csv_text(CSV_FIELDS, report["artifacts"])


def write_reports(run_dir: Path, report: Report) -> None:
    write_json(run_dir / "report.json", report)
    write_text(run_dir / "report.md", format_markdown(report))
    write_text(run_dir / "report.csv", format_csv(report))


def load_report(run_dir: Path) -> Report:
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
