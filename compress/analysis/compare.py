"""Compare the artifacts of several finished runs side by side (reads only report.json).

    runs = load_runs(["runs/mnist", "runs/lenet300"])
    rows = comparison_rows(runs, baseline=None)        # each run against its own dense
    print(format_comparison(rows, "table"))

The baseline of the accuracy change and the ratio is each run's own baseline artifact
(`dense`) unless named: `ARTIFACT` (that artifact of each run), `RUN` (that run's baseline,
for every run) or `RUN:ARTIFACT` (one artifact for every run).
"""

from __future__ import annotations

import json
from pathlib import Path

from compress import tables
from compress.errors import CompressError
from compress.report import COLUMNS as REPORT_COLUMNS
from compress.report import load_report
from compress.results import (
    DENSE,
    Artifact,
    Report,
    baseline_of,
    compression_ratio,
    delta_pts,
    deploy_bytes,
    find_artifact,
    status_kind,
)

# (key, header, format) of the Markdown / CSV / JSON rows: the run and the report's own
# columns up to latency; the terminal table is compacter.
SHARED_KEYS = (
    "val_accuracy",
    "accuracy",
    "accuracy_delta",
    "bytes",
    "gzip_bytes",
    "deploy_bytes",
    "compression",
    "sparsity",
    "latency_ms_b1_p50",
)
COLUMNS = [("run", "run", "{}"), ("artifact", "artifact", "{}")] + [
    column for column in REPORT_COLUMNS if column[0] in SHARED_KEYS
]
SORTS = ("run", "size", "accuracy")


def load_runs(run_dirs: list[str | Path]) -> list[dict]:
    """[{run, dir, report}] in the given order; `run` is the folder's name (its path when
    two folders share a name)."""
    if not run_dirs:
        raise CompressError("name at least one run folder")
    dirs = [Path(d) for d in run_dirs]
    names = [d.resolve().name for d in dirs]
    runs = []
    for directory, name in zip(dirs, names, strict=True):
        label = str(directory) if names.count(name) > 1 else name
        runs.append({"run": label, "dir": directory, "report": load_report(directory)})
    return runs


def _artifact(report: Report, name: str) -> Artifact | None:
    return find_artifact(report["artifacts"], name)


def _own_baseline(report: Report) -> Artifact:
    return baseline_of(report["artifacts"], report.get("baseline", DENSE))


def resolve_baselines(runs: list[dict], baseline: str | None) -> dict[str, tuple[str, Artifact]]:
    """run -> (label, baseline artifact) for every run."""
    by_run = {r["run"]: r for r in runs}
    if baseline is None:
        out = {}
        for r in runs:
            artifact = _own_baseline(r["report"])
            out[r["run"]] = (f"{r['run']}:{artifact['name']}", artifact)
        return out
    if ":" in baseline:
        run, _, name = baseline.rpartition(":")
        if run not in by_run:
            raise CompressError(
                f"--baseline {baseline}: no run {run!r}; runs are {', '.join(by_run)}"
            )
        artifact = _artifact(by_run[run]["report"], name)
        if artifact is None:
            known = ", ".join(a["name"] for a in by_run[run]["report"]["artifacts"])
            raise CompressError(
                f"--baseline {baseline}: run {run} has no artifact {name!r} (it has {known})"
            )
        return {r["run"]: (baseline, artifact) for r in runs}
    if all(_artifact(r["report"], baseline) for r in runs):
        return {
            r["run"]: (f"{r['run']}:{baseline}", _artifact(r["report"], baseline)) for r in runs
        }
    if baseline in by_run:
        artifact = _own_baseline(by_run[baseline]["report"])
        return {r["run"]: (f"{baseline}:{artifact['name']}", artifact) for r in runs}
    missing = [r["run"] for r in runs if _artifact(r["report"], baseline) is None]
    raise CompressError(
        f"--baseline {baseline}: not an artifact of every run (missing in {', '.join(missing)}) "
        f"nor a run; use ARTIFACT, RUN or RUN:ARTIFACT"
    )


def comparison_rows(runs: list[dict], baseline: str | None = None, sort: str = "run") -> list[dict]:
    """One row per artifact of every run, with accuracy change (points) and ratio (baseline
    .onnx bytes / deploy bytes) against the baseline."""
    if sort not in SORTS:
        raise CompressError(f"sort {sort!r}: use one of {', '.join(SORTS)}")
    baselines = resolve_baselines(runs, baseline)
    rows = []
    for order, r in enumerate(runs):
        label, base = baselines[r["run"]]
        for a in r["report"]["artifacts"]:
            rows.append(
                {
                    "run": r["run"],
                    "artifact": a["name"],
                    "val_accuracy": a.get("val_accuracy"),
                    "accuracy": a["accuracy"],
                    "accuracy_delta": delta_pts(base, a),
                    "bytes": a["bytes"],
                    "gzip_bytes": a.get("gzip_bytes"),
                    "deploy_bytes": deploy_bytes(a),
                    "compression": compression_ratio(base, a),
                    "sparsity": a.get("sparsity"),
                    "latency_ms_b1_p50": a.get("latency_ms_b1_p50"),
                    "status": a.get("status", "ok"),
                    "baseline": label,
                    "pipeline": r["report"].get("pipeline"),
                    "_order": order,
                }
            )
    if sort == "run":  # runs as given; in each, largest first (the dense baseline leads)
        rows.sort(key=lambda x: (x["_order"], -x["deploy_bytes"]))
    elif sort == "size":
        rows.sort(key=lambda x: (x["deploy_bytes"], -x["accuracy"]))
    else:
        rows.sort(key=lambda x: (-x["accuracy"], x["deploy_bytes"]))
    for row in rows:
        del row["_order"]
    return rows


