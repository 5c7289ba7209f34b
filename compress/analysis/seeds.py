"""One pipeline over several seeds: how much of an artifact's result is the seed.

    reports = run_seeds(config, [0, 1, 2], Path("runs/lenet5-seeds"))   # seed-0/, seed-1/, ...
    rows = summarize(Path("runs/lenet5-seeds"), [0, 1, 2])
    print(format_seeds(rows))

Each seed is the whole pipeline with `[data] seed` set to it (the validation split, the
initial weights, the batch order), in its own run folder `seed-<n>/` under the parent:
the runs share no stage, only the data files they read. Per artifact the summary gives the
mean and the range (min..max) over the seeds of the test Δ and the validation Δ (points,
against each run's own dense) and of the ratio, and a pooled 95% interval of the test Δ:
the paired bootstrap (compress.stats) over every seed's test images together, each image's
correctness paired with that run's dense model. The pooled interval is the uncertainty
from the test images alone, given these seeds; the range shows how far the seeds spread.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np

from compress import tables
from compress.config import PipelineConfig
from compress.errors import CompressError
from compress.results import DENSE, VAL, accuracy_points
from compress.stats import paired_bootstrap_ci, unpack_correct

log = logging.getLogger(__name__)

COLUMNS = [
    ("name", "artifact", "{}"),
    ("seeds", "seeds", "{}"),
    ("test_delta", "test Δ pts", "{}"),
    ("pooled_ci", "pooled 95%", "{}"),
    ("val_delta", "val Δ pts", "{}"),
    ("ratio", "ratio", "{}"),
]


def parse_seeds(text: str) -> list[int]:
    """`--seeds 0,1,2` -> [0, 1, 2]: distinct whole numbers."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        seeds = []
    if not seeds or len(set(seeds)) != len(seeds):
        raise CompressError(f"--seeds {text!r}: expected distinct whole numbers such as 0,1,2")
    return seeds


def seed_dir(parent: Path, seed: int) -> Path:
    return Path(parent) / f"seed-{seed}"


def run_seeds(config: PipelineConfig, seeds: list[int], parent: Path, **run_options) -> list:
    """Run the pipeline once per seed into `seed_dir(parent, seed)`; their reports."""
    from compress.pipeline import run_pipeline

    reports = []
    for seed in seeds:
        log.info("seed %d -> %s", seed, seed_dir(parent, seed))
        seeded = config.with_overrides({"data.seed": seed})
        reports.append(run_pipeline(seeded, out_dir=seed_dir(parent, seed), **run_options))
    return reports


def _correct(run_dir: Path) -> dict[str, np.ndarray]:
    with np.load(run_dir / "verify" / "correct.npz") as stored:
        count = int(stored["count"])
        return {k: unpack_correct(stored[k], count) for k in stored.files if k != "count"}


def _spread(values: list[float], fmt: str = "{:+.2f}") -> str:
    mean = fmt.format(float(np.mean(values)))
    if len(values) == 1:
        return mean
    return f"{mean} [{fmt.format(min(values))}..{fmt.format(max(values))}]"


def summarize(parent: Path, seeds: list[int], reports: list) -> list[dict]:
    """Per artifact (in the first run's order): the seeds' mean and range of test Δ, val Δ and
    ratio, and the pooled interval (see the module docstring)."""
    runs = [(r, _correct(seed_dir(parent, s))) for s, r in zip(seeds, reports, strict=True)]
    rows = []
    for artifact in reports[0]["artifacts"]:
        name = artifact["name"]
        found = [(r, c) for r, c in runs if any(a["name"] == name for a in r["artifacts"])]
        tests, vals, ratios, pairs = [], [], [], []
        for report, correct in found:
            row = next(a for a in report["artifacts"] if a["name"] == name)
            dense = next(a for a in report["artifacts"] if a["name"] == DENSE)
            tests.append(row["accuracy_delta"])
            if row.get(VAL) is not None and dense.get(VAL) is not None:
                vals.append(accuracy_points(dense[VAL], row[VAL]))
            ratios.append(row["compression"])
            pairs.append((correct[name], correct[DENSE]))
        low, high = paired_bootstrap_ci(
            np.concatenate([a for a, _ in pairs]), np.concatenate([d for _, d in pairs])
        )
        rows.append(
            {
                "name": name,
                "seeds": len(found),
                "test_delta": _spread(tests),
                "test_delta_mean": round(float(np.mean(tests)), 4),
                "pooled_ci": f"[{low:+.2f}, {high:+.2f}]",
                "pooled_interval": [low, high],
                "val_delta": _spread(vals) if vals else None,
                "ratio": _spread(ratios, "{:.1f}x"),
            }
        )
    return rows


def format_seeds(rows: list[dict]) -> str:
    headers, body = tables.cells(COLUMNS, rows)
    out = io.StringIO()
    out.write("\n".join(tables.text(headers, body)))
    out.write(
        "\nmean [min..max] over the seeds; pooled 95%: paired bootstrap over all seeds' test "
        "images (each against its own run's dense)\n"
    )
    return out.getvalue()
