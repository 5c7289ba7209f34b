"""What a search writes: search.md and its terminal table, search-history.png and
search-front.png, from the summary (search.json, typed in compress.results as Search).

    write_search(out, summary)        # search.json, search.md and the two plots
    print(format_table(summary))      # what `compress search` prints
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from compress import tables
from compress.analysis.plot import ring_chosen, size_accuracy_axes
from compress.analysis.sweep import delta
from compress.files import write_json, write_text
from compress.results import VAL, Search


def overrides_text(overrides: dict) -> str:
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in overrides.items())


def reuse_sentence(summary: dict) -> str:
    n = summary["counts"]["ok"] + summary["counts"]["misses budget"]
    return (
        f"{n} finished trials: reused {summary['stages_reused']} of {summary['stages_total']} "
        "stages "
        f"from the stage cache; training ran in {summary['train_runs']} of {n} trials"
    )


def chosen_sentence(summary: dict) -> str:
    by_label = {p["label"]: p for p in summary["points"]}
    ref = summary["reference"]["dense_val_accuracy"]
    if summary["budget"] is None:
        return f"no budget given (reference dense: {ref:.2%} on validation)"
    latency = summary.get("objective") == "latency"
    if summary["chosen"]:
        p = by_label[summary["chosen"]]
        settings = next(r["overrides"] for r in summary["trials"] if r["name"] == p["trial"])
        return (
            f"chosen: {p['label']} ({overrides_text(settings)}), "
            f"{p['deploy_bytes']:,} deploy bytes{_speed(p) if latency else ''}, "
            f"validation {p[VAL]:.2%} ({delta(p['drop'])} pts against the reference dense "
            f"{ref:.2%}), in {p['run_dir']}"
        )
    limits = summary["budget"].get("limits")
    device = ""
    if limits:
        device = " and the device limits (" + ", ".join(f"{k} {v:g}" for k, v in limits.items())
        device += ")"
    return (
        f"nothing meets the budget: no artifact is within {summary['max_drop']:g} pts of the "
        f"reference dense ({ref:.2%}){device}"
    )


def reference_sentence(summary: dict) -> str:
    b = summary["reference"]["best"]
    if not b:
        return "the pipeline as written: no compressed artifact verified"
    speed = _speed(b) if summary.get("objective") == "latency" else ""
    return (
        f"the pipeline as written: {b['artifact']} {b['deploy_bytes']:,} deploy bytes{speed}, "
        f"validation {b[VAL]:.2%} ({delta(b['drop'])} pts)"
    )


def test_lines(summary: dict) -> list[str]:
    by_label = {p["label"]: p for p in summary["points"]}
    lines = []
    for label, acc in summary["test_accuracy"].items():
        p = by_label[label]
        role = "chosen" if label == summary["chosen"] else "front"
        lines.append(
            f"{label} ({role}): test {acc:.2%}, validation {p[VAL]:.2%}, "
            f"{p['deploy_bytes']:,} deploy bytes"
            if acc is not None
            else f"{label}: no test accuracy"
        )
    return lines


def _vs_dense(best: dict | None) -> str:
    ratio = (best or {}).get("latency_vs_dense")
    return f"{ratio:.3g}x" if ratio is not None else "-"


def _value_text(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else json.dumps(value)


def trial_rows(summary: dict) -> tuple[list[str], list[list[str]]]:
    keys = list(summary["spaces"])
    latency = summary.get("objective") == "latency"
    headers = ["trial", *keys, "best artifact", "val %", "Δ pts", "deploy"]
    headers += ["vs dense"] * latency + ["reused", "state"]
    rows = []
    for r in summary["trials"]:
        b = r["best"]
        state = r["state"] + (f" ({r['error']})" if r["error"] and r["state"] == "fail" else "")
        if r["from_file"]:
            state += ", the pipeline's own settings"
        if r["retry_of"] is not None:
            state += f", reruns trial {r['retry_of']}"
        rows.append(
            [
                str(r["number"]),
                *(_value_text(r["overrides"][k]) if k in r["overrides"] else "-" for k in keys),
                b["artifact"] if b else "-",
                f"{b[VAL]:.2%}" if b else "-",
                delta(b["drop"]) if b else "-",
                f"{b['deploy_bytes']:,}" if b else "-",
                *([_vs_dense(b)] if latency else []),
                f"{len(r['stages_reused'])}/{r['stages_total']}" if r["stages_total"] else "-",
                state,
            ]
        )
    return headers, rows


def _markdown_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    return tables.markdown(headers, rows)


def _text_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    return tables.text(
        headers, rows, left=lambda i, cell: True, strip=True
    )  # every column left-aligned


def front_rows(summary: dict) -> tuple[list[str], list[list[str]]]:
    by_label = {p["label"]: p for p in summary["points"]}
    headers = ["artifact", "val %", "Δ pts", "deploy", "sparsity"]
    rows = [
        [label, f"{p[VAL]:.2%}", delta(p["drop"]), f"{p['deploy_bytes']:,}", f"{p['sparsity']:.1%}"]
        for label in summary["frontier"]
        for p in [by_label[label]]
    ]
    return headers, rows


def _goal(summary: dict) -> str:
    if summary["objective"] == "size":
        return (
            f"the smallest deploy size within {summary['max_drop']:g} pts of the reference dense "
            "on validation"
        )
    if summary.get("objective") == "latency":
        return (
            "the fastest artifact (latency at batch 1 over its own dense model's, timed "
            f"interleaved) within {summary['max_drop']:g} pts of the reference dense on validation"
        )
    return "the front of deploy size against validation accuracy"


def _speed(point: dict) -> str:
    """`, 0.22x dense's latency` for a point timed against its dense model, else nothing."""
    ratio = point.get("latency_vs_dense")
    return f", {ratio:.3g}x dense's latency" if ratio is not None else ""


def format_table(summary: dict) -> str:
    lines = [
        f"search of {summary['pipeline']}: {_goal(summary)}",
        *_text_table(*trial_rows(summary)),
        "",
        "front (validation):",
        *_text_table(*front_rows(summary)),
        "",
        reference_sentence(summary),
        chosen_sentence(summary),
        reuse_sentence(summary),
        "",
        "test accuracy (reported only, chosen on validation):",
        *[f"  {line}" for line in test_lines(summary)],
    ]
    return "\n".join(lines)


def format_markdown(summary: dict) -> str:
    out = [f"# Search of {summary['pipeline']}", "", f"Looking for {_goal(summary)}.", ""]
    out += [f"- `{k}`: {v}" for k, v in summary["spaces"].items()]
    out += [
        "",
        f"{summary['trials_wanted']} trials wanted; "
        + ", ".join(f"{n} {s}" for s, n in summary["counts"].items())
        + ". Every decision uses validation accuracy; Δ pts is against the dense model of the "
        f"pipeline as written ({summary['reference']['dense_val_accuracy']:.2%} on validation).",
        "",
        reuse_sentence(summary) + ".",
        "",
        "## Chosen",
        "",
        chosen_sentence(summary) + ".",
        "",
        f"For comparison, {reference_sentence(summary)}.",
        "",
        "## Front",
        "",
        "No other artifact is both smaller and at least as accurate on validation.",
        "",
    ]
    out += _markdown_table(*front_rows(summary))
    out += [
        "",
        "![deploy size against validation accuracy](search-front.png)",
        "",
        "## Trials",
        "",
        "Each trial's best artifact: the smallest within the budget, else the one closest to it. "
        "reused: stages taken from the stage cache.",
        "",
    ]
    out += _markdown_table(*trial_rows(summary))
    out += [
        "",
        "![optimization history](search-history.png)",
        "",
        "## Test accuracy",
        "",
        "Read after the search, for the chosen artifact (and the front, for --objective pareto); "
        "it chose nothing.",
        "",
    ]
    out += [f"- {line}" for line in test_lines(summary)]
    return "\n".join(out) + "\n"


def write_search(out: Path, summary: Search) -> None:
    write_json(out / "search.json", summary)
    write_text(out / "search.md", format_markdown(summary))
    plot_history(summary, out / "search-history.png")
    plot_front(summary, out / "search-front.png")


# ---------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    from compress.files import atomic_path

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def plot_history(summary: dict, path: Path) -> Path:
    """Each trial's best artifact size by trial number (ringed: misses the budget), and the
    best size so far among those within it."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    done = [r for r in summary["trials"] if r["best"]]
    for state, color in (("ok", "tab:blue"), ("misses budget", "tab:red")):
        group = [r for r in done if r["state"] == state]
        ax.scatter(
            [r["number"] for r in group],
            [r["best"]["deploy_bytes"] for r in group],
            s=30,
            color=color,
            label="within budget" if state == "ok" else "misses budget",
            zorder=3,
        )
    best, xs, ys = math.inf, [], []
    for r in done:
        if r["state"] == "ok":
            best = min(best, r["best"]["deploy_bytes"])
        if best < math.inf:
            xs.append(r["number"])
            ys.append(best)
    if xs:
        ax.step(xs, ys, where="post", color="black", linewidth=1.2, label="best so far")
    for r in summary["trials"]:
        if r["state"] == "fail":
            ax.axvline(r["number"], color="tab:gray", linestyle=":", linewidth=1)
    if done:
        ax.set_yscale("log")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("trial")
    ax.set_ylabel("deploy bytes of the trial's best artifact (log scale)")
    ax.set_title(f"{summary['pipeline']}: search history ({summary['objective']})")
    ax.grid(True, which="both", linewidth=0.3, alpha=0.6)
    if done:
        ax.legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)
    return path


