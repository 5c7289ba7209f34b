r"""Feature selection against scikit-learn: compress's L1 model vs L1 logistic regression at
the same number of features, on the same train / validation / test splits.

    .venv/bin/python bench/feature_selection.py        # pipelines/breast_cancer.toml (logreg)
    .venv/bin/python bench/feature_selection.py \
        --set model.name=mlp --set 'model.kwargs={"hidden": [16]}'
    .venv/bin/python bench/feature_selection.py --solver saga --out /tmp/fs

1. Runs the pipeline (compress.pipeline.run_pipeline) and reads from its report.json how many
   features the pruned model reads (`inputs.used`) and its onnxruntime accuracy on the
   validation and test splits (artifact `pruned`).
2. Fits scikit-learn's LogisticRegression(penalty="l1") on the same standardized training
   part (compress's Dataset: the training split less the validation split, scaled with its
   own mean and std) for a grid of C values, and keeps those whose model reads exactly that
   many features (a feature is read when any class's coefficient on it is non-zero).
3. Among them, chooses C by validation accuracy (ties: the smaller C, the sparser model);
   the test split is only reported, never used to choose.

Prints a table and writes feature_selection.json into the run folder. scikit-learn is a
development dependency (pip install -e '.[dev]').
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from compress.config import load_pipeline
from compress.data import load_data
from compress.pipeline import run_pipeline


def parse_set(values: list[str]) -> dict:
    overrides = {}
    for item in values:
        key, _, raw = item.partition("=")
        try:
            overrides[key] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[key] = raw
    return overrides


def _l1_argument() -> dict:
    """scikit-learn >= 1.8 spells the pure L1 penalty l1_ratio=1 (penalty= is deprecated)."""
    import sklearn

    major, minor = (int(p) for p in sklearn.__version__.split(".")[:2])
    return {"l1_ratio": 1.0} if (major, minor) >= (1, 8) else {"penalty": "l1"}


def sklearn_path(
    x_train, y_train, x_val, y_val, x_test, y_test, solver: str, grid: np.ndarray
) -> list[dict]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    L1 = _l1_argument()
    rows = []
    for c in grid:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf = LogisticRegression(
                **L1, C=float(c), solver=solver, max_iter=5000, tol=1e-6, random_state=0
            )
            clf.fit(x_train, y_train)
        used = int((np.abs(clf.coef_) > 0).any(axis=0).sum())
        rows.append(
            {
                "C": float(c),
                "features": used,
                "val_accuracy": float(clf.score(x_val, y_val)),
                "test_accuracy": float(clf.score(x_test, y_test)),
            }
        )
    return rows


def choose(path: list[dict], features: int) -> dict | None:
    """The C with the best validation accuracy among those reading exactly `features` features."""
    same = [r for r in path if r["features"] == features]
    if not same:
        return None
    return max(same, key=lambda r: (r["val_accuracy"], -r["C"]))


def neighbours(path: list[dict], features: int) -> list[dict]:
    """When no C reads exactly `features`: the best (by validation) at the nearest count
    below and above, for reference."""
    counts = sorted({r["features"] for r in path})
    below = [c for c in counts if c < features]
    above = [c for c in counts if c > features]
    return [choose(path, c) for c in ([below[-1]] if below else []) + ([above[0]] if above else [])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipeline", nargs="?", default="pipelines/breast_cancer.toml")
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="pipeline override, value as JSON (e.g. model.name=mlp)",
    )
    parser.add_argument("--out", default="runs/feature_selection", help="run folder")
    parser.add_argument("--solver", choices=["liblinear", "saga"], default="liblinear")
    parser.add_argument("--grid", type=int, default=300, help="C values, log-spaced in [1e-3, 10]")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)

    config = load_pipeline(args.pipeline)
    if args.sets:
        config = config.with_overrides(parse_set(args.sets))
    report = run_pipeline(config, out_dir=args.out, progress=False)
    inputs = report.get("inputs")
    if not inputs:
        print("the pruned model's inputs could not be told apart", file=sys.stderr)
        return 1
    pruned = next(a for a in report["artifacts"] if a["name"] == "pruned")

    data = load_data(config.data, config.base_dir)
    split = {s: tuple(t.numpy() for t in data.tensors(s)) for s in ("train", "val", "test")}
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = (
        split["train"],
        split["val"],
        split["test"],
    )
    path = sklearn_path(
        x_train, y_train, x_val, y_val, x_test, y_test, args.solver, np.logspace(-3, 1, args.grid)
    )
    chosen = choose(path, inputs["used"])

    result = {
        "pipeline": config.name,
        "model": report["model"],
        "samples": {s: int(len(split[s][1])) for s in split},
        "compress": {
            "features": inputs["used"],
            "of": inputs["total"],
            "names": inputs["names"],
            "val_accuracy": pruned.get("val_accuracy"),
            "test_accuracy": pruned["accuracy"],
        },
        "sklearn": {
            "solver": args.solver,
            "chosen": chosen,
            "feature_counts_reached": sorted({r["features"] for r in path}),
        },
    }
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "feature_selection.json").write_text(
        json.dumps({**result, "sklearn_path": path}, indent=2)
    )

    print(
        f"{config.name}: {report['model']} with L1 vs "
        f"LogisticRegression(penalty='l1', solver='{args.solver}'), "
        f"standardized inputs; {result['samples']['train']} train, "
        f"{result['samples']['val']} validation, "
        f"{result['samples']['test']} test samples"
    )
    print(f"{'':28s} {'features':>8s} {'val %':>7s} {'test %':>7s}")
    c = result["compress"]
    val = f"{100 * c['val_accuracy']:.2f}" if c["val_accuracy"] is not None else "-"
    print(
        f"{'compress (pruned.onnx)':28s} {c['features']:>8d} {val:>7s} "
        f"{100 * c['test_accuracy']:>7.2f}"
    )
    if chosen is None:
        print(
            f"scikit-learn: no C in the grid gives exactly {c['features']} features "
            f"(reached: {result['sklearn']['feature_counts_reached']}); nearest:"
        )
        for row in neighbours(path, c["features"]):
            label = f"sklearn C={row['C']:.4g}"
            print(
                f"{label:28s} {row['features']:>8d} {100 * row['val_accuracy']:>7.2f} "
                f"{100 * row['test_accuracy']:>7.2f}"
            )
        return 1
    label = f"sklearn C={chosen['C']:.4g}"
    print(
        f"{label:28s} {chosen['features']:>8d} {100 * chosen['val_accuracy']:>7.2f} "
        f"{100 * chosen['test_accuracy']:>7.2f}"
    )
    verdict = (
        "at least as accurate" if c["test_accuracy"] >= chosen["test_accuracy"] else "LESS accurate"
    )
    print(f"compress is {verdict} on the test split at {c['features']} of {c['of']} features")
    print(f"used by compress: {', '.join(c['names'] or [])}")
    return 0 if c["test_accuracy"] >= chosen["test_accuracy"] else 1


if __name__ == "__main__":
    sys.exit(main())
