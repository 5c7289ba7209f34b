"""Report: the size/accuracy/latency table of a run, in the terminal, Markdown, CSV and JSON.

    report = load_report(run_dir)       # reads only the run folder
    print(format_table(report, 80))     # the compact table, fitted to 80 columns
    print(format_table(report))         # every column (`compress report --wide`)

`report.json` is a stable interface, typed in compress.results (Report, Artifact): accuracy
is a fraction in 0..1, sizes are bytes, latency milliseconds, throughput samples per second.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from compress import tables
from compress.errors import CompressError
from compress.files import read_json, write_json, write_text
from compress.results import DENSE, Artifact, Report, baseline_of, compression_ratio, delta_pts

# (key, header, format) of the columns of the wide terminal table and of report.md.
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
    (
        "slower_than_dense",
        "slower",
        lambda slower: "SLOWER" if slower else "",
    ),  # a flag: shown where raised
    ("macs", "MACs", "{:,}"),
    ("weight_bytes", "weights held", "{:,}"),
    ("flash_bytes", "flash", "{:,}"),  # the .onnx file as stored
    ("peak_activation_bytes", "act peak", "{:,}"),
    ("ram_bytes", "RAM est", "{:,}"),  # weights held + act peak
    ("measured_ram_bytes", "RAM meas", "{:,}"),
    ("throughput", "img/s", "{:,.0f}"),  # "rows/s" for tables (columns_for)
    ("min_onnxruntime", "ort ≥", "{}"),  # the oldest onnxruntime that loads the file
    ("budget", "budget", lambda b: "fits" if b["fits"] else "; ".join(b["misses"]) or "-"),
    ("status", "status", "{}"),
]
THROUGHPUT = {"image": "img/s", "table": "rows/s", "array": "samples/s", "audio": "clips/s"}
SAMPLES = {"image": "images", "table": "rows", "array": "samples", "audio": "clips"}
TEXT_KEYS = ("name", "budget", "status")  # left-aligned; numbers line up on the right

# The terminal's default table answers: how accurate (val, test, the change with its
# interval), how small once deployed (deploy bytes, ratio, sparsity), as fast as dense
# (vs dense, with SLOWER beside it) and did it pass (status). The rest (.onnx and gzip bytes,
# absolute latencies, MACs, weights held, throughput, ort ≥) is in `--wide`, report.md and
# report.csv.
COMPACT = [
    "name",
    "val_accuracy",
    "accuracy",
    "accuracy_delta",
    "deploy_bytes",
    "compression",
    "sparsity",
    "latency_vs_dense",
    "budget",
    "status",
]
# What a narrower terminal leaves out, one step at a time: the first goes first. The name,
# test %, deploy bytes and status always stay; a status too long is cut short ("…").
NARROWER = [
    "val_accuracy",
    "interval",
    "sparsity",
    "latency_vs_dense",
    "compression",
    "accuracy_delta",
]
MIN_STATUS = 16  # a status is cut no shorter than this ("failed: logits …") before a column goes
CSV_FIELDS = [
    "name",
    "path",
    "val_accuracy",
    "accuracy",
    "accuracy_delta",
    "accuracy_delta_ci",
    "bytes",
    "gzip_bytes",
    "xz_bytes",
    "deploy_bytes",
    "deploy_form",
    "deploy_path",
    "compression",
    "params",
    "nonzero_params",
    "sparsity",
    "agreement",
    "max_logit_diff",
    "latency_ms_b1_p50",
    "latency_ms_b1_p95",
    "latency_vs_dense",
    "latency_vs_dense_low",
    "latency_vs_dense_high",
    "slower_than_dense",
    "macs",
    "weight_bytes",
    "flash_bytes",
    "peak_activation_bytes",
    "ram_bytes",
    "measured_ram_bytes",
    "throughput",
    "status",
    "weights",
    "nonzero_weights",
    "min_onnxruntime",
    "ir_version",
    "opset",
]


def add_comparisons(artifacts: list[Artifact], baseline: str = DENSE) -> None:
    """Ratio of the baseline's .onnx bytes to each deployable package; accuracy change in points."""
    base = baseline_of(artifacts, baseline)
    for a in artifacts:
        a["compression"] = compression_ratio(base, a)
        a["accuracy_delta"] = delta_pts(base, a)