def plot_front(summary: dict, path: Path) -> Path:
    """Every artifact of every trial, deploy size against validation accuracy, the front as
    a step line, the budget dashed and the chosen artifact ringed (front points labelled
    with their trial number)."""
    from compress.analysis.plot import _color

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 6), dpi=110)
    ok = [p for p in summary["points"] if p["status"] == "ok"]
    kinds: dict[str, list[dict]] = {}
    for p in ok:
        kinds.setdefault(p["artifact"], []).append(p)
    for artifact, group in sorted(kinds.items()):
        ax.scatter(
            [p["deploy_bytes"] for p in group],
            [100 * p[VAL] for p in group],
            s=24,
            color=_color(artifact),
            label=artifact,
            alpha=0.75,
            zorder=3,
        )
    by_label = {p["label"]: p for p in ok}
    front = [by_label[x] for x in summary["frontier"] if x in by_label]
    if front:
        ax.step(
            [p["deploy_bytes"] for p in front],
            [100 * p[VAL] for p in front],
            where="post",
            color="black",
            linewidth=1.2,
            label="front",
            zorder=2,
        )
        # label front points by trial number, skipping one too close to a labelled one
        placed: list[tuple[float, float]] = []
        for p in front:
            x, y = math.log10(p["deploy_bytes"]), 100 * p[VAL]
            if any(abs(x - px) < 0.08 and abs(y - py) < 1.0 for px, py in placed):
                continue
            placed.append((x, y))
            ax.annotate(
                f"#{int(p['trial'].split('-')[1])}",
                (p["deploy_bytes"], y),
                xytext=(4, -9),
                textcoords="offset points",
                fontsize=7,
            )
    if summary["max_drop"] is not None:
        line = 100 * summary["reference"]["dense_val_accuracy"] - summary["max_drop"]
        ax.axhline(line, color="tab:red", linestyle="--", linewidth=1, label="accuracy budget")
    if summary["chosen"] in by_label:
        ring_chosen(ax, by_label[summary["chosen"]], "chosen")
    size_accuracy_axes(ax, f"{summary['pipeline']}: deploy size against validation accuracy")
    ax.legend(fontsize=8, loc="best")
    _save(fig, path)
    plt.close(fig)
    return path
