"""What a run reports, typed once: an artifact row and report.json (docs/reference.md,
"report.json").

    report: Report = load_report(run_dir)
    report = RunReport(report, run_dir)  # as run_pipeline returns it
    report.artifacts[0].accuracy
    base = baseline_of(report["artifacts"], report["baseline"])   # the `dense` row by default
    drop = drop_pts(base, row)                                     # accuracy points lost

report.json is a stable interface: keys are only ever added (as NotRequired, with a row in
docs/reference.md), never renamed or removed. Each key's meaning is written beside it
(Annotated) and the docs table is checked against these definitions by the tests. Accuracy
is a fraction in 0..1, sizes bytes, latency milliseconds, throughput samples per second.

Sweep, Tune and Search type sweep.json, tune.json and search.json the same way.
"""

# No `from __future__ import annotations` here: TypedDict reads NotRequired from real annotations.
from functools import cache
from pathlib import Path
from typing import (
    Annotated,
    Any,
    ClassVar,
    NotRequired,
    Required,
    TypedDict,
    get_args,
    get_origin,
    get_type_hints,
)

from compress import tables

DENSE = "dense"  # the trained float model before pruning: the baseline of every comparison
PRUNED = "pruned"  # the pruned, fine-tuned float model
FLOAT_ARTIFACTS = (DENSE, PRUNED)  # exported from PyTorch, so held to the logit tolerance


class Artifact(TypedDict):
    """One ONNX file of a run, measured in onnxruntime (a row of `artifacts`)."""

    name: Annotated[str, "file stem: `dense`, `pruned`, `pruned-int8-dynamic`, ..."]
    path: Annotated[str, "the .onnx file, relative to the run folder"]
    bytes: Annotated[int, "size of the .onnx file"]
    gzip_bytes: Annotated[int, "size of its .onnx.gz (gzip -9)"]
    xz_bytes: Annotated[int, "size of its .onnx.xz (xz -9e)"]
    deploy_form: Annotated[str, "`.onnx.gz` or `.onnx.xz`, whichever is smaller"]
    deploy_bytes: Annotated[int, "size of that deployable package"]
    deploy_path: Annotated[str, "that package, under `deploy/`"]
    params: Annotated[int, "entries of the file's weight and bias initializers"]
    nonzero_params: Annotated[int, "those that are not zero"]
    weights: Annotated[
        int,
        "entries of the weight matrices and kernels alone (initializers of 2 or more dimensions)",
    ]
    nonzero_weights: Annotated[int, "those that are not zero"]
    sparsity: Annotated[
        float, "1 - nonzero_weights / weights: zeros among the weights, biases apart"
    ]
    min_onnxruntime: Annotated[
        str, "the oldest onnxruntime release that loads the file (compress.encode.compat)"
    ]
    ir_version: Annotated[int, "the ONNX IR version the file declares"]
    opset: Annotated[int | None, "the ai.onnx opset the file imports"]
    macs: Annotated[int, "multiply-accumulates per sample (MatMul/Gemm/Conv at full shape)"]
    weight_bytes: Annotated[
        int, "initializer bytes an onnxruntime session holds after its load-time folding"
    ]
    accuracy: Annotated[float, "top-1 accuracy on the test split"]
    val_accuracy: Annotated[
        float | None,
        "top-1 accuracy on the validation split (what sweep, tune and search budgets choose on)",
    ]
    agreement: Annotated[float | None, "top-1 agreement with the PyTorch model it came from"]
    max_logit_diff: Annotated[float | None, "largest logit difference from that PyTorch model"]
    latency_ms_b1_p50: Annotated[
        float | None, "median latency at batch 1 (all artifacts timed interleaved)"
    ]
    latency_ms_b1_p95: Annotated[float | None, "95th percentile latency at batch 1"]
    latency_vs_dense: Annotated[
        float | None,
        "latency over dense's: the median over timing rounds of the round's median call "
        "over dense's",
    ]
    slower_than_dense: Annotated[
        bool | None, "true when `latency_vs_dense_low` exceeds 1 + `[verify] slower_margin`"
    ]
    throughput: Annotated[float, "images per second at the throughput batch"]
    status: Annotated[
        str,
        "`ok`, `failed: <why>`, or `warning: <what>` (at chance while training accuracy is high)",
    ]
    compression: NotRequired[
        Annotated[float, "baseline .onnx bytes / deploy_bytes (added by the report)"]
    ]
    accuracy_delta: NotRequired[
        Annotated[
            float, "test accuracy change in points against the baseline (added by the report)"
        ]
    ]
    accuracy_delta_ci: NotRequired[
        Annotated[
            list[float],
            "`[low, high]`, points: the 95% paired-bootstrap interval "
            "of the test accuracy difference to `dense` (verify)",
        ]
    ]
    latency_vs_dense_low: NotRequired[
        Annotated[
            float,
            "low end of the distribution-free 95% interval of `latency_vs_dense` over the "
            "rounds (verify)",
        ]
    ]
    latency_vs_dense_high: NotRequired[Annotated[float, "its high end"]]
    code_entropy_bits: NotRequired[
        Annotated[float, "codebook files only: entropy of the codes, bits per non-zero weight"]
    ]
    flash_bytes: NotRequired[
        Annotated[int, "the .onnx file as stored: what a device keeps in flash to load it"]
    ]
    peak_activation_bytes: NotRequired[
        Annotated[
            int | None,
            "the largest total of activation tensors alive at once at batch 1, weights apart "
            "(compress.encode.memory; null: subgraphs, or a shape inference cannot give)",
        ]
    ]
    peak_activation_tensors: NotRequired[
        Annotated[list[dict] | None, "`{name, shape, bytes}` of the tensors that make that peak"]
    ]
    ram_bytes: NotRequired[
        Annotated[int | None, "estimated RAM: weight_bytes + peak_activation_bytes"]
    ]
    budget: NotRequired[
        Annotated[
            dict,
            "with a `[budget]`: `{fits, misses}`, whether it fits and what it misses "
            "(`ram 12.3 KB over`; compress.budget)",
        ]
    ]
    measured_ram_bytes: NotRequired[
        Annotated[
            int | None,
            "what a fresh onnxruntime process took to load the file and run it once at batch "
            "1 beyond its imports (null: `[verify] measure_ram = false`)",
        ]
    ]