def columns_for(report: Report, columns=COLUMNS) -> list:
    """`columns` with the throughput named for the data: img/s for images, rows/s for tables."""
    header = THROUGHPUT.get(data_kind(report), "samples/s")
    budgeted = any("budget" in a for a in report["artifacts"])  # the column only with [budget]
    return [
        (key, header if key == "throughput" else h, fmt)
        for key, h, fmt in columns
        if key != "budget" or budgeted
    ]


def data_kind(report: Report) -> str:
    """ "image" or "table" (reports before dataset.kind: a model reading features is on a table)."""
    kind = report["dataset"].get("kind")
    if kind:
        return kind
    return "table" if (report.get("inputs") or {}).get("unit") == "features" else "image"


def table_rows(
    artifacts: list[Artifact], columns=COLUMNS, interval: bool = True
) -> tuple[list[str], list[list[str]]]:
    """Headers and cells: Δ pts with its interval where verify measured one (unless not
    `interval`), and SLOWER beside `vs dense` when the slower column is not shown."""
    headers, rows = tables.cells(columns, artifacts)
    keys = [key for key, _, _ in columns]
    if "accuracy_delta" in keys and interval:
        i = keys.index("accuracy_delta")
        for row, artifact in zip(rows, artifacts, strict=True):
            if artifact.get("accuracy_delta_ci") and artifact.get("accuracy_delta") is not None:
                row[i] = format_delta(artifact["accuracy_delta"], artifact["accuracy_delta_ci"])
    if "latency_vs_dense" in keys:
        i = keys.index("latency_vs_dense")
        for row, artifact in zip(rows, artifacts, strict=True):
            if interval and artifact.get("latency_vs_dense_low") is not None:
                row[i] = format_speed(artifact)
            if artifact.get("slower_than_dense") and "slower_than_dense" not in keys:
                row[i] += " SLOWER"
    return headers, rows


def format_speed(artifact: Artifact) -> str:
    """Latency over dense's with its 95% interval over the rounds, e.g. "0.62x [0.58, 0.66]"."""
    low, high = artifact["latency_vs_dense_low"], artifact["latency_vs_dense_high"]
    return f"{artifact['latency_vs_dense']:.2f}x [{low:.2f}, {high:.2f}]"


def format_delta(delta: float | None, interval: list[float] | None) -> str:
    """Accuracy change in points with its 95% interval, e.g. "-0.04 [-0.12, +0.03]"."""
    if delta is None:
        return "-"
    text = f"{delta:+.2f}"
    return f"{text} [{interval[0]:+.2f}, {interval[1]:+.2f}]" if interval else text


def format_table(report: Report, width: int | None = None) -> str:
    """The terminal table. `width` None: every column (`compress report --wide`); a number of
    columns: the compact table (COMPACT), narrowed (NARROWER) until it fits, title and
    notes wrapped to it."""
    columns = columns_for(report)
    if width is None:
        shown, interval = [key for key, _, _ in columns], True
        lines = _aligned(report["artifacts"], columns, interval)
    else:
        shown, interval, lines = _fitted(report["artifacts"], columns, width)
    ds = report["dataset"]
    title = (
        f"{report['pipeline']} ({report.get('model', '')}) on {ds['name']}, "
        f"{_samples(ds, data_kind(report))}"
    )
    notes = _notes(report, shown, interval)
    if len(shown) < len(columns):
        notes.append("all columns: compress report RUN_DIR --wide, or report.md")
    size = min(width or 1_000, max(80, tables.width(lines)))  # prose no wider than the table
    below = [
        *_packed(notes, size),
        *(part for line in inputs_lines(report) for part in _wrap(line, size)),
    ]
    return "\n".join([*_wrap(title, size), *lines, *below])