def human_bytes(n: int | None) -> str:
    """A compact size: 987, 45.2k, 1.07M (k = 1,000 bytes)."""
    if n is None:
        return "-"
    if n < 1000:
        return str(n)
    if n < 999_500:
        return f"{n / 1e3:.1f}k" if n < 99_950 else f"{n / 1e3:.0f}k"
    return f"{n / 1e6:.2f}M"


# The terminal table: compact cells so that it fits 80 columns.
TABLE_COLUMNS = [
    ("artifact", "artifact", str),
    ("accuracy", "acc %", lambda v: f"{100 * v:.2f}"),
    ("accuracy_delta", "Δ pts", lambda v: f"{v:+.2f}"),
    ("bytes", "bytes", human_bytes),
    ("gzip_bytes", "gzip", human_bytes),
    ("deploy_bytes", "deploy", human_bytes),
    ("compression", "ratio", lambda v: f"{v:.1f}x"),
    ("sparsity", "sparse", lambda v: f"{100 * v:.1f}%"),
    ("latency_ms_b1_p50", "p50 ms", lambda v: f"{v:.3f}"),
]


def _cell(row: dict, key: str, fmt) -> str:
    text = tables.format_cell(row.get(key), fmt)
    if key == "artifact" and row.get("status", "ok") != "ok":
        text += "*"
    return text


TEXT_COLUMNS = ("run", "artifact")  # left-aligned; numbers are right-aligned


def _aligned(columns: list, rows: list[dict]) -> list[str]:
    headers = [h for _, h, _ in columns]
    cells = [[_cell(r, k, f) for k, _, f in columns] for r in rows]
    widths = tables.widths(headers, cells)
    sep = "  " if sum(widths) + 2 * (len(widths) - 1) <= 80 else " "
    return tables.text(
        headers, cells, left=[key in TEXT_COLUMNS for key, _, _ in columns], sep=sep, strip=True
    )


def _fitting(columns: list, rows: list[dict]) -> list:
    """Drop the .onnx and gzip size columns (in that order) while the table is wider than 80."""
    for drop in ((), ("gzip_bytes",), ("gzip_bytes", "bytes")):
        kept = [c for c in columns if c[0] not in drop]
        if tables.width(_aligned(kept, rows)) <= 80:
            return kept
    return kept


def format_table(rows: list[dict], grouped: bool = True) -> str:
    """Grouped by run (one heading per run) or, for a mixed order, with a run column."""
    out: list[str] = []
    if grouped:
        # one set of widths for all groups, so that the columns line up down the page
        columns = _fitting(TABLE_COLUMNS, rows)
        aligned = _aligned(columns, rows)
        header, rule, body = aligned[0], aligned[1], aligned[2:]
        for run in dict.fromkeys(r["run"] for r in rows):
            first = next(r for r in rows if r["run"] == run)
            base_run, _, base_artifact = first["baseline"].rpartition(":")
            against = base_artifact if base_run == run else first["baseline"]
            out += [f"{run} ({first['pipeline']}), against {against}", header, rule]
            out += [line for line, r in zip(body, rows, strict=True) if r["run"] == run]
            out.append("")
    else:
        columns = _fitting([("run", "run", str), *TABLE_COLUMNS], rows)
        out += _aligned(columns, rows) + [""]
    if any(r.get("status", "ok") != "ok" for r in rows):
        out.append("* failed verification, or a warning (see the run's report)")
    out.append("Δ pts, ratio: against the baseline; ratio = its .onnx bytes / deploy bytes")
    out.append("(deploy: smaller of .onnx.gz and .onnx.xz); k = 1,000 bytes, M = 1,000,000 bytes")
    return "\n".join(out)


def format_markdown(rows: list[dict]) -> str:
    headers, cells = tables.cells(COLUMNS, rows)
    for r, row_cells in zip(rows, cells, strict=True):
        if r.get("status", "ok") != "ok":
            row_cells[1] += f" ({status_kind(r)})"  # failed, or warning
    out = tables.markdown(headers, cells)
    bases = sorted({r["baseline"] for r in rows})
    out += [
        "",
        f"Δ pts and ratio against {', '.join(bases)}; ratio = baseline .onnx bytes / deploy bytes.",
    ]
    return "\n".join(out) + "\n"


CSV_FIELDS = [key for key, _, _ in COLUMNS] + ["status", "baseline"]


def format_csv(rows: list[dict]) -> str:
    return tables.csv_text(CSV_FIELDS, rows)


def format_comparison(rows: list[dict], fmt: str = "table", sort: str = "run") -> str:
    if fmt == "table":
        return format_table(rows, grouped=sort == "run")
    if fmt == "md":
        return format_markdown(rows)
    if fmt == "csv":
        return format_csv(rows)
    if fmt == "json":
        return json.dumps(rows, indent=2)
    raise CompressError(f"format {fmt!r}: use table, md, csv or json")