class DatasetSummary(TypedDict):
    # the named data set (`mnist`), `imagefolder`, or a CSV file with its folder (`wine/train.csv`)
    name: str
    train_samples: int  # without the validation part
    val_samples: int
    test_samples: int
    kind: NotRequired[str]  # "image" or "table" (reports before it: see compress.report.data_kind)


class TrainingSummary(TypedDict):
    """PyTorch accuracies on the test split along the stages."""

    dense_test_accuracy: float
    dense_val_accuracy: float
    pruned_sparsity: float
    accuracy_after_prune: float
    accuracy_after_finetune: float
    zero_weights_after_train: int


class StageSummary(TypedDict):
    name: str
    key: str
    seconds: float
    cached: bool


class Report(TypedDict):
    """report.json: everything `compress report` and `compare` show, read from the run folder."""

    pipeline: Annotated[str, "pipeline name"]
    config_hash: Annotated[str, "hash of the resolved configuration"]
    created: Annotated[str, "time of the report (UTC, ISO 8601)"]
    model: Annotated[str, "model name (or `path:class`)"]
    dataset: Annotated[
        DatasetSummary,
        "`{name, train_samples, val_samples, test_samples, kind}` (train excludes the "
        "validation part; `kind`: `image` or `table`; a CSV's `name`: its file "
        "with its folder, e.g. `wine/train.csv`)",
    ]
    device: Annotated[str, "training device"]
    versions: Annotated[dict[str, str], "`compress`, `torch`, `onnx`, `onnxruntime`, `python`"]
    baseline: Annotated[str, "the artifact ratios and deltas refer to (`dense`)"]
    artifacts: Annotated[list[Artifact], "one per ONNX file (see Artifact)"]
    inputs: NotRequired[
        Annotated[
            dict | None,
            "which inputs the pruned model still reads: `{total, used, names, unit, "
            "first_layers}` (`names`: the used CSV columns; `unit`: features, pixels or "
            "channels); `null` when no Linear or Conv reads the input directly",
        ]
    ]
    training: Annotated[
        TrainingSummary,
        "`dense_test_accuracy`, `dense_val_accuracy`, `pruned_sparsity`, "
        "`accuracy_after_prune`, `accuracy_after_finetune`, `zero_weights_after_train` "
        "(PyTorch, test split unless named val)",
    ]
    stages: Annotated[list[StageSummary], "`{name, key, seconds, cached}` per stage"]
    total_seconds: Annotated[float, "seconds of the stages that ran (not cached)"]
    budget: NotRequired[
        Annotated[dict, "the `[budget]` limits set (`flash_kb`, `ram_kb`, ...), when any is"]
    ]