def _notes(report: Report, shown: list[str], interval: bool) -> list[str]:
    """What the columns shown mean, where their header cannot say it."""
    notes = []
    if {"latency_ms_b1_p50", "latency_ms_b1_p95", "latency_vs_dense"} & set(shown):
        notes.append(
            "latency: all artifacts timed interleaved in one process"
            + ("; vs dense [95% CI over the rounds]" if interval else "")
        )
    if "weight_bytes" in shown:
        notes.append("weights held: bytes a session keeps")
    if "ram_bytes" in shown:
        notes.append("RAM est = weights held + act peak (batch 1); where: compress report --memory")
    if "accuracy_delta" in shown:
        words = SAMPLES.get(data_kind(report), "samples")
        notes.append(
            f"Δ pts [95% CI]: paired bootstrap over the test {words}"
            if interval
            else "Δ pts: change of test % against dense, in points"
        )
    if "compression" in shown:
        notes.append("ratio = dense .onnx bytes / deploy bytes (smaller of .onnx.gz and .onnx.xz)")
    return notes


def _aligned(
    artifacts: list[Artifact], columns: list, interval: bool, status_size: int | None = None
) -> list[str]:
    headers, rows = table_rows(artifacts, columns, interval)
    keys = [key for key, _, _ in columns]
    if status_size is not None and "status" in keys:
        i = keys.index("status")
        for row in rows:
            row[i] = tables.shorten(row[i], status_size)
    return tables.text(headers, rows, left=[key in TEXT_KEYS for key in keys], strip=True)


def _fitted(
    artifacts: list[Artifact], columns: list, width: int
) -> tuple[list[str], bool, list[str]]:
    """(keys shown, whether Δ has its interval, lines) of the widest compact table that fits
    `width` columns; the narrowest one when none does."""
    for step in range(len(NARROWER) + 1):
        left_out = NARROWER[:step]
        kept = [c for c in columns if c[0] in COMPACT and c[0] not in left_out]
        interval = "interval" not in left_out
        headers, rows = table_rows(artifacts, kept, interval)
        sizes = tables.widths(headers, rows)
        status = [key for key, _, _ in kept].index("status")
        room = width - sum(s for i, s in enumerate(sizes) if i != status) - 2 * (len(kept) - 1)
        if room >= min(sizes[status], max(MIN_STATUS, len(headers[status]))) or step == len(
            NARROWER
        ):
            lines = _aligned(artifacts, kept, interval, status_size=max(room, len(headers[status])))
            return [key for key, _, _ in kept], interval, lines
    raise AssertionError("unreachable: the last step always returns")


def _packed(notes: list[str], width: int) -> list[str]:
    """Notes joined by "; " into lines of at most `width` (a note too long alone is wrapped)."""
    lines: list[str] = []
    for note in notes:
        if lines and len(lines[-1]) + 2 + len(note) <= width:
            lines[-1] += "; " + note
        else:
            lines += _wrap(note, width)
    return lines


def _wrap(text: str, width: int) -> list[str]:
    """A line of prose wrapped to `width` (a word longer than that stays whole)."""
    if len(text) <= width:
        return [text] if text else []
    return textwrap.wrap(text, width, break_long_words=False, break_on_hyphens=False)


def inputs_lines(report: dict, max_names: int = 12) -> list[str]:
    """ "pruned model uses 9 of 30 features: a, b, ..." (nothing when unknown)."""
    inputs = report.get("inputs")
    if not inputs:
        return []
    if inputs.get("unit") == "channels" and inputs["used"] == inputs["total"]:
        return []  # a convolution reads every pixel: "uses 3 of 3 channels" says nothing
    text = (
        f"pruned model uses {inputs['used']:,} of {inputs['total']:,} "
        f"{inputs.get('unit', 'inputs')}"
    )
    names = inputs.get("names")
    if names:
        more = f", ... ({len(names) - max_names} more)" if len(names) > max_names else ""
        text += ": " + ", ".join(names[:max_names]) + more
    return [text]