# ---------------------------------------------------------------- the many-run commands
# sweep.json, tune.json and search.json. Every accuracy a choice is made on is named
# `val_accuracy` (the validation split, as in Artifact); `test_accuracy` is only reported.
# `drop` is in points below the bar: the validation accuracy of the dense model of the
# pipeline as written (compress.analysis.reference).


class Budget(TypedDict):
    """The `--max-drop` budget of a sweep or search, by label (compress.analysis.pareto)."""

    max_drop: Annotated[float, "points below the reference dense model, on validation"]
    chosen: Annotated[
        str | None,
        "the smallest artifact within it (on equal size the more accurate); null when none is",
    ]
    ties: Annotated[list[str], "as small and as accurate as `chosen`"]
    closest: Annotated[
        str | None,
        "with nothing within it: the artifact of the smallest drop (with device limits: "
        "the one that misses them least)",
    ]
    limits: NotRequired[
        Annotated[dict, "the device limits it holds too (`flash_kb`, `ram_kb`, ...), if any"]
    ]


class SweepReference(TypedDict):
    run_dir: Annotated[str, "the run whose dense model is the bar"]
    variant: Annotated[
        str | None, "the variant that made it (null: `<out>/reference`, the pipeline as written)"
    ]
    dense_val_accuracy: Annotated[float, "its dense artifact's validation accuracy (onnxruntime)"]


class SweepVariant(TypedDict):
    name: Annotated[str, "the variant's run folder under the sweep folder"]
    overrides: Annotated[dict[str, Any], "dotted key -> value"]
    run_dir: Annotated[str, "its run folder"]
    stages_cached: Annotated[list[str], "the stages taken from the stage cache"]
    dense_val_accuracy: Annotated[
        float, "its own dense model's validation accuracy (PyTorch, from report.json's `training`)"
    ]


class SweepPoint(TypedDict):
    """One distinct artifact of a sweep (identical files of several variants count once)."""

    label: Annotated[
        str,
        "`<variant>/<artifact>` (`(+N)`: N more variants made the same file), or the "
        "artifact alone when every variant made it",
    ]
    artifact: Annotated[str, "the artifact's name (`dense`, `pruned`, ...)"]
    variants: Annotated[list[str], "the variants that made it"]
    path: Annotated[str, "the .onnx file of the first of them"]
    val_accuracy: Annotated[
        float, "top-1 accuracy on the validation split: what the frontier and the budget use"
    ]
    test_accuracy: Annotated[float, "top-1 accuracy on the test split (reported only)"]
    drop: Annotated[float, "validation points below the reference dense model"]
    bytes: Annotated[int, "size of the .onnx file"]
    deploy_bytes: Annotated[int, "size of its deployable package"]
    compression: Annotated[float, "baseline .onnx bytes / deploy_bytes"]
    sparsity: Annotated[float, "zeros among the weights"]
    latency_ms_b1_p50: Annotated[float | None, "median latency at batch 1"]
    status: Annotated[str, "`ok`, `failed: <why>` or `warning: <what>`, as in report.json"]
    frontier: Annotated[bool, "on the Pareto frontier"]
    within_budget: NotRequired[
        Annotated[bool, "verified and within `--max-drop` (with a budget only)"]
    ]


class Sweep(TypedDict):
    """sweep.json."""

    pipeline: Annotated[str, "pipeline name"]
    pipeline_file: Annotated[str, "the pipeline file"]
    axes: Annotated[dict[str, list[Any]], "dotted key -> the values swept"]
    reference: Annotated[SweepReference | None, "the bar of every drop"]
    variants: Annotated[list[SweepVariant], "one per combination"]
    stages_total: Annotated[int, "stages of all variants"]
    stages_reused: Annotated[int, "those taken from the stage cache"]
    train_runs: Annotated[int, "variants whose training ran"]
    points: Annotated[list[SweepPoint], "every distinct artifact"]
    frontier: Annotated[list[str], "labels of the Pareto frontier, smallest first"]
    budget: Annotated[Budget | None, "with `--max-drop`"]
    failed: Annotated[list[str], "labels of artifacts whose verification failed"]