def _samples(dataset: dict, kind: str = "image") -> str:
    """ "5,999 validation and 10,000 test samples" (rows, for a table)."""
    word = "rows" if kind == "table" else "samples"
    val = dataset.get("val_samples")
    held = f"{val:,} validation and " if val is not None else ""
    return f"{held}{dataset['test_samples']:,} test {word}"


def memory_lines(report: Report, run_dir: Path, artifact: str | None = None) -> list[str]:
    """`compress report RUN --memory`: each artifact's (or the one named) per-node activation
    memory and weights, from its .onnx file in the run folder (compress.encode.memory)."""
    import onnx

    from compress.encode.memory import MemoryEstimateError, activation_memory, node_lines

    rows = report["artifacts"]
    if artifact is not None:
        rows = [a for a in rows if a["name"] == artifact]
        if not rows:
            names = ", ".join(a["name"] for a in report["artifacts"])
            raise CompressError(f"no artifact {artifact!r} in {run_dir}; artifacts: {names}")
    lines: list[str] = []
    for row in rows:
        path = Path(run_dir) / row["path"]
        if not path.is_file():
            raise CompressError(f"{path} does not exist: the run folder lacks its artifact")
        held = row.get("weight_bytes")
        lines += ["", f"{row['name']}: weights held {held:,} bytes" if held else row["name"]]
        try:
            lines += node_lines(activation_memory(onnx.load(str(path))))
        except MemoryEstimateError as exc:
            lines.append(f"not estimated: {exc}")
    return lines[1:]


def format_markdown(report: Report) -> str:
    headers, rows = table_rows(report["artifacts"], columns_for(report))
    out = [f"# {report['pipeline']}", ""]
    ds = report["dataset"]
    out.append(
        f"Model `{report.get('model', '')}` on {ds['name']} ({_samples(ds, data_kind(report))}), "
        f"measured in onnxruntime {report['versions']['onnxruntime']} on {report['device']}."
    )
    out += ["", *tables.markdown(headers, rows)]
    out += [
        "",
        "ratio = dense .onnx bytes / deploy bytes (the smaller of .onnx.gz and .onnx.xz). "
        "Δ pts [95% CI]: the paired bootstrap interval of the accuracy difference to dense over "
        f"the test {SAMPLES.get(data_kind(report), 'samples')} (2,000 resamples).",
    ]
    out += [
        "Latency: batch 1, all artifacts timed interleaved in rounds in one process; vs dense: "
        "the median per-round ratio to dense with its distribution-free 95% interval over the "
        "rounds; SLOWER: that interval's low end above 1 + the verify margin. Weights held: "
        "initializer bytes an onnxruntime session keeps after its load-time folding. Flash: the "
        ".onnx file; act peak: the activations alive at once at batch 1; RAM est: weights held "
        "+ act peak; RAM meas: what a fresh onnxruntime process took to load and run the file "
        "once (docs/results.md).",
        "",
    ]
    out += [f"The {line}.\n" for line in inputs_lines(report)]
    stages = [
        [s["name"], f"{s['seconds']:.1f}", "yes" if s["cached"] else "no"] for s in report["stages"]
    ]
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
        raise CompressError(
            f"{path} is not valid JSON ({exc}): run the pipeline again to rewrite it"
        ) from None
    if not isinstance(report, dict) or not isinstance(report.get("artifacts"), list):
        raise CompressError(f"{path} is not a compress report (no artifacts list)")
    return report


# (key, header, format) of `compress report RUN --layers`: each layer's width in a packed file.
LAYER_COLUMNS = [
    ("layer", "layer", "{}"),
    ("weights", "weights", "{:,}"),
    ("nonzero", "non-zero", "{:,}"),
    ("bits", "bits", "{}"),
    ("bytes", "bytes", "{:,}"),
    ("delta", "Δ val pts", "{:+.2f}"),
]

# ... and each layer's timing in a static file written with static_layers = "faster"
INT8_COLUMNS = [
    ("layer", "layer", "{}"),
    ("op", "op", "{}"),
    ("float_ms", "float ms", "{:.4f}"),
    ("int8_ms", "int8 ms", "{:.4f}"),
    ("ratio", "int8/float [95%]", "{}"),
    ("quantized", "int8", "{}"),
]