class TuneBest(TypedDict):
    """A tune point's best artifact: the smallest within the budget, else the closest to it."""

    artifact: Annotated[str, "the artifact's name"]
    val_accuracy: Annotated[float, "top-1 accuracy on the validation split"]
    test_accuracy: Annotated[float, "top-1 accuracy on the test split (reported only)"]
    drop: Annotated[float, "validation points below the reference dense model"]
    deploy_bytes: Annotated[int, "size of its deployable package"]
    sparsity: Annotated[float, "zeros among the weights"]
    flash_bytes: NotRequired[Annotated[int | None, "its .onnx file (`flash_bytes` in report.json)"]]
    ram_bytes: NotRequired[Annotated[int | None, "its estimated RAM (`ram_bytes`)"]]
    peak_activation_bytes: NotRequired[
        Annotated[int | None, "its activation peak at batch 1 (`peak_activation_bytes`)"]
    ]
    latency_vs_dense: NotRequired[Annotated[float | None, "its p50 / dense p50"]]
    misses: NotRequired[
        Annotated[list[str], "with device limits: what it misses of them (`ram 12.3 KB over`)"]
    ]


class TunePoint(TypedDict):
    value: Annotated[float, "the searched setting's value"]
    run_dir: Annotated[str, "the point's run folder"]
    dense_val_accuracy: Annotated[float, "its own dense artifact's validation accuracy"]
    reference_val_accuracy: Annotated[
        float, "the bar: the reference dense model's validation accuracy"
    ]
    pruned_sparsity: Annotated[float, "zeros among the pruned layers' weights"]
    best: Annotated[TuneBest | None, "null when no compressed artifact was verified"]
    meets: Annotated[bool, "the best artifact is within the budget"]
    train_cached: Annotated[bool, "training came from the stage cache"]


class TuneReference(TypedDict):
    run_dir: Annotated[str | None, "the run whose dense model is the bar"]
    dense_val_accuracy: Annotated[float | None, "its validation accuracy (null: no point ran)"]


class Tune(TypedDict):
    """tune.json."""

    pipeline: Annotated[str, "pipeline name"]
    pipeline_file: Annotated[str, "the pipeline file"]
    param: Annotated[str, "the dotted setting searched"]
    low: Annotated[float, "low end of the range"]
    high: Annotated[float, "high end of the range"]
    max_drop: Annotated[float, "the budget: validation points below the reference dense model"]
    points: Annotated[list[TunePoint], "every point tried, in order"]
    chosen: Annotated[float | None, "the value of the highest sparsity within the budget"]
    ties: Annotated[list[float], "values of the same sparsity within the budget"]
    notes: Annotated[list[str], "what the output says beside the choice"]
    train_runs: Annotated[int, "points whose training ran"]
    fixed: Annotated[dict[str, Any], "`--set` changes of every point"]
    reference: Annotated[TuneReference, "the bar of every drop"]
    limits: NotRequired[
        Annotated[dict, "the device limits a point's best artifact must be within too, if any"]
    ]


class SearchArtifact(TypedDict):
    """An artifact of a search trial (as the study keeps it)."""

    artifact: Annotated[str, "the artifact's name"]
    val_accuracy: Annotated[float, "top-1 accuracy on the validation split"]
    drop: Annotated[float, "validation points below the reference dense model"]
    deploy_bytes: Annotated[int, "size of its deployable package"]
    sparsity: Annotated[float, "zeros among the weights"]
    status: Annotated[str, "as in report.json"]
    flash_bytes: NotRequired[Annotated[int | None, "its .onnx file (`flash_bytes` in report.json)"]]
    ram_bytes: NotRequired[Annotated[int | None, "its estimated RAM (`ram_bytes`)"]]
    peak_activation_bytes: NotRequired[
        Annotated[int | None, "its activation peak at batch 1 (`peak_activation_bytes`)"]
    ]
    latency_vs_dense: NotRequired[
        Annotated[float | None, "its latency over its trial's dense model's (verify)"]
    ]
    misses: NotRequired[
        Annotated[list[str], "with device limits: what it misses of them (`ram 12.3 KB over`)"]
    ]


class SearchPoint(SearchArtifact):
    """An artifact of a finished trial, as a point of the frontier and the budget."""

    label: Annotated[str, "`<trial>/<artifact>`"]
    trial: Annotated[str, "the trial's name, `trial-NNNN`"]
    run_dir: Annotated[str, "the trial's run folder"]


class SearchTrial(TypedDict):
    number: Annotated[int, "the Optuna trial number"]
    name: Annotated[str, "`trial-NNNN`, its run folder's name"]
    state: Annotated[str, "`ok`, `misses budget`, `fail`, `interrupted` (or Optuna's state)"]
    overrides: Annotated[dict[str, Any], "the sampled settings: dotted key -> value"]
    run_dir: Annotated[str | None, "its run folder"]
    best: Annotated[
        SearchArtifact | None, "its smallest artifact within the budget, else the closest"
    ]
    artifacts: Annotated[list[SearchArtifact], "all its artifacts"]
    stages_reused: Annotated[list[str], "stages taken from the stage cache"]
    stages_total: Annotated[int, "its stages"]
    error: Annotated[str | None, "why it failed"]
    retry_of: Annotated[int | None, "the interrupted trial it runs again"]
    from_file: Annotated[bool, "the pipeline file's own settings"]
    seconds: Annotated[float | None, "its duration"]


class SearchReference(TypedDict):
    run_dir: Annotated[str, "`<out>/reference`: the pipeline as written"]
    dense_val_accuracy: Annotated[float, "its dense artifact's validation accuracy: the bar"]
    best: Annotated[SearchArtifact | None, "its own best artifact, for comparison"]


class Search(TypedDict):
    """search.json."""

    pipeline: Annotated[str, "pipeline name"]
    pipeline_file: Annotated[str, "the pipeline file"]
    objective: Annotated[str, "`size` or `pareto`"]
    spaces: Annotated[dict[str, str], "dotted key -> its space"]
    max_drop: Annotated[float | None, "the budget (null: none, `--objective pareto`)"]
    trials_wanted: Annotated[int, "`--trials`"]
    reference: Annotated[SearchReference, "the bar of every drop"]
    trials: Annotated[list[SearchTrial], "every trial of the study, in order"]
    counts: Annotated[dict[str, int], "trials per state"]
    stages_total: Annotated[int, "stages of the finished trials"]
    stages_reused: Annotated[int, "those taken from the stage cache"]
    train_runs: Annotated[int, "finished trials whose training ran"]
    points: Annotated[list[SearchPoint], "every verified artifact of every finished trial"]
    frontier: Annotated[list[str], "labels of the Pareto frontier, smallest first"]
    budget: Annotated[Budget | None, "with `--max-drop`"]
    chosen: Annotated[str | None, "label of the smallest artifact within the budget"]
    test_accuracy: Annotated[
        dict[str, float | None],
        "label -> test accuracy, read last for the chosen "
        "artifact (and the frontier, with `--objective pareto`): it chose nothing",
    ]


OK = "ok"
FAILED = "failed"  # status "failed: <why>": the artifact is wrong (the run exits with status 1)
WARNING = "warning"  # "warning: <what>": verified, but at chance (an error with run --strict)


def status_kind(artifact: Artifact) -> str:
    """`ok`, `failed` or `warning`: the status up to its colon (reports without one: ok)."""
    return artifact.get("status", OK).split(":", 1)[0]


def keys_of(kind: type) -> dict[str, str]:
    """Key -> meaning, in order, of a TypedDict defined here (for docs and tests)."""
    out = {}
    for key, hint in get_type_hints(kind, include_extras=True).items():
        if get_origin(hint) in (NotRequired, Required):
            hint = get_args(hint)[0]
        out[key] = next((m for m in getattr(hint, "__metadata__", ()) if isinstance(m, str)), "")
    return out


class _Row(dict):
    """A part of report.json: the plain dict (JSON as written, `row["accuracy"]`) whose keys
    read as attributes too (`row.accuracy`). The keys are those of `schema`, a TypedDict
    above; a key a report leaves out (an older report, a NotRequired one) reads as None."""

    schema: ClassVar[type]

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_") or key not in _keys(self.schema):
            raise AttributeError(
                f"{type(self).__name__} has no {key!r}; keys: {', '.join(_keys(self.schema))}"
            )
        return self.get(key)