def quantize_metrics(run_dir: Path) -> dict:
    """What the run's quantize stage recorded of each file (its stage.json's metrics)."""
    path = Path(run_dir) / "quantize" / "stage.json"
    if not path.is_file():
        raise CompressError(f"{path} does not exist: is {run_dir} a finished run folder?")
    return read_json(path)["metrics"]


def layer_rows(run_dir: Path, metrics: dict | None = None) -> dict[str, list[dict]]:
    """Artifact -> one row per layer (LAYER_COLUMNS' keys), for each file of the run whose
    layers have widths of their own (the packed variant; quantize's stage.json, or its
    `metrics` already read)."""
    metrics = quantize_metrics(run_dir) if metrics is None else metrics
    found = {}
    for stem, entry in metrics.items():
        if not isinstance(entry, dict) or "bits" not in entry:
            continue
        evidence = entry.get("allocation", {}).get("layers", {})
        found[stem] = [
            {
                "layer": layer,
                "bits": bits,
                **{k: evidence.get(layer, {}).get(k) for k in ("weights", "nonzero", "bytes")},
                "delta": -evidence[layer]["drop"] if layer in evidence else None,
            }
            for layer, bits in entry["bits"].items()
        ]
    return found


def int8_layer_rows(metrics: dict) -> dict[str, list[dict]]:
    """Artifact -> one row per layer (INT8_COLUMNS' keys) for each static file that timed
    its layers (static_layers = "faster"), from the quantize stage's `metrics`."""
    found = {}
    for stem, entry in metrics.items():
        if isinstance(entry, dict) and "int8_layers" in entry:
            found[stem] = [
                {
                    **row,
                    "layer": row.get("layer") or row.get("node"),
                    "ratio": (
                        f"{row['ratio']:.2f}x [{row['ratio_low']:.2f}, {row['ratio_high']:.2f}]"
                        if row.get("ratio") is not None
                        else row.get("note", "-")
                    ),
                    "quantized": "yes" if row.get("quantized") else "float",
                }
                for row in entry["int8_layers"]
            ]
    return found


def format_layers(run_dir: Path, fmt: str = "table") -> str:
    """The per-layer widths of the run's packed files ("auto": with the measured evidence),
    and the per-layer timings of its static files with static_layers = "faster"."""
    metrics = quantize_metrics(run_dir)
    widths, int8 = layer_rows(run_dir, metrics), int8_layer_rows(metrics)
    if not widths and not int8:
        raise CompressError(
            f"{run_dir} has no file with per-layer widths (quantize variant packed) or "
            "int8 timings (static_layers = 'faster')"
        )
    groups = [(widths, LAYER_COLUMNS), (int8, INT8_COLUMNS)]
    if fmt == "csv":
        return "".join(
            tables.csv_text(
                ["artifact", *(k for k, _, _ in columns)],
                [{"artifact": stem, **row} for stem, rows in found.items() for row in rows],
            )
            for found, columns in groups
            if found
        )
    lines = []
    render = tables.markdown if fmt == "md" else tables.text
    checks = {
        stem: entry["int8_check"]
        for stem, entry in metrics.items()
        if isinstance(entry, dict) and entry.get("int8_check")
    }  # the whole files' timing check of static_layers = "faster"
    for found, columns in groups:
        for stem, rows in found.items():
            headers, body = tables.cells(columns, rows)
            check = [check_line(checks[stem])] if stem in checks else []
            lines += [f"{stem}:", *render(headers, body), *check, ""]
    return "\n".join(lines)


def check_line(check: dict) -> str:
    """One line: the whole files against float, and which one was written."""
    parts = [
        f"{label} {check[key]['ratio']:.2f}x [{check[key]['ratio_low']:.2f}, "
        f"{check[key]['ratio_high']:.2f}]"
        for key, label in (("faster", "int8 on the faster layers"), ("all", "on every layer"))
        if isinstance(check.get(key), dict)
    ]
    return f"whole files against float: {'; '.join(parts)}; written: {check.get('kept', '-')}"