class ArtifactRow(_Row):
    """One artifact of a run (see Artifact): `row.name`, `row.deploy_bytes`, `row.accuracy`..."""

    schema = Artifact


class DatasetRow(_Row):
    schema = DatasetSummary


class TrainingRow(_Row):
    schema = TrainingSummary


class StageRow(_Row):
    schema = StageSummary


class RunReport(_Row):
    """What `run_pipeline` returns: report.json (see Report) with attribute access, and the
    run folder it was written to.

        report = run_pipeline(load_pipeline("pipelines/mnist.toml"), out_dir="runs/mnist")
        report.run_dir / "report.md"                        # the files of the run
        for a in report.artifacts:                          # ArtifactRow, one per .onnx file
            print(a.name, a.deploy_bytes, a.accuracy, a.compression)
        report.artifact("pruned-int8-static").accuracy_delta
        report.training.dense_test_accuracy, report.total_seconds
        report["artifacts"][0]["accuracy"]                  # still the plain dict
    """

    schema = Report
    run_dir: Path

    def __init__(self, report: Report, run_dir: str | Path):
        super().__init__(report)
        self["artifacts"] = [ArtifactRow(a) for a in report["artifacts"]]
        self["dataset"] = DatasetRow(report["dataset"])
        self["training"] = TrainingRow(report["training"])
        self["stages"] = [StageRow(st) for st in report["stages"]]
        self.run_dir = Path(run_dir)

    def __reduce__(self):  # across processes (sweeps, Ray) as it was made
        return (RunReport, (dict(self), self.run_dir))

    def artifact(self, name: str) -> ArtifactRow:
        """The artifact named `name` (`dense`, `pruned`, `pruned-int8-dynamic`, ...)."""
        found = find_artifact(self["artifacts"], name)
        if found is None:
            raise KeyError(
                f"no artifact {name!r}; artifacts: "
                f"{', '.join(a['name'] for a in self['artifacts'])}"
            )
        return found


@cache
def _keys(kind: type) -> tuple[str, ...]:
    return tuple(get_type_hints(kind))


def required_keys(kind: type) -> frozenset[str]:
    return kind.__required_keys__


def baseline_of(artifacts: list[Artifact], name: str = DENSE) -> Artifact:
    """The artifact named `name` (the first artifact if there is none by that name)."""
    return next((a for a in artifacts if a["name"] == name), artifacts[0])


def find_artifact(artifacts: list[Artifact], name: str) -> Artifact | None:
    return next((a for a in artifacts if a["name"] == name), None)


TEST = "accuracy"  # accuracy on the test split: reported
VAL = "val_accuracy"  # accuracy on the validation split: what choices are made on


def accuracy_points(base_accuracy: float, accuracy: float) -> float:
    """The accuracy change from `base_accuracy` to `accuracy`, in percentage points: + is better."""
    return 100 * (accuracy - base_accuracy)


def change_pts(base: Artifact, artifact: Artifact, key: str = TEST) -> float:
    """Accuracy change in points from `base` to `artifact` (test split unless `key` says)."""
    return accuracy_points(base[key], artifact[key])


def delta_pts(base: Artifact, artifact: Artifact) -> float:
    """`accuracy_delta`: the change in points, to 2 decimals."""
    return round(change_pts(base, artifact), 2)


def drop_pts(base: Artifact, artifact: Artifact, key: str = TEST) -> float:
    """Accuracy points `artifact` loses against `base` (negative: it gains), to 4 decimals."""
    return round(-change_pts(base, artifact, key), 4)


def deploy_bytes(artifact: Artifact) -> int:
    """The deployable package's size (reports older than deploy_bytes: the smaller package)."""
    return artifact.get("deploy_bytes") or min(artifact["gzip_bytes"], artifact["xz_bytes"])


def compression_ratio(base: Artifact, artifact: Artifact) -> float:
    """`compression`: the baseline's .onnx bytes over the artifact's deployable package."""
    return round(base["bytes"] / deploy_bytes(artifact), 2)


def markdown_table(kind: type, header: str = "key") -> str:
    """The docs' table of a TypedDict's keys (tests check that docs/reference.md holds it)."""
    rows = [[f"`{key}`", meaning] for key, meaning in keys_of(kind).items()]
    return "\n".join(tables.markdown([header, "meaning"], rows)) + "\n"
